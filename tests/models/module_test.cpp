// Module: nested names, tied parameters counted once, train/eval, to(DType) in place,
// zero_grad, state_dict round trip and load_state_dict errors, and the GPT-2 small
// parameter count in fake mode.
#include "models/module.h"

#include "core/fake.h"
#include "models/gpt.h"
#include "models/model_reference.h"
#include "test_util.h"

namespace mf = microflex;
using mftest::values;

namespace {

// A small nested module: two Linears, a buffer, and a child list.
class Net : public mf::Module {
 public:
  Net() {
    fc1 = register_module("fc1", std::make_shared<mf::Linear>(3, 4));
    fc2 = register_module("fc2", std::make_shared<mf::Linear>(4, 2, false));
    scale = register_parameter("scale", mf::ones({2}));
    steps = register_buffer("steps", mf::zeros({1}, {.dtype = mf::DType::Int64}));
    table = register_buffer("table", mf::ones({2}), false);
    layers = register_module("layers", std::make_shared<mf::ModuleList>());
    layers->push_back(std::make_shared<mf::LayerNorm>(2));
    layers->push_back(std::make_shared<mf::Dropout>(0.1));
  }
  mf::Tensor forward(const mf::Tensor& x) const { return fc2->forward(fc1->forward(x)) * scale; }
  void add_param(const std::string& name) { register_parameter(name, mf::ones({1})); }

  std::shared_ptr<mf::Linear> fc1, fc2;
  std::shared_ptr<mf::ModuleList> layers;
  mf::Tensor scale, steps, table;
};

std::vector<std::string> names(const mf::NamedTensors& nt) {
  std::vector<std::string> out;
  for (const auto& [n, t] : nt) out.push_back(n);
  return out;
}

}  // namespace

TEST(Module, NestedNamesAndOrder) {
  Net net;
  EXPECT_EQ(names(net.named_parameters()),
            (std::vector<std::string>{"scale", "fc1.weight", "fc1.bias", "fc2.weight",
                                      "layers.0.weight", "layers.0.bias"}));
  EXPECT_EQ(names(net.named_buffers()), (std::vector<std::string>{"steps", "table"}));
  // The non-persistent buffer stays out of the state dict; parameters before buffers.
  EXPECT_EQ(names(net.state_dict()),
            (std::vector<std::string>{"scale", "steps", "fc1.weight", "fc1.bias", "fc2.weight",
                                      "layers.0.weight", "layers.0.bias"}));
  EXPECT_EQ(net.num_parameters(), 2 + 12 + 4 + 8 + 2 + 2);
  for (const mf::Tensor& p : net.parameters()) {
    EXPECT_TRUE(p.requires_grad());
    EXPECT_TRUE(p.is_leaf());
  }
  // The member and the registry hold the same tensor.
  EXPECT_TRUE(net.named_parameters()[1].second.is_same(net.fc1->weight));
  mftest::expect_error([&] { net.add_param("scale"); }, {"'scale'", "already registered"});
  mftest::expect_error([&] { net.add_param("a.b"); }, {"'a.b'", "no '.'"});
  mftest::expect_error([&] { (*net.layers)[2]; }, {"ModuleList", "index 2", "2 modules"});
}

TEST(Module, TrainEvalIsRecursive) {
  Net net;
  EXPECT_TRUE(net.is_training());
  net.eval();
  EXPECT_FALSE(net.is_training());
  EXPECT_FALSE((*net.layers)[1]->is_training());
  EXPECT_FALSE(net.fc1->is_training());
  net.train();
  EXPECT_TRUE((*net.layers)[1]->is_training());
}

TEST(Module, ToDTypeReplacesInPlace) {
  Net net;
  const mf::Tensor held = net.fc1->weight;  // a handle taken before the conversion
  const auto before = values(held);
  net.forward(mf::ones({1, 3})).sum().backward();
  EXPECT_TRUE(held.grad().defined());
  net.to(mf::DType::Float64);
  EXPECT_EQ(held.dtype(), mf::DType::Float64);
  EXPECT_TRUE(held.is_same(net.fc1->weight));
  EXPECT_TRUE(held.requires_grad());
  EXPECT_FALSE(held.grad().defined());             // dropped by the conversion
  EXPECT_EQ(values(held), before);                 // float32 -> float64 is exact
  EXPECT_EQ(net.steps.dtype(), mf::DType::Int64);  // integer buffers keep their dtype
  EXPECT_EQ(net.table.dtype(), mf::DType::Float64);
  // Gradients flow to the converted parameters.
  net.forward(mf::ones({1, 3}, {.dtype = mf::DType::Float64})).sum().backward();
  EXPECT_EQ(held.grad().dtype(), mf::DType::Float64);
  net.zero_grad();
  for (const mf::Tensor& p : net.parameters()) EXPECT_FALSE(p.grad().defined());
  net.to(mf::Device::cpu());  // a no-op on the same device
  EXPECT_TRUE(held.is_same(net.fc1->weight));
}

TEST(Module, StateDictRoundTrip) {
  mf::manual_seed(5);
  Net a;
  mf::manual_seed(6);
  Net b;
  ASSERT_NE(values(a.fc1->weight), values(b.fc1->weight));
  {
    mf::NoGradGuard g;
    a.steps.fill_(7);
  }
  b.load_state_dict(a.state_dict());
  for (size_t i = 0; i < a.state_dict().size(); ++i)
    EXPECT_EQ(values(a.state_dict()[i].second), values(b.state_dict()[i].second))
        << a.state_dict()[i].first;
  EXPECT_EQ(b.steps.item<int64_t>(), 7);
  // Loading copies: the two modules do not share storage afterwards.
  {
    mf::NoGradGuard g;
    a.fc1->weight.fill_(0.5);
  }
  EXPECT_NE(values(b.fc1->weight)[0], 0.5);
  // The state dict shares storage with the module (as PyTorch's does).
  mf::NamedTensors sd = a.state_dict();
  EXPECT_EQ(values(sd[2].second)[0], 0.5);
  // Through a safetensors file.
  const std::string path = testing::TempDir() + "module_state.safetensors";
  mf::save_safetensors(path, a.state_dict());
  Net c;
  c.load_state_dict(mf::load_safetensors(path));
  EXPECT_EQ(values(c.fc1->weight), values(a.fc1->weight));
  std::remove(path.c_str());
}

TEST(Module, LoadStateDictErrors) {
  Net net;
  mf::NamedTensors sd = net.state_dict();
  const auto before = values(net.fc1->weight);

  mf::NamedTensors missing(sd.begin() + 1, sd.end());
  mftest::expect_error([&] { net.load_state_dict(missing); },
                       {"load_state_dict", "missing keys: scale"});
  net.load_state_dict(missing, /*strict=*/false);  // allowed when not strict

  mf::NamedTensors extra = sd;
  extra.emplace_back("fc3.weight", mf::zeros({2, 2}));
  mftest::expect_error([&] { net.load_state_dict(extra); }, {"unexpected keys: fc3.weight"});
  net.load_state_dict(extra, false);

  mf::NamedTensors wrong_shape = sd;
  wrong_shape[2].second = mf::zeros({4, 5});  // fc1.weight is [4, 3]
  wrong_shape[3].second = mf::zeros({4}, {.dtype = mf::DType::Float64});
  mftest::expect_error([&] { net.load_state_dict(wrong_shape, false); },
                       {"size mismatch for 'fc1.weight'", "state dict has [4, 5]",
                        "model has [4, 3]", "dtype mismatch for 'fc1.bias'", "float64", "float32"});
  // Nothing was copied by the failed loads.
  mf::NamedTensors changed = wrong_shape;
  changed[2].second = mf::full({4, 3}, 3.0);
  mftest::expect_error([&] { net.load_state_dict(changed); }, {"fc1.bias"});
  EXPECT_EQ(values(net.fc1->weight), before);

  mf::NamedTensors twice = sd;
  twice.push_back(sd[0]);
  mftest::expect_error([&] { net.load_state_dict(twice); }, {"'scale' twice"});
}

TEST(Module, GPT2SmallParameterCountInFakeMode) {
  mf::FakeModeGuard fake;
  mf::GPT model(mf::GPTConfig::gpt2());
  EXPECT_EQ(model.num_parameters(), 124439808);
  for (const mf::Tensor& p : model.parameters()) EXPECT_TRUE(p.is_fake());
  EXPECT_EQ(model.named_parameters().size(), 2u + 12u * 12u + 2u);
  EXPECT_EQ(model.named_parameters()[2].first, "h.0.ln_1.weight");
  EXPECT_EQ(model.state_dict()[4].first, "h.0.attn.c_attn.weight");
  // What is held after construction is exactly the float32 parameters.
  EXPECT_EQ(fake.current_bytes(), 124439808LL * 4);
}
