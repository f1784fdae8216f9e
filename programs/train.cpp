// microflex-train: trains a byte-level GPT on the Brown corpus (or a tiny built-in text)
// with AdamW and nanoGPT's warm-up + cosine schedule. Writes out_dir/loss.csv,
// out_dir/loss.svg and out_dir/ckpt.safetensors (at the end, on Ctrl-C, every ckpt_every
// steps); --resume continues from that checkpoint exactly as an uninterrupted run would.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

#include "autograd/grad_mode.h"
#include "core/cuda_backend.h"
#include "core/error.h"
#include "models/checkpoint.h"
#include "models/data.h"
#include "models/gpt.h"
#include "models/inspect.h"
#include "models/mixed_precision.h"
#include "models/optim.h"
#include "ops/elementwise.h"
#include "programs/train_flags.h"

namespace mf = microflex;
namespace fs = std::filesystem;
namespace flags = microflex::flags;
using flags::UsageError;

namespace {

using Options = mf::TrainOptions;

const char* kUsage = R"(usage: microflex-train [--config FILE] [--key=value ...]

Trains a byte-level GPT. Options (config files hold the same keys as "key = value" lines;
command-line values override the file):
  data=brown|tiny        corpus (brown reads data_dir; tiny is a built-in smoke-test text)
  data_dir=DIR           Brown corpus directory (default data/brown, from tools/setup.sh)
  n_layer, n_head, n_embd, block_size, dropout, bias=true|false, rotary=true|false
  attention=PATTERN      causal | sliding:W | alibi | softcap:C | document | prefix:P,
                         terms joined with '+' (e.g. sliding:64+alibi); always causal
  batch_size, accum_steps, steps
  lr, min_lr, warmup     warm-up then cosine decay to min_lr at the last step
  weight_decay, grad_clip (0: off), beta1, beta2
  eval_every, eval_batches   validation loss every eval_every steps (0: only at the end)
  ckpt_every             also save a checkpoint every N steps (0: only at the end)
  device=cpu|cuda, seed, out_dir
  dtype=fp32|bf16        bf16: bf16 forward/backward, float32 master weights and AdamW
  resume                 continue from out_dir/ckpt.safetensors
  save_init_only         write out_dir/init.safetensors (initial weights) and exit
  dump_batches=N         write the first N steps' batches to out_dir/batches.safetensors
  dump_reference=DIR     out_dir=DIR with init weights, every step's batches and loss.csv,
                         for tools/torch_gpt_reference.py
Ctrl-C saves a checkpoint and exits with code 130. Bad options exit with code 2.
)";

// Every option as "key = value" lines, stored in checkpoints.
std::string describe(const Options& o) {
  std::ostringstream os;
  os << "data = " << o.data << "\ndata_dir = " << o.data_dir << "\nn_layer = " << o.n_layer
     << "\nn_head = " << o.n_head << "\nn_embd = " << o.n_embd << "\nblock_size = " << o.block_size
     << "\ndropout = " << o.dropout << "\nbias = " << o.bias << "\nrotary = " << o.rotary
     << "\nattention = " << o.attention << "\nbatch_size = " << o.batch_size
     << "\naccum_steps = " << o.accum_steps << "\nsteps = " << o.steps << "\nlr = " << o.lr
     << "\nmin_lr = " << o.min_lr << "\nwarmup = " << o.warmup
     << "\nweight_decay = " << o.weight_decay << "\ngrad_clip = " << o.grad_clip
     << "\nbeta1 = " << o.beta1 << "\nbeta2 = " << o.beta2 << "\nseed = " << o.seed
     << "\ndtype = " << o.dtype << "\n";
  return os.str();
}

// ---- loss log: CSV rows and the SVG plot ----

struct Row {
  int64_t step;
  double train, val;  // val NaN when not evaluated at this step
  double lr, tokens_per_s;
};

std::string fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), f, v);
  return buf;
}

std::string csv_line(const Row& r) {
  return std::to_string(r.step) + "," + fmt("%.9g", r.train) + "," +
         (std::isnan(r.val) ? std::string() : fmt("%.9g", r.val)) + "," + fmt("%.9g", r.lr) + "," +
         fmt("%.1f", r.tokens_per_s) + "\n";
}

const char* kCsvHeader = "step,train_loss,val_loss,lr,tokens_per_s\n";

// Rows of an existing loss.csv up to `max_step` (a resumed run rewrites the rest).
std::vector<Row> read_csv(const std::string& path, int64_t max_step) {
  std::vector<Row> rows;
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);  // header
  while (std::getline(in, line)) {
    std::vector<std::string> f;
    std::stringstream ss(line);
    std::string cell;
    while (std::getline(ss, cell, ',')) f.push_back(cell);
    if (f.size() < 4) continue;
    while (f.size() < 5) f.push_back("0");
    Row r{std::stoll(f[0]), std::stod(f[1]), f[2].empty() ? NAN : std::stod(f[2]), std::stod(f[3]),
          f[4].empty() ? 0.0 : std::stod(f[4])};
    if (r.step <= max_step) rows.push_back(r);
  }
  return rows;
}

// A round step for axis ticks: 1, 2 or 5 times a power of ten, about range / target.
double nice_step(double range, int target) {
  const double raw = range / target;
  const double p = std::pow(10.0, std::floor(std::log10(raw)));
  const double m = raw / p;
  return (m < 1.5 ? 1.0 : m < 3.5 ? 2.0 : m < 7.5 ? 5.0 : 10.0) * p;
}

std::string tick_label(double v, double step) {
  const int decimals = step >= 1.0 ? 0 : static_cast<int>(std::ceil(-std::log10(step) - 1e-9));
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.*f", decimals, v);
  return buf;
}

// Train and validation loss against step: a line plot with ticked axes and a legend.
void write_svg(const std::string& path, const std::vector<Row>& rows) {
  const double W = 800, H = 480, L = 70, R = 20, T = 40, B = 55;
  std::vector<const Row*> val;
  double lo = INFINITY, hi = -INFINITY;
  int64_t max_step = 1;
  for (const Row& r : rows) {
    lo = std::min(lo, r.train);
    hi = std::max(hi, r.train);
    if (!std::isnan(r.val)) {
      val.push_back(&r);
      lo = std::min(lo, r.val);
      hi = std::max(hi, r.val);
    }
    max_step = std::max(max_step, r.step);
  }
  if (!(lo < hi)) {
    lo = std::isfinite(lo) ? lo - 1.0 : 0.0;
    hi = lo + 2.0;
  }
  const double ys = nice_step(hi - lo, 6), xs = nice_step(static_cast<double>(max_step), 8);
  lo = std::floor(lo / ys) * ys;
  hi = std::ceil(hi / ys) * ys;
  const double x_hi = std::ceil(static_cast<double>(max_step) / xs) * xs;
  auto X = [&](double s) { return L + (W - L - R) * s / x_hi; };
  auto Y = [&](double v) { return T + (H - T - B) * (hi - v) / (hi - lo); };
  std::ostringstream os;
  os << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << W << "\" height=\"" << H
     << "\" font-family=\"sans-serif\" font-size=\"12\">\n"
     << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
     << "<text x=\"" << W / 2 << "\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">"
     << "microflex-train: loss (nats per byte)</text>\n";
  for (double v = lo; v <= hi + ys * 1e-6; v += ys) {
    os << "<line x1=\"" << L - 5 << "\" y1=\"" << Y(v) << "\" x2=\"" << W - R << "\" y2=\"" << Y(v)
       << "\" stroke=\"#ddd\"/>\n<text x=\"" << L - 8 << "\" y=\"" << Y(v) + 4
       << "\" text-anchor=\"end\">" << tick_label(v, ys) << "</text>\n";
  }
  for (double s = 0; s <= x_hi + xs * 1e-6; s += xs) {
    os << "<line x1=\"" << X(s) << "\" y1=\"" << H - B << "\" x2=\"" << X(s) << "\" y2=\""
       << H - B + 5 << "\" stroke=\"black\"/>\n<text x=\"" << X(s) << "\" y=\"" << H - B + 19
       << "\" text-anchor=\"middle\">" << tick_label(s, xs) << "</text>\n";
  }
  os << "<polyline fill=\"none\" stroke=\"black\" points=\"" << L << "," << T << " " << L << ","
     << H - B << " " << W - R << "," << H - B << "\"/>\n"
     << "<text x=\"" << (L + W - R) / 2 << "\" y=\"" << H - 12
     << "\" text-anchor=\"middle\">step</text>\n"
     << "<text transform=\"translate(18," << (T + H - B) / 2
     << ") rotate(-90)\" text-anchor=\"middle\">loss</text>\n";
  auto line = [&](const std::vector<std::pair<double, double>>& pts, const char* color, bool dots) {
    if (pts.empty()) return;
    os << "<polyline fill=\"none\" stroke=\"" << color << "\" stroke-width=\"1.5\" points=\"";
    for (const auto& [s, v] : pts) os << fmt("%.1f", X(s)) << "," << fmt("%.1f", Y(v)) << " ";
    os << "\"/>\n";
    if (dots)
      for (const auto& [s, v] : pts)
        os << "<circle cx=\"" << fmt("%.1f", X(s)) << "\" cy=\"" << fmt("%.1f", Y(v))
           << "\" r=\"3\" fill=\"" << color << "\"/>\n";
  };
  std::vector<std::pair<double, double>> tr, va;
  for (const Row& r : rows) tr.emplace_back(static_cast<double>(r.step), r.train);
  for (const Row* r : val) va.emplace_back(static_cast<double>(r->step), r->val);
  line(tr, "#1f77b4", false);
  line(va, "#ff7f0e", true);
  const double lx = W - R - 150, ly = T + 10;
  os << "<rect x=\"" << lx << "\" y=\"" << ly << "\" width=\"140\" height=\"44\" fill=\"white\" "
     << "stroke=\"#999\"/>\n"
     << "<line x1=\"" << lx + 10 << "\" y1=\"" << ly + 15 << "\" x2=\"" << lx + 35 << "\" y2=\""
     << ly + 15 << "\" stroke=\"#1f77b4\" stroke-width=\"2\"/><text x=\"" << lx + 42 << "\" y=\""
     << ly + 19 << "\">train</text>\n"
     << "<line x1=\"" << lx + 10 << "\" y1=\"" << ly + 33 << "\" x2=\"" << lx + 35 << "\" y2=\""
     << ly + 33 << "\" stroke=\"#ff7f0e\" stroke-width=\"2\"/><text x=\"" << lx + 42 << "\" y=\""
     << ly + 37 << "\">validation</text>\n</svg>\n";
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp);
    out << os.str();
    if (!out.good()) throw mf::Error("cannot write " + tmp);
  }
  fs::rename(tmp, path);
}

// ---- progress ----

std::string duration(double s) {
  if (!std::isfinite(s) || s < 0) return "?";
  const int64_t t = static_cast<int64_t>(s + 0.5);
  char buf[32];
  if (t >= 3600)
    std::snprintf(buf, sizeof(buf), "%ldh%02ldm", static_cast<long>(t / 3600),
                  static_cast<long>(t / 60 % 60));
  else
    std::snprintf(buf, sizeof(buf), "%ldm%02lds", static_cast<long>(t / 60),
                  static_cast<long>(t % 60));
  return buf;
}

std::string rate(double tps) {
  return tps >= 1e6   ? fmt("%.2fM", tps / 1e6)
         : tps >= 1e3 ? fmt("%.1fk", tps / 1e3)
                      : fmt("%.0f", tps);
}

volatile std::sig_atomic_t g_interrupted = 0;

extern "C" void on_sigint(int) {
  g_interrupted = 1;
  // A second Ctrl-C ends the process at once.
  std::signal(SIGINT, SIG_DFL);
}

// The fake-mode estimate of one training step (models/inspect.h): printed at start, and a
// warning when its peak exceeds the device's free memory.
mf::ModelEstimate estimate_step(const mf::GPTConfig& cfg, const Options& o, mf::Device device) {
  return mf::estimate_training_step(
      cfg, o.batch_size, device, o.dtype == "bf16" ? mf::DTypePolicy::BF16 : mf::DTypePolicy::FP32);
}

struct Data {
  mf::TokenStream train, val;
};

Data load_data(const Options& o) {
  std::vector<std::string> docs, train, val;
  if (o.data == "tiny") {
    // Too small to split: validation reads the same text.
    docs = mf::tiny_corpus();
    train = docs;
    val = docs;
  } else {
    docs = mf::load_brown_corpus(o.data_dir);
    mf::split_train_val(docs, &train, &val);
  }
  Data d{mf::TokenStream::from_documents(train), mf::TokenStream::from_documents(val)};
  if (d.train.size() <= o.block_size || d.val.size() <= o.block_size)
    throw UsageError("--block_size " + std::to_string(o.block_size) + " is too long for the " +
                     o.data + " corpus (" + std::to_string(d.train.size()) + " training and " +
                     std::to_string(d.val.size()) + " validation tokens)");
  return d;
}

// Entropy of the byte frequencies in nats: the loss of the best model that ignores context,
// a baseline the trained model should beat.
double unigram_entropy(const mf::TokenStream& s) {
  std::vector<double> count(mf::ByteTokenizer::kVocabSize, 0.0);
  for (int64_t t : s.tokens) count[static_cast<size_t>(t)] += 1.0;
  double h = 0.0;
  for (double c : count)
    if (c > 0) h -= c / static_cast<double>(s.size()) * std::log(c / static_cast<double>(s.size()));
  return h;
}

mf::GPTOutput run_model(mf::GPT& model, const mf::Batch& b) {
  if (model.cfg.attention.document) return model.forward_packed(b.x, b.doc_ids, b.y);
  return model.forward(b.x, b.y);
}

// Mean loss over the first eval_batches consecutive validation windows (fewer rows per
// batch when the text is short).
double evaluate(mf::GPT& model, const mf::TokenStream& val, const Options& o, mf::Device device) {
  mf::NoGradGuard no_grad;
  model.eval();
  const int64_t T = o.block_size;
  const int64_t Bv = std::max<int64_t>(1, std::min(o.batch_size, (val.size() - 1) / T));
  const int64_t n = std::min(o.eval_batches, mf::num_windows(val, Bv, T));
  double total = 0.0;
  for (int64_t i = 0; i < n; ++i)
    total += run_model(model, mf::window_batch(val, Bv, T, i, device)).loss.item<float>();
  model.train();
  return total / static_cast<double>(n);
}

int train(Options& o) {
  const mf::Device device = o.device == "cuda" ? mf::Device::cuda(0) : mf::Device::cpu();
  if (device.is_cuda() && !mf::cuda_available())
    throw UsageError(
        "--device=cuda: no CUDA device (microflex was built without CUDA or no GPU "
        "is visible)");
  const Data data = load_data(o);

  mf::GPTConfig cfg;
  cfg.vocab_size = mf::ByteTokenizer::kVocabSize;
  cfg.block_size = o.block_size;
  cfg.n_layer = o.n_layer;
  cfg.n_head = o.n_head;
  cfg.n_embd = o.n_embd;
  cfg.dropout = o.dropout;
  cfg.bias = o.bias;
  cfg.rotary = o.rotary;
  cfg.attention = mf::parse_train_attention(o.attention);
  std::string fit_warning;
  int64_t est_peak = 0;
  if (!cfg.attention.document) {
    const mf::ModelEstimate est = estimate_step(cfg, o, device);
    est_peak = est.memory.steady_peak;
    int64_t free_bytes = 0, total_bytes = 0;
    if (device.is_cuda() && mf::cuda::device_memory(device.index, &free_bytes, &total_bytes) &&
        est_peak > free_bytes)
      fit_warning = "warning: the estimated peak of a training step (" +
                    fmt("%.0f", est_peak / 1048576.0) + " MiB) exceeds the free memory of " +
                    device.str() + " (" + fmt("%.0f", free_bytes / 1048576.0) +
                    " MiB); expect an out-of-memory error\n";
  }
  mf::manual_seed(static_cast<uint64_t>(o.seed));
  mf::GPT model(cfg);
  if (!device.is_cpu()) model.to(device);
  // bf16: `model` keeps the float32 masters the optimizer updates, `compute` runs.
  std::unique_ptr<mf::GPT> compute_copy;
  std::unique_ptr<mf::MixedPrecision> mixed;
  if (o.dtype == "bf16") {
    compute_copy = std::make_unique<mf::GPT>(cfg);
    if (!device.is_cpu()) compute_copy->to(device);
    mixed = std::make_unique<mf::MixedPrecision>(model, *compute_copy);
  }
  mf::GPT& compute = compute_copy ? *compute_copy : model;
  mf::AdamWOptions ao;
  ao.lr = o.lr;
  ao.beta1 = o.beta1;
  ao.beta2 = o.beta2;
  ao.weight_decay = o.weight_decay;
  mf::AdamW opt(model.named_parameters(), ao);
  mf::TrainState state;
  state.rng.seed(static_cast<uint64_t>(o.seed));
  state.extra["train_config"] = describe(o);

  fs::create_directories(o.out_dir);
  const std::string ckpt = (fs::path(o.out_dir) / "ckpt.safetensors").string();
  const std::string csv = (fs::path(o.out_dir) / "loss.csv").string();
  const std::string svg = (fs::path(o.out_dir) / "loss.svg").string();
  if (o.save_init_only || !o.dump_reference.empty()) {
    const std::string init = (fs::path(o.out_dir) / "init.safetensors").string();
    mf::save_weights(init, model, state.extra);
    std::cerr << "wrote " << init << "\n";
    if (o.save_init_only) return 0;
  }
  if (o.resume) {
    if (!fs::exists(ckpt)) throw UsageError("--resume: no checkpoint at " + ckpt);
    mf::load_checkpoint(ckpt, model, opt, &state);
    if (mixed) mixed->master_to_compute();
    state.extra["train_config"] = describe(o);
    std::cerr << "resumed from " << ckpt << " at step " << state.step << "\n";
  }
  std::vector<Row> rows = o.resume ? read_csv(csv, state.step) : std::vector<Row>();
  {
    std::ofstream out(csv, std::ios::trunc);
    out << kCsvHeader;
    for (const Row& r : rows) out << csv_line(r);
  }
  std::ofstream csv_out(csv, std::ios::app);

  const int64_t tokens_per_step = o.batch_size * o.block_size * o.accum_steps;
  std::cerr << "microflex-train: " << o.data << " (" << data.train.size() << " train / "
            << data.val.size() << " val bytes), " << model.num_parameters() << " parameters, "
            << o.n_layer << " layers x " << o.n_head << " heads x " << o.n_embd << ", context "
            << o.block_size << ", " << tokens_per_step << " tokens/step, "
            << (est_peak ? "estimated peak " + fmt("%.0f", est_peak / 1048576.0) + " MiB, " : "")
            << o.dtype << " on " << device.str() << "; unigram entropy "
            << fmt("%.3f", unigram_entropy(data.train)) << " nats/byte\n"
            << fit_warning;

  const mf::CosineSchedule sched{o.lr, o.min_lr, o.warmup, o.steps};
  std::vector<mf::Batch> dumped;
  const bool tty = isatty(STDERR_FILENO) != 0;
  const int64_t print_every = std::max<int64_t>(1, o.steps / 50);
  std::signal(SIGINT, on_sigint);
  compute.train();
  const auto run_start = std::chrono::steady_clock::now();
  const int64_t first_step = state.step;
  double last_val = NAN;
  while (state.step < o.steps && !g_interrupted) {
    const auto t0 = std::chrono::steady_clock::now();
    const double lr = sched(state.step);
    opt.set_lr(lr);
    double loss = 0.0;
    for (int64_t micro = 0; micro < o.accum_steps; ++micro) {
      mf::Batch b = mf::sample_batch(data.train, o.batch_size, o.block_size, state.rng, device);
      if (state.step < o.dump_batches) dumped.push_back(b);
      const mf::Tensor l = run_model(compute, b).loss;
      (o.accum_steps > 1 ? l / static_cast<double>(o.accum_steps) : l).backward();
      loss += static_cast<double>(l.item<float>());
    }
    loss /= static_cast<double>(o.accum_steps);
    if (mixed) mixed->grads_to_master();
    if (o.grad_clip > 0.0) mf::clip_grad_norm_(model.parameters(), o.grad_clip);
    opt.step();
    opt.zero_grad();
    if (mixed) mixed->master_to_compute();
    ++state.step;
    const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const bool eval_now =
        (o.eval_every > 0 && state.step % o.eval_every == 0) || state.step == o.steps;
    const double val = eval_now ? evaluate(compute, data.val, o, device) : NAN;
    if (eval_now) last_val = val;
    rows.push_back({state.step, loss, val, lr, static_cast<double>(tokens_per_step) / dt});
    csv_out << csv_line(rows.back());
    csv_out.flush();

    const double elapsed =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - run_start).count();
    const int64_t done = state.step - first_step;
    const double per_step = elapsed / static_cast<double>(done);
    const double tps = static_cast<double>(tokens_per_step) / per_step;
    const int width = 24;
    const int filled = static_cast<int>(width * state.step / o.steps);
    std::string bar = std::string(filled, '#') + std::string(width - filled, '-');
    std::string line = "step " + std::to_string(state.step) + "/" + std::to_string(o.steps) + " [" +
                       bar + "] loss " + fmt("%.4f", loss) +
                       (std::isnan(last_val) ? "" : " | val " + fmt("%.4f", last_val)) + " | " +
                       rate(tps) + " tok/s | " + duration(elapsed) + " < " +
                       duration(per_step * static_cast<double>(o.steps - state.step));
    if (tty) {
      std::cerr << "\r" << line << "\x1b[K" << (eval_now ? "\n" : "") << std::flush;
    } else if (eval_now || state.step % print_every == 0) {
      std::cerr << line << "\n";
    }
    if (eval_now) write_svg(svg, rows);
    if (o.ckpt_every > 0 && state.step % o.ckpt_every == 0 && state.step < o.steps) {
      state.philox = mf::default_generator_state();
      mf::save_checkpoint(ckpt, model, opt, state);
    }
  }
  if (tty) std::cerr << "\n";
  state.philox = mf::default_generator_state();
  mf::save_checkpoint(ckpt, model, opt, state);
  write_svg(svg, rows);
  if (!dumped.empty()) {
    mf::NamedTensors t;
    char name[32];
    for (size_t i = 0; i < dumped.size(); ++i) {
      std::snprintf(name, sizeof(name), "x.%06zu", i);
      t.emplace_back(name, dumped[i].x);
      std::snprintf(name, sizeof(name), "y.%06zu", i);
      t.emplace_back(name, dumped[i].y);
    }
    const std::string path = (fs::path(o.out_dir) / "batches.safetensors").string();
    mf::save_safetensors(path, t, {{"accum_steps", std::to_string(o.accum_steps)}});
    std::cerr << "wrote " << dumped.size() << " batches to " << path << "\n";
  }
  std::cerr << (g_interrupted ? "interrupted: " : "") << "saved " << ckpt << " at step "
            << state.step << (std::isnan(last_val) ? "" : ", val loss " + fmt("%.4f", last_val))
            << "\n";
  return g_interrupted ? 130 : 0;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  try {
    if (!mf::parse_train_command_line(argc, argv, &o)) {
      std::cout << kUsage;
      return 0;
    }
    return train(o);
  } catch (const UsageError& e) {
    std::cerr << "microflex-train: " << e.what() << "\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "\nmicroflex-train: error: " << e.what() << "\n";
    return 1;
  }
}
