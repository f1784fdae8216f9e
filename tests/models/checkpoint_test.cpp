// Checkpoints: round trip of weights, optimizer state and training state; nanoGPT's
// tensor names and shapes; atomic saves (a stale .tmp from a crash, a failing save);
// resumed training reproducing an uninterrupted run's losses bitwise; config JSON; errors.
#include "models/checkpoint.h"

#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>

#include "models/data.h"
#include "ops/elementwise.h"
#include "test_util.h"

namespace mf = microflex;
namespace fs = std::filesystem;

namespace {

mf::GPTConfig small_config(int64_t layers = 2) {
  mf::GPTConfig c;
  c.vocab_size = 256;
  c.block_size = 8;
  c.n_layer = layers;
  c.n_head = 2;
  c.n_embd = 8;
  c.attention.block_size = 4;
  return c;
}

std::string temp_path(const std::string& name) {
  const fs::path dir = fs::temp_directory_path() / "microflex_checkpoint_test";
  fs::create_directories(dir);
  return (dir / name).string();
}

// Bytes equal, shapes and dtypes equal.
void expect_bitwise(const mf::Tensor& a, const mf::Tensor& b, const std::string& what) {
  ASSERT_EQ(a.sizes(), b.sizes()) << what;
  ASSERT_EQ(a.dtype(), b.dtype()) << what;
  const mf::Tensor ca = a.contiguous(), cb = b.contiguous();
  EXPECT_EQ(std::memcmp(ca.raw_data(), cb.raw_data(), ca.numel() * ca.element_size()), 0) << what;
}

void expect_same_tensors(const mf::NamedTensors& a, const mf::NamedTensors& b) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].first, b[i].first);
    expect_bitwise(a[i].second, b[i].second, a[i].first);
  }
}

// One training step as microflex-train does it: schedule, batch from the state's
// sampler, loss, backward, clipping, AdamW. Returns the loss.
float train_step(mf::GPT& model, mf::AdamW& opt, mf::TrainState& state,
                 const mf::TokenStream& data) {
  const mf::CosineSchedule sched{1e-2, 1e-3, 2, 6};
  opt.set_lr(sched(state.step));
  const mf::Batch b = mf::sample_batch(data, 3, model.cfg.block_size, state.rng);
  const mf::Tensor loss = model.forward(b.x, b.y).loss;
  loss.backward();
  mf::clip_grad_norm_(model.parameters(), 1.0);
  opt.step();
  opt.zero_grad();
  ++state.step;
  return loss.item<float>();
}

mf::AdamWOptions adamw() {
  mf::AdamWOptions o;
  o.lr = 1e-2;
  o.weight_decay = 0.1;
  return o;
}

}  // namespace

TEST(Checkpoint, RoundTripRestoresEverything) {
  const mf::TokenStream data = mf::TokenStream::from_documents(mf::tiny_corpus());
  mf::manual_seed(3);
  mf::GPT model(small_config());
  mf::AdamW opt(model.named_parameters(), adamw());
  mf::TrainState state;
  state.rng.seed(11);
  train_step(model, opt, state, data);
  train_step(model, opt, state, data);
  state.philox = mf::default_generator_state();
  state.extra["note"] = "two steps";
  const std::string path = temp_path("roundtrip.safetensors");
  mf::save_checkpoint(path, model, opt, state);

  mf::manual_seed(99);
  mf::GPT other(small_config());
  mf::AdamW other_opt(other.named_parameters(), adamw());
  mf::TrainState loaded;
  mf::load_checkpoint(path, other, other_opt, &loaded);
  expect_same_tensors(other.state_dict(), model.state_dict());
  expect_same_tensors(other_opt.state_dict(), opt.state_dict());
  EXPECT_EQ(other_opt.step_count(), 2);
  EXPECT_EQ(loaded.step, 2);
  EXPECT_TRUE(loaded.rng == state.rng);
  EXPECT_EQ(loaded.philox.seed, state.philox.seed);
  EXPECT_EQ(loaded.philox.offset, state.philox.offset);
  EXPECT_EQ(mf::default_generator_state().offset, state.philox.offset);
  EXPECT_EQ(loaded.extra.at("note"), "two steps");

  // A weights-only model from the same file gives the same logits.
  auto fresh = mf::load_gpt(path);
  EXPECT_FALSE(fresh->is_training());
  const mf::Tensor idx = mf::from_vector(std::vector<int64_t>{72, 101, 108, 108, 111}, {1, 5});
  expect_bitwise(fresh->forward(idx).logits, model.forward(idx).logits, "logits");
  EXPECT_EQ(mf::gpt_config_to_json(mf::read_checkpoint_config(path)),
            mf::gpt_config_to_json(model.cfg));
}

TEST(Checkpoint, NamesAndShapesMatchNanoGPT) {
  mf::manual_seed(4);
  mf::GPT model(small_config());
  mf::AdamW opt(model.named_parameters(), adamw());
  const std::string path = temp_path("names.safetensors");
  mf::save_checkpoint(path, model, opt, mf::TrainState{});
  std::map<std::string, std::string> meta;
  const mf::NamedTensors t = mf::load_safetensors(path, &meta);

  // nanoGPT's GPT(GPTConfig(n_layer=2, n_embd=8, bias=True)).state_dict() keys and shapes
  // (with flash attention, so no attn.bias mask buffer).
  const int64_t C = 8, V = 256, ctx = 8;
  std::map<std::string, mf::Shape> expected = {{"transformer.wte.weight", {V, C}},
                                               {"transformer.wpe.weight", {ctx, C}},
                                               {"transformer.ln_f.weight", {C}},
                                               {"transformer.ln_f.bias", {C}},
                                               {"lm_head.weight", {V, C}}};
  for (int i = 0; i < 2; ++i) {
    const std::string h = "transformer.h." + std::to_string(i) + ".";
    expected[h + "ln_1.weight"] = {C};
    expected[h + "ln_1.bias"] = {C};
    expected[h + "attn.c_attn.weight"] = {3 * C, C};  // nn.Linear: [out, in]
    expected[h + "attn.c_attn.bias"] = {3 * C};
    expected[h + "attn.c_proj.weight"] = {C, C};
    expected[h + "attn.c_proj.bias"] = {C};
    expected[h + "ln_2.weight"] = {C};
    expected[h + "ln_2.bias"] = {C};
    expected[h + "mlp.c_fc.weight"] = {4 * C, C};
    expected[h + "mlp.c_fc.bias"] = {4 * C};
    expected[h + "mlp.c_proj.weight"] = {C, 4 * C};
    expected[h + "mlp.c_proj.bias"] = {C};
  }
  std::map<std::string, mf::Tensor> got;
  for (const auto& [n, x] : t)
    if (n.rfind("optimizer.", 0) != 0) got[n] = x;
  ASSERT_EQ(got.size(), expected.size());
  for (const auto& [n, shape] : expected) {
    ASSERT_TRUE(got.count(n)) << "missing " << n;
    EXPECT_EQ(got[n].sizes(), shape) << n;
    EXPECT_EQ(got[n].dtype(), mf::DType::Float32) << n;
  }
  // Stored as microflex holds them (Linear weights are [out, in] in both), head = wte.
  expect_bitwise(got["transformer.h.1.attn.c_attn.weight"],
                 model.blocks[1]->attn->c_attn->weight.detach(), "c_attn");
  expect_bitwise(got["lm_head.weight"], model.wte->weight.detach(), "lm_head");
  EXPECT_EQ(meta.at("format"), "microflex-gpt");
  EXPECT_EQ(meta.at("optimizer"), "adamw");
  EXPECT_EQ(meta.at("step"), "0");
  EXPECT_NE(meta.at("config").find("\"n_layer\": 2"), std::string::npos);
}

TEST(Checkpoint, StaleTmpFromACrashAndFailedSavesLeaveTheFileIntact) {
  mf::manual_seed(5);
  mf::GPT model(small_config(1));
  mf::AdamW opt(model.named_parameters(), adamw());
  mf::TrainState state;
  state.step = 7;
  const std::string path = temp_path("atomic.safetensors");
  fs::remove_all(path + ".tmp");
  mf::save_checkpoint(path, model, opt, state);
  // A save that crashed half-way left a truncated temporary file beside the checkpoint.
  { std::ofstream(path + ".tmp", std::ios::binary) << "\x10\x00\x00\x00 partial"; }
  mf::GPT a(small_config(1));
  mf::AdamW a_opt(a.named_parameters(), adamw());
  mf::TrainState s;
  mf::load_checkpoint(path, a, a_opt, &s);
  EXPECT_EQ(s.step, 7);
  expect_same_tensors(a.state_dict(), model.state_dict());
  // The next save replaces both.
  state.step = 8;
  mf::save_checkpoint(path, model, opt, state);
  EXPECT_FALSE(fs::exists(path + ".tmp"));
  mf::load_checkpoint(path, a, a_opt, &s);
  EXPECT_EQ(s.step, 8);
  // A save that cannot write its temporary file fails and leaves the old checkpoint.
  fs::create_directories(path + ".tmp");
  state.step = 9;
  mftest::expect_error([&] { mf::save_checkpoint(path, model, opt, state); },
                       {"atomic.safetensors.tmp"});
  fs::remove_all(path + ".tmp");
  mf::load_checkpoint(path, a, a_opt, &s);
  EXPECT_EQ(s.step, 8);
}

TEST(Checkpoint, ResumeReproducesUninterruptedLossesBitwise) {
  const mf::TokenStream data = mf::TokenStream::from_documents(mf::tiny_corpus());
  mf::GPTConfig cfg = small_config();
  cfg.dropout = 0.1;  // draws from the Philox generator, which the checkpoint must restore
  auto fresh = [&](uint64_t seed, std::unique_ptr<mf::GPT>* m, std::unique_ptr<mf::AdamW>* o,
                   mf::TrainState* s) {
    mf::manual_seed(seed);
    *m = std::make_unique<mf::GPT>(cfg);
    *o = std::make_unique<mf::AdamW>((*m)->named_parameters(), adamw());
    *s = mf::TrainState{};
    s->rng.seed(seed);
  };
  std::unique_ptr<mf::GPT> m;
  std::unique_ptr<mf::AdamW> o;
  mf::TrainState s;
  fresh(21, &m, &o, &s);
  std::vector<float> straight;
  for (int i = 0; i < 6; ++i) straight.push_back(train_step(*m, *o, s, data));
  const mf::NamedTensors straight_weights = m->state_dict();

  fresh(21, &m, &o, &s);
  std::vector<float> resumed;
  for (int i = 0; i < 3; ++i) resumed.push_back(train_step(*m, *o, s, data));
  s.philox = mf::default_generator_state();
  const std::string path = temp_path("resume.safetensors");
  mf::save_checkpoint(path, *m, *o, s);
  // Fresh objects from another seed: everything must come from the file.
  fresh(1234, &m, &o, &s);
  mf::load_checkpoint(path, *m, *o, &s);
  for (int i = 0; i < 3; ++i) resumed.push_back(train_step(*m, *o, s, data));

  ASSERT_EQ(resumed.size(), straight.size());
  for (size_t i = 0; i < straight.size(); ++i)
    EXPECT_EQ(std::memcmp(&resumed[i], &straight[i], sizeof(float)), 0)
        << "step " << i + 1 << ": " << resumed[i] << " vs " << straight[i];
  EXPECT_LT(straight.back(), straight.front());
  expect_same_tensors(m->state_dict(), straight_weights);
}

TEST(Checkpoint, ConfigJsonRoundTrip) {
  mf::GPTConfig c = small_config(3);
  c.dropout = 0.125;
  c.bias = false;
  c.rotary = true;
  c.rope_base = 500.5;
  c.attention.window = 5;
  c.attention.prefix = 2;
  c.attention.document = true;
  c.attention.alibi = true;
  c.attention.softcap = 30.25;
  const std::string j = mf::gpt_config_to_json(c);
  const mf::GPTConfig back = mf::gpt_config_from_json(j);
  EXPECT_EQ(mf::gpt_config_to_json(back), j);
  EXPECT_EQ(back.n_layer, 3);
  EXPECT_EQ(back.attention.softcap, 30.25);
  EXPECT_FALSE(back.bias);
  // Missing fields keep defaults; wrong types are named.
  EXPECT_EQ(mf::gpt_config_from_json("{\"n_layer\": 5}").n_head, mf::GPTConfig{}.n_head);
  mftest::expect_error([] { mf::gpt_config_from_json("{\"n_layer\": 2.5}", "cfg"); },
                       {"cfg", "'n_layer' must be an integer"});
  mftest::expect_error([] { mf::gpt_config_from_json("{\"bias\": 1}", "cfg"); },
                       {"'bias' must be true or false"});
  mftest::expect_error([] { mf::gpt_config_from_json("[1]", "cfg"); }, {"JSON object"});
}

TEST(Checkpoint, Errors) {
  mf::manual_seed(6);
  mf::GPT model(small_config(2));
  mf::AdamW opt(model.named_parameters(), adamw());
  const std::string path = temp_path("errors.safetensors");
  mf::save_checkpoint(path, model, opt, mf::TrainState{});

  mf::GPT other(small_config(1));
  mf::AdamW other_opt(other.named_parameters(), adamw());
  mftest::expect_error([&] { mf::load_checkpoint(path, other, other_opt, nullptr); },
                       {"errors.safetensors", "differs from the model's", "\"n_layer\": 1"});

  mf::SGD sgd(model.named_parameters(), {});
  mftest::expect_error([&] { mf::load_checkpoint(path, model, sgd, nullptr); },
                       {"'adamw' optimizer state", "'sgd'"});

  const std::string plain = temp_path("plain.safetensors");
  mf::save_safetensors(plain, {{"w", mf::zeros({2})}});
  mftest::expect_error([&] { mf::load_gpt(plain); },
                       {"plain.safetensors", "not a microflex GPT checkpoint"});

  mf::TrainState bad;
  bad.extra["step"] = "1";
  mftest::expect_error([&] { mf::save_checkpoint(path, model, opt, bad); }, {"'step' is reserved"});

  // Weights-only files load as models but not as training checkpoints.
  const std::string weights = temp_path("weights.safetensors");
  mf::save_weights(weights, model);
  EXPECT_EQ(mf::load_gpt(weights)->cfg.n_layer, 2);
  mftest::expect_error([&] { mf::load_checkpoint(weights, model, opt, nullptr); },
                       {"weights.safetensors", "no 'optimizer'"});
  mftest::expect_error([&] { mf::load_gpt(temp_path("missing.safetensors")); },
                       {"missing.safetensors"});
}
