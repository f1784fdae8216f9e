// The fake-mode training-step estimate (a forward walker that measures each module), its
// table and JSON, the traced block and the microflex-inspect command line.
#include "models/inspect.h"

#include "models/mixed_precision.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <fstream>
#include <iomanip>
#include <map>
#include <ostream>
#include <sstream>

#include "autograd/grad_mode.h"
#include "core/allocator.h"
#include "core/error.h"
#include "core/fake.h"
#include "core/json.h"
#include "models/optim.h"
#include "ops/elementwise.h"
#include "ops/linalg.h"
#include "ops/nn.h"

namespace microflex {

const char* dtype_policy_name(DTypePolicy p) {
  return p == DTypePolicy::BF16 ? "bf16" : "fp32";
}

int64_t attention_flops(int64_t B, int64_t H, int64_t M, int64_t N, int64_t D, int64_t Dv,
                        double unmasked_fraction) {
  const double dense = 2.0 * static_cast<double>(B * H * M * N) * static_cast<double>(D + Dv);
  return static_cast<int64_t>(std::llround(dense * unmasked_fraction));
}

double unmasked_fraction(const BlockMask& bm) {
  MF_CHECK(bm.kv_num_blocks.defined() && !bm.kv_num_blocks.is_fake() &&
               bm.kv_num_blocks.device().is_cpu(),
           "unmasked_fraction: the BlockMask must hold real host tensors");
  // Real host tensors whatever mode the caller is in: mask_mod is evaluated on data.
  NoGradGuard no_grad;
  ExcludeKeyGuard no_modes{DispatchKeySet{DispatchKey::Tracing, DispatchKey::Fake}};
  const int64_t B = bm.batch(), H = bm.heads(), Mb = bm.num_q_blocks(), Nb = bm.num_kv_blocks();
  const int64_t M = bm.q_len, N = bm.kv_len, bq = bm.q_block_size, bk = bm.kv_block_size;
  const auto kn = bm.kv_num_blocks.to_vector<int32_t>(), ki = bm.kv_indices.to_vector<int32_t>();
  const auto fn = bm.full_kv_num_blocks.to_vector<int32_t>(),
             fi = bm.full_kv_indices.to_vector<int32_t>();
  auto grid = [](int64_t start, int64_t n, int64_t dim) {
    Shape s{1, 1, 1, 1};
    s[dim] = n;
    return arange(start, start + n, 1, {.dtype = DType::Int32}).view(s);
  };
  int64_t kept = 0;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t mb = 0; mb < Mb; ++mb) {
        const int64_t row = (b * H + h) * Mb + mb;
        const int64_t m0 = mb * bq, rows = std::min(bq, M - m0);
        for (int32_t j = 0; j < fn[row]; ++j) {
          const int64_t n0 = fi[row * Nb + j] * bk;
          kept += rows * std::min(bk, N - n0);
        }
        for (int32_t j = 0; j < kn[row]; ++j) {
          const int64_t n0 = ki[row * Nb + j] * bk, cols = std::min(bk, N - n0);
          if (!bm.mask_mod) {
            kept += rows * cols;
            continue;
          }
          // [1, 1, rows, cols] bool: the block's pairs.
          const Tensor keep =
              bm.mask_mod(grid(b, 1, 0), grid(h, 1, 1), grid(m0, rows, 2), grid(n0, cols, 3))
                  .expand({1, 1, rows, cols})
                  .contiguous();
          const bool* p = keep.data_ptr<bool>();
          for (int64_t i = 0; i < rows * cols; ++i) kept += p[i] ? 1 : 0;
        }
      }
  return static_cast<double>(kept) / static_cast<double>(B * H * M * N);
}

namespace {

// Bytes held on the device by fake tensors, relative to a starting point.
// Reads the fake allocator (estimates) or the real one (measurements) of a device.
struct Meter {
  Device device;
  bool real = false;
  int64_t base = 0;
  Meter(Device d, bool r) : device(d), real(r), base(stats().allocated) {}
  MemoryStats stats() const { return real ? memory_stats(device) : fake_memory_stats(device); }
  int64_t now() const { return stats().allocated - base; }
  int64_t peak() const { return stats().peak - base; }
  void reset_peak() const { real ? reset_peak_memory_stats(device) : reset_fake_peak(device); }
};

// Appends one row per module call; each row's bytes are the growth since the last row.
struct Recorder {
  const Meter& meter;
  std::vector<ModuleEstimate>* rows;
  int64_t last;
  void add(const std::string& name, const Shape& shape, DType dtype, int64_t params,
           int64_t flops) {
    const int64_t now = meter.now();
    rows->push_back({name, shape, dtype, params, flops, now - last});
    last = now;
  }
};

void check_config(const GPTConfig& c, int64_t batch) {
  MF_CHECK(c.vocab_size > 0 && c.block_size > 0 && c.n_layer > 0 && c.n_head > 0 && c.n_embd > 0,
           "inspect: vocab_size, block_size, n_layer, n_head and n_embd must be positive, got ",
           c.vocab_size, ", ", c.block_size, ", ", c.n_layer, ", ", c.n_head, ", ", c.n_embd);
  MF_CHECK(c.n_embd % c.n_head == 0, "inspect: n_embd ", c.n_embd, " is not divisible by n_head ",
           c.n_head);
  MF_CHECK(!c.rotary || (c.n_embd / c.n_head) % 2 == 0,
           "inspect: rotary embeddings need an even head dim, got ", c.n_embd / c.n_head);
  MF_CHECK(batch >= 1, "inspect: batch must be >= 1, got ", batch);
  MF_CHECK(!c.attention.document,
           "inspect: document masking needs document ids per batch; estimate the pattern "
           "without it");
}

// The pattern's BlockMask for T x T, real on the host (outside fake mode), or empty when
// nothing is masked.
std::optional<BlockMask> host_block_mask(const GPTConfig& c) {
  if (!c.attention.has_mask()) return std::nullopt;
  const int64_t T = c.block_size;
  return create_block_mask(make_mask_mod(c.attention), 1, 1, T, T, Device::cpu(),
                           c.attention.block_size);
}

// The mask's tensors as fake tensors on `device` (inside fake mode), so that they are
// counted like the rest of the step's memory.
BlockMask device_mask(const BlockMask& host, Device device) {
  BlockMask bm = host;
  for (Tensor* t : {&bm.kv_num_blocks, &bm.kv_indices, &bm.full_kv_num_blocks, &bm.full_kv_indices,
                    &bm.q_num_blocks, &bm.q_indices, &bm.full_q_num_blocks, &bm.full_q_indices})
    *t = device.is_cpu() ? t->clone() : t->to(device);
  return bm;
}

struct LayerFlops {
  int64_t attn = 0, attention_core = 0, mlp = 0, head = 0;
};

LayerFlops layer_flops(const GPTConfig& c, int64_t B, int64_t T, double fraction) {
  const int64_t BT = B * T, C = c.n_embd, D = c.n_embd / c.n_head;
  LayerFlops f;
  f.attention_core = attention_flops(B, c.n_head, T, T, D, D, fraction);
  f.attn = 2 * BT * C * (3 * C) + f.attention_core + 2 * BT * C * C;
  f.mlp = 2 * BT * C * (4 * C) + 2 * BT * (4 * C) * C;
  f.head = 2 * BT * C * c.vocab_size;
  return f;
}

// GPT's forward with loss (as GPT::forward runs it), one module at a time, recording each.
// Handles to intermediates are dropped before each row is recorded, so a row holds only
// what the tape (or a later module) keeps.
Tensor walk_forward(GPT& m, const Tensor& idx, const Tensor& targets, const BlockMask* mask,
                    bool float32_loss, const LayerFlops& f, Recorder& r) {
  const int64_t B = idx.size(0), T = idx.size(1), V = m.cfg.vocab_size;
  Tensor x = m.wte->forward(idx);  // [B, T, C]
  r.add("wte", x.sizes(), x.dtype(), m.wte->num_parameters(), 0);
  if (m.wpe) {
    {
      const Tensor pos = arange(0, T, 1, {.dtype = DType::Int64, .device = idx.device()});
      x = x + m.wpe->forward(pos);
    }
    r.add("wpe", x.sizes(), x.dtype(), m.wpe->num_parameters(), 0);
  }
  if (m.cfg.dropout > 0.0) {
    x = m.drop->forward(x);
    r.add("drop", x.sizes(), x.dtype(), 0, 0);
  }
  for (size_t i = 0; i < m.blocks.size(); ++i) {
    Block& b = *m.blocks[i];
    const std::string p = "h." + std::to_string(i) + ".";
    Tensor a = b.ln_1->forward(x);
    r.add(p + "ln_1", a.sizes(), a.dtype(), b.ln_1->num_parameters(), 0);
    {
      const Tensor y = b.attn->forward(a, mask);
      a = Tensor();
      x = x + y;
    }
    r.add(p + "attn", x.sizes(), x.dtype(), b.attn->num_parameters(), f.attn);
    a = b.ln_2->forward(x);
    r.add(p + "ln_2", a.sizes(), a.dtype(), b.ln_2->num_parameters(), 0);
    {
      const Tensor y = b.mlp->forward(a);
      a = Tensor();
      x = x + y;
    }
    r.add(p + "mlp", x.sizes(), x.dtype(), b.mlp->num_parameters(), f.mlp);
  }
  x = m.ln_f->forward(x);
  r.add("ln_f", x.sizes(), x.dtype(), m.ln_f->num_parameters(), 0);
  Tensor logits = linear(x, m.wte->weight);  // [B, T, V], the head tied to wte
  x = Tensor();
  const Shape logits_shape = logits.sizes();
  const DType logits_dtype = logits.dtype();
  r.add("lm_head", logits_shape, logits_dtype, 0, f.head);
  Tensor flat = logits.reshape({B * T, V});
  logits = Tensor();
  if (float32_loss && flat.dtype() != DType::Float32) flat = flat.to(DType::Float32);
  Tensor loss = cross_entropy(flat, targets.reshape({B * T}), -1);
  flat = Tensor();
  r.add("loss", loss.sizes(), loss.dtype(), 0, 0);
  return loss;
}

int64_t bytes_of(const Tensor& t) {
  return t.defined() ? t.numel() * t.element_size() : 0;
}

}  // namespace

namespace {

// One training step (build, forward, backward, AdamW) in fake mode (`real` false: the
// estimate) or on real tensors (`real` true: the measurement it is checked against).
ModelEstimate run_training_step(const GPTConfig& cfg, int64_t batch, Device device,
                                DTypePolicy dtype, bool real) {
  check_config(cfg, batch);
  MF_CHECK(!fake_mode_active(),
           "estimate_training_step: call it outside fake mode (it measures the block mask on "
           "real host data and enters fake mode itself)");
  ModelEstimate e;
  e.config = cfg;
  e.batch = batch;
  e.seq_len = cfg.block_size;
  e.device = device;
  e.dtype = dtype;
  const int64_t B = batch, T = cfg.block_size;

  // The mask is built once, on real host data, and shared by every layer.
  const std::optional<BlockMask> host_mask = host_block_mask(cfg);
  if (host_mask) {
    e.unmasked_fraction = unmasked_fraction(*host_mask);
    e.block_sparsity = host_mask->sparsity();
  }
  const LayerFlops f = layer_flops(cfg, B, T, e.unmasked_fraction);
  e.attention_flops_per_layer = f.attention_core;

  std::optional<FakeModeGuard> fake;
  if (!real) fake.emplace();
  EnableGradGuard grad;
  const Meter meter(device, real);
  MemoryEstimate& mem = e.memory;

  // Under bf16, `master` holds the float32 weights the optimizer updates and `model` is
  // the bf16 copy that computes; under fp32 they are one model.
  auto master = std::make_shared<GPT>(cfg);
  master->to(device);
  std::shared_ptr<GPT> model = master;
  std::optional<MixedPrecision> mixed;
  if (dtype == DTypePolicy::BF16) {
    model = std::make_shared<GPT>(cfg);
    model->to(device);
    mixed.emplace(*master, *model);
  }
  e.parameters = master->num_parameters();
  mem.after_build = mem.weights = meter.now();

  std::vector<ModuleEstimate> rows;
  Recorder rec{meter, &rows, meter.now()};
  const Tensor idx = zeros({B, T}, {.dtype = DType::Int64, .device = device});
  const Tensor targets = zeros({B, T}, {.dtype = DType::Int64, .device = device});
  std::optional<BlockMask> mask;
  if (host_mask) mask = device_mask(*host_mask, device);
  rec.add("inputs", idx.sizes(), idx.dtype(), 0, 0);

  meter.reset_peak();
  Tensor loss = walk_forward(*model, idx, targets, mask ? &*mask : nullptr,
                             dtype == DTypePolicy::BF16, f, rec);
  mem.after_forward = meter.now();
  mem.activations = mem.after_forward - mem.after_build;
  loss.backward();
  loss = Tensor();
  mem.after_backward = meter.now();
  mem.peak_forward_backward = meter.peak();
  for (const Tensor& p : model->parameters()) mem.grads += bytes_of(p.grad());

  meter.reset_peak();
  {
    const TensorList masters = master->parameters();
    if (mixed) mixed->grads_to_master();
    AdamW opt(master->named_parameters());
    opt.step();
    if (mixed) mixed->master_to_compute();
    int64_t grad_bytes = 0;
    for (const Tensor& p : masters) grad_bytes += bytes_of(p.grad());
    mem.peak_step = meter.peak();
    mem.after_step = meter.now();
    mem.optimizer_state = mem.after_step - mem.after_backward - (grad_bytes - mem.grads);
  }
  mem.peak = std::max(mem.peak_forward_backward, mem.peak_step);
  mem.steady_peak = std::max(mem.peak_forward_backward + mem.optimizer_state, mem.peak_step);

  e.modules = std::move(rows);
  for (const ModuleEstimate& r : e.modules) e.forward_flops += r.flops;
  e.forward_flops_per_token = static_cast<double>(e.forward_flops) / static_cast<double>(B * T);
  e.training_flops_per_token = 3.0 * e.forward_flops_per_token;
  return e;
}

}  // namespace

ModelEstimate estimate_training_step(const GPTConfig& cfg, int64_t batch, Device device,
                                     DTypePolicy dtype) {
  return run_training_step(cfg, batch, device, dtype, /*real=*/false);
}

ModelEstimate measure_training_step(const GPTConfig& cfg, int64_t batch, Device device,
                                    DTypePolicy dtype) {
  return run_training_step(cfg, batch, device, dtype, /*real=*/true);
}

graph::GraphModule trace_block(const GPTConfig& cfg, int64_t batch, Device device,
                               DTypePolicy dtype) {
  check_config(cfg, batch);
  const std::optional<BlockMask> host_mask = host_block_mask(cfg);
  FakeModeGuard fake;
  Block block(cfg);
  block.to(device);
  const DType dt = dtype == DTypePolicy::BF16 ? DType::BFloat16 : DType::Float32;
  block.to(dt);
  std::optional<BlockMask> mask;
  if (host_mask) mask = device_mask(*host_mask, device);
  const Tensor x = empty({batch, cfg.block_size, cfg.n_embd}, {.dtype = dt, .device = device});
  return graph::trace(
      [&](const TensorList& in) {
        return TensorList{block.forward(in[0], mask ? &*mask : nullptr)};
      },
      {x});
}

// ---- printing ----

namespace {

std::string grouped(int64_t v) {
  std::string s = std::to_string(v < 0 ? -v : v), out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (i > 0 && (s.size() - i) % 3 == 0) out += ',';
    out += s[i];
  }
  return (v < 0 ? "-" : "") + out;
}

std::string human_bytes(int64_t b) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(b < 0 ? -b : b);
  int u = 0;
  while (v >= 1024.0 && u < 4) {
    v /= 1024.0;
    ++u;
  }
  std::ostringstream os;
  os << (b < 0 ? "-" : "") << std::fixed << std::setprecision(u == 0 ? 0 : 1) << v << " "
     << units[u];
  return os.str();
}

std::string human_flops(double f) {
  const char* units[] = {"", "K", "M", "G", "T", "P", "E"};
  int u = 0;
  while (f >= 1000.0 && u < 6) {
    f /= 1000.0;
    ++u;
  }
  std::ostringstream os;
  os << std::fixed << std::setprecision(u == 0 ? 0 : 2) << f << " " << units[u] << "FLOP";
  return os.str();
}

std::string short_dtype(DType d) {
  switch (d) {
    case DType::Float32:
      return "f32";
    case DType::Float64:
      return "f64";
    case DType::Float16:
      return "f16";
    case DType::BFloat16:
      return "bf16";
    default:
      return dtype_name(d);
  }
}

std::string pattern_str(const GPTConfig& c) {
  const AttentionPattern& p = c.attention;
  std::string s = p.causal ? "causal" : "full";
  if (p.window > 0) s += "+window:" + std::to_string(p.window);
  if (p.prefix > 0) s += "+prefix:" + std::to_string(p.prefix);
  if (p.alibi) s += "+alibi";
  if (p.softcap > 0.0) {
    std::ostringstream os;
    os << p.softcap;
    s += "+softcap:" + os.str();
  }
  if (c.rotary) s += "+rotary";
  return s;
}

// "h.3.attn" -> (3, "attn"); other names -> (-1, name).
std::pair<int64_t, std::string> layer_of(const std::string& name) {
  if (name.rfind("h.", 0) != 0) return {-1, name};
  const size_t dot = name.find('.', 2);
  return {std::stoll(name.substr(2, dot - 2)), name.substr(dot + 1)};
}

}  // namespace

std::string ModelEstimate::to_table(bool all_layers) const {
  std::ostringstream os;
  const GPTConfig& c = config;
  os << "GPT: n_layer=" << c.n_layer << " n_head=" << c.n_head << " n_embd=" << c.n_embd
     << " vocab_size=" << c.vocab_size << " block_size=" << c.block_size
     << " attention=" << pattern_str(c) << "\n"
     << "step: batch " << batch << " x " << seq_len << " tokens on " << device.str() << ", "
     << dtype_policy_name(dtype) << ", forward + backward + AdamW in fake mode\n\n";
  auto line = [&os](const std::string& name, const std::string& shape, const std::string& dt,
                    const std::string& params, const std::string& flops, const std::string& bytes) {
    os << std::left << std::setw(22) << name << std::setw(18) << shape << std::setw(6) << dt
       << std::right << std::setw(15) << params << std::setw(16) << flops << std::setw(14) << bytes
       << "\n";
  };
  line("module", "output", "dtype", "params", "fwd FLOPs", "activations");
  auto row = [&](const ModuleEstimate& r) {
    line(r.name, shape_str(r.output_shape), short_dtype(r.output_dtype), grouped(r.parameters),
         human_flops(static_cast<double>(r.flops)), human_bytes(r.activation_bytes));
  };
  // Layers 1.. fold into one row when each matches layer 0 row for row.
  std::map<std::string, const ModuleEstimate*> layer0;
  for (const ModuleEstimate& r : modules) {
    auto [l, sub] = layer_of(r.name);
    if (l == 0) layer0[sub] = &r;
  }
  bool same = true;
  for (const ModuleEstimate& r : modules) {
    auto [l, sub] = layer_of(r.name);
    if (l <= 0) continue;
    auto it = layer0.find(sub);
    same = same && it != layer0.end() && it->second->output_shape == r.output_shape &&
           it->second->output_dtype == r.output_dtype && it->second->parameters == r.parameters &&
           it->second->flops == r.flops && it->second->activation_bytes == r.activation_bytes;
  }
  bool folded = false;
  for (const ModuleEstimate& r : modules) {
    if (layer_of(r.name).first <= 0 || all_layers || !same) {
      row(r);
      continue;
    }
    if (folded) continue;
    folded = true;
    const int64_t n = c.n_layer - 1;
    int64_t params = 0, flops = 0, bytes = 0;
    for (const auto& [sub, z] : layer0) {
      params += z->parameters;
      flops += z->flops;
      bytes += z->activation_bytes;
    }
    line("h.1-h." + std::to_string(n) + " (" + std::to_string(n) + "x h.0)",
         shape_str(r.output_shape), short_dtype(r.output_dtype), grouped(params * n),
         human_flops(static_cast<double>(flops) * static_cast<double>(n)), human_bytes(bytes * n));
  }

  const MemoryEstimate& m = memory;
  auto kv = [&os](const std::string& k, const std::string& v) {
    os << "  " << std::left << std::setw(28) << k << v << "\n";
  };
  os << "\ntotals\n";
  kv("parameters", grouped(parameters));
  kv("forward FLOPs per step", human_flops(static_cast<double>(forward_flops)));
  kv("forward FLOPs per token", human_flops(forward_flops_per_token));
  kv("training FLOPs per token", human_flops(training_flops_per_token) + " (3x forward)");
  {
    std::ostringstream a;
    a << std::fixed << std::setprecision(2) << 100.0 * unmasked_fraction
      << "% of (q, kv) pairs kept, " << block_sparsity << "% of mask blocks skipped";
    kv("attention", a.str());
  }
  kv("attention FLOPs per layer", human_flops(static_cast<double>(attention_flops_per_layer)));
  os << "\nmemory on " << device.str() << " (fake allocator)\n";
  kv("weights", human_bytes(m.weights));
  kv("activations (+ inputs)", human_bytes(m.activations));
  kv("gradients", human_bytes(m.grads));
  kv("optimizer state", human_bytes(m.optimizer_state));
  kv("after forward", human_bytes(m.after_forward));
  kv("after backward", human_bytes(m.after_backward));
  kv("after optimizer step", human_bytes(m.after_step));
  kv("peak, first step", human_bytes(m.peak));
  kv("peak, later steps", human_bytes(m.steady_peak));
  return os.str();
}

std::string ModelEstimate::to_json() const {
  std::ostringstream os;
  os << std::setprecision(17);
  const GPTConfig& c = config;
  os << "{\"config\": {\"vocab_size\": " << c.vocab_size << ", \"block_size\": " << c.block_size
     << ", \"n_layer\": " << c.n_layer << ", \"n_head\": " << c.n_head
     << ", \"n_embd\": " << c.n_embd << ", \"bias\": " << (c.bias ? "true" : "false")
     << ", \"rotary\": " << (c.rotary ? "true" : "false")
     << ", \"attention\": " << json::quote(pattern_str(c)) << "},\n";
  os << " \"batch\": " << batch << ", \"seq_len\": " << seq_len
     << ", \"device\": " << json::quote(device.str())
     << ", \"dtype\": " << json::quote(dtype_policy_name(dtype)) << ",\n";
  os << " \"parameters\": " << parameters << ",\n";
  os << " \"flops\": {\"forward_per_step\": " << forward_flops
     << ", \"forward_per_token\": " << forward_flops_per_token
     << ", \"training_per_token\": " << training_flops_per_token
     << ", \"attention_per_layer\": " << attention_flops_per_layer << "},\n";
  os << " \"attention\": {\"unmasked_fraction\": " << unmasked_fraction
     << ", \"block_sparsity_percent\": " << block_sparsity << "},\n";
  const MemoryEstimate& m = memory;
  os << " \"memory\": {\"weights\": " << m.weights << ", \"activations\": " << m.activations
     << ", \"grads\": " << m.grads << ", \"optimizer_state\": " << m.optimizer_state
     << ", \"after_build\": " << m.after_build << ", \"after_forward\": " << m.after_forward
     << ", \"after_backward\": " << m.after_backward << ", \"after_step\": " << m.after_step
     << ", \"peak\": " << m.peak << ", \"peak_forward_backward\": " << m.peak_forward_backward
     << ", \"peak_step\": " << m.peak_step << ", \"steady_peak\": " << m.steady_peak << "},\n";
  os << " \"modules\": [";
  for (size_t i = 0; i < modules.size(); ++i) {
    const ModuleEstimate& r = modules[i];
    os << (i ? ",\n  " : "\n  ") << "{\"name\": " << json::quote(r.name) << ", \"shape\": [";
    for (size_t j = 0; j < r.output_shape.size(); ++j) os << (j ? ", " : "") << r.output_shape[j];
    os << "], \"dtype\": " << json::quote(dtype_name(r.output_dtype))
       << ", \"parameters\": " << r.parameters << ", \"flops\": " << r.flops
       << ", \"activation_bytes\": " << r.activation_bytes << "}";
  }
  os << "]}\n";
  return os.str();
}

// ---- command line ----

namespace {

const char* kUsage =
    "usage: microflex-inspect [--preset gpt2|gpt2-medium|gpt2-large|gpt2-xl]\n"
    "         [--n_layer N] [--n_head N] [--n_embd N] [--block_size N] [--vocab_size N]\n"
    "         [--attention SPEC] [--rotary] [--no-bias] [--batch N] [--device cpu|cuda[:i]]\n"
    "         [--dtype fp32|bf16] [--all-layers] [--json] [--trace] [--dot FILE]\n"
    "Estimates one training step (forward, backward, AdamW) of a GPT in fake mode: shapes,\n"
    "parameters, FLOPs and device memory, with no data and no GPU needed.\n"
    "  SPEC: terms joined by '+': causal | full | sliding:W | prefix:P | alibi |\n"
    "        softcap:C | block:N (mask block size); e.g. sliding:256+alibi\n"
    "  --trace      print the traced graph of one transformer block\n"
    "  --dot FILE   write that graph as Graphviz dot\n"
    "exit status: 0 ok, 2 bad flag or config, 1 other errors\n";

using UsageError = InspectUsageError;

int64_t parse_int(const std::string& flag, const std::string& v) {
  int64_t out = 0;
  const char* end = v.data() + v.size();
  auto [p, ec] = std::from_chars(v.data(), end, out);
  if (ec != std::errc() || p != end || v.empty())
    throw UsageError{flag + " expects an integer, got '" + v + "'"};
  return out;
}

double parse_double(const std::string& flag, const std::string& v) {
  size_t used = 0;
  double d = 0;
  try {
    d = std::stod(v, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used == 0 || used != v.size() || !std::isfinite(d))
    throw UsageError{flag + " expects a number, got '" + v + "'"};
  return d;
}

AttentionPattern parse_attention(const std::string& spec) {
  AttentionPattern p;
  std::stringstream ss(spec);
  std::string term;
  bool any = false;
  while (std::getline(ss, term, '+')) {
    any = true;
    const size_t colon = term.find(':');
    const std::string key = term.substr(0, colon);
    const std::string val = colon == std::string::npos ? "" : term.substr(colon + 1);
    const bool has_val = colon != std::string::npos;
    const std::string what = "--attention term '" + term + "'";
    if (key == "causal" && !has_val) {
      p.causal = true;
    } else if (key == "full" && !has_val) {
      p.causal = false;
    } else if ((key == "sliding" || key == "window") && has_val) {
      p.window = parse_int(what, val);
      if (p.window < 1) throw UsageError{what + ": the window must be >= 1"};
    } else if (key == "prefix" && has_val) {
      p.prefix = parse_int(what, val);
      if (p.prefix < 1) throw UsageError{what + ": the prefix must be >= 1"};
    } else if (key == "alibi" && !has_val) {
      p.alibi = true;
    } else if (key == "softcap" && has_val) {
      p.softcap = parse_double(what, val);
      if (p.softcap <= 0) throw UsageError{what + ": the cap must be > 0"};
    } else if (key == "block" && has_val) {
      p.block_size = parse_int(what, val);
      if (p.block_size < 1) throw UsageError{what + ": the block size must be >= 1"};
    } else if (key == "document") {
      throw UsageError{
          "--attention: document masking needs per-batch document ids and cannot be "
          "estimated; leave 'document' out"};
    } else {
      throw UsageError{"unknown " + what +
                       " (expected causal, full, sliding:W, prefix:P, alibi, softcap:C or "
                       "block:N)"};
    }
  }
  if (!any) throw UsageError{"--attention expects a pattern, got ''"};
  return p;
}

}  // namespace

InspectArgs parse_inspect_args(const std::vector<std::string>& args) {
  InspectArgs o;
  std::string preset = "gpt2";
  std::vector<std::pair<std::string, int64_t>> sizes;
  std::optional<std::string> attention;
  bool rotary = false, no_bias = false;
  for (size_t i = 0; i < args.size(); ++i) {
    std::string flag = args[i], value;
    bool inline_value = false;
    if (flag.rfind("--", 0) == 0) {
      const size_t eq = flag.find('=');
      if (eq != std::string::npos) {
        value = flag.substr(eq + 1);
        flag = flag.substr(0, eq);
        inline_value = true;
      }
    }
    auto take = [&]() -> std::string {
      if (inline_value) return value;
      if (i + 1 >= args.size()) throw UsageError{flag + " expects a value"};
      return args[++i];
    };
    auto no_value = [&] {
      if (inline_value) throw UsageError{flag + " takes no value"};
    };
    if (flag == "--help" || flag == "-h") {
      o.help = true;
    } else if (flag == "--preset") {
      preset = take();
    } else if (flag == "--n_layer" || flag == "--n_head" || flag == "--n_embd" ||
               flag == "--block_size" || flag == "--vocab_size") {
      const int64_t v = parse_int(flag, take());
      if (v < 1) throw UsageError{flag + " must be >= 1, got " + std::to_string(v)};
      sizes.emplace_back(flag, v);
    } else if (flag == "--batch") {
      o.batch = parse_int(flag, take());
      if (o.batch < 1) throw UsageError{"--batch must be >= 1, got " + std::to_string(o.batch)};
    } else if (flag == "--attention") {
      attention = take();
    } else if (flag == "--rotary") {
      no_value();
      rotary = true;
    } else if (flag == "--no-bias") {
      no_value();
      no_bias = true;
    } else if (flag == "--device") {
      const std::string d = take();
      try {
        o.device = Device::parse(d);
      } catch (const Error&) {
        throw UsageError{"--device expects cpu, cuda or cuda:N, got '" + d + "'"};
      }
    } else if (flag == "--dtype") {
      const std::string d = take();
      if (d == "fp32" || d == "float32") {
        o.dtype = DTypePolicy::FP32;
      } else if (d == "bf16" || d == "bfloat16") {
        o.dtype = DTypePolicy::BF16;
      } else {
        throw UsageError{"--dtype expects fp32 or bf16, got '" + d + "'"};
      }
    } else if (flag == "--json") {
      no_value();
      o.json = true;
    } else if (flag == "--trace") {
      no_value();
      o.trace = true;
    } else if (flag == "--all-layers") {
      no_value();
      o.all_layers = true;
    } else if (flag == "--dot") {
      o.dot = take();
      if (o.dot.empty()) throw UsageError{"--dot expects a file name"};
    } else {
      throw UsageError{"unknown flag '" + args[i] + "'"};
    }
  }
  GPTConfig& c = o.cfg;
  c = GPTConfig::gpt2();
  if (preset == "gpt2") {
  } else if (preset == "gpt2-medium") {
    c.n_layer = 24, c.n_head = 16, c.n_embd = 1024;
  } else if (preset == "gpt2-large") {
    c.n_layer = 36, c.n_head = 20, c.n_embd = 1280;
  } else if (preset == "gpt2-xl") {
    c.n_layer = 48, c.n_head = 25, c.n_embd = 1600;
  } else {
    throw UsageError{"unknown preset '" + preset +
                     "' (expected gpt2, gpt2-medium, gpt2-large or gpt2-xl)"};
  }
  for (const auto& [flag, v] : sizes) {
    if (flag == "--n_layer") c.n_layer = v;
    if (flag == "--n_head") c.n_head = v;
    if (flag == "--n_embd") c.n_embd = v;
    if (flag == "--block_size") c.block_size = v;
    if (flag == "--vocab_size") c.vocab_size = v;
  }
  if (attention) c.attention = parse_attention(*attention);
  c.rotary = rotary;
  c.bias = !no_bias;
  if (c.n_embd % c.n_head != 0)
    throw UsageError{"n_embd " + std::to_string(c.n_embd) + " is not divisible by n_head " +
                     std::to_string(c.n_head)};
  if (c.rotary && (c.n_embd / c.n_head) % 2 != 0)
    throw UsageError{"--rotary needs an even head dim (n_embd / n_head), got " +
                     std::to_string(c.n_embd / c.n_head)};
  return o;
}

int inspect_main(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  InspectArgs o;
  try {
    o = parse_inspect_args(args);
  } catch (const InspectUsageError& u) {
    err << "microflex-inspect: error: " << u.what() << "\n(run with --help for usage)\n";
    return 2;
  }
  if (o.help) {
    out << kUsage;
    return 0;
  }
  try {
    const ModelEstimate e = estimate_training_step(o.cfg, o.batch, o.device, o.dtype);
    std::string traced, dot;
    if (o.trace || !o.dot.empty()) {
      const graph::GraphModule gm = trace_block(o.cfg, o.batch, o.device, o.dtype);
      traced = gm.to_string();
      dot = gm.graph().to_dot();
    }
    if (!o.dot.empty()) {
      std::ofstream f(o.dot);
      f << dot;
      if (!f) {
        err << "microflex-inspect: error: cannot write '" << o.dot << "'\n";
        return 1;
      }
    }
    if (o.json) {
      std::string j = e.to_json();
      if (o.trace) j = j.substr(0, j.rfind('}')) + ",\n \"trace\": " + json::quote(traced) + "}\n";
      out << j;
    } else {
      out << e.to_table(o.all_layers);
      if (o.trace) out << "\ntraced block (h.0 forward):\n" << traced;
    }
    return 0;
  } catch (const Error& ex) {
    // What the library rejects here is the configuration (the flags were well formed).
    err << "microflex-inspect: error: " << ex.what() << "\n";
    return 2;
  } catch (const std::exception& ex) {
    err << "microflex-inspect: error: " << ex.what() << "\n";
    return 1;
  }
}

}  // namespace microflex
