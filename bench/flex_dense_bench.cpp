// The CPU dense flex_attention forward at B=1, H=8, S=2048, D=64 float32 with no block
// mask, a causal mask and a causal sliding window of 256. Block masks are built once,
// outside the timed loop, so the times show what block skipping saves.
#include <benchmark/benchmark.h>

#include <microflex/microflex.h>

namespace {

using mf::Tensor;

constexpr int64_t kB = 1, kH = 8, kS = 2048, kD = 64;

struct Inputs {
  Tensor q, k, v;
  Inputs() {
    mf::manual_seed(0);
    q = mf::randn({kB, kH, kS, kD});
    k = mf::randn({kB, kH, kS, kD});
    v = mf::randn({kB, kH, kS, kD});
  }
};

const mf::MaskMod kCausal = [](const Tensor&, const Tensor&, const Tensor& q, const Tensor& kv) {
  return q >= kv;
};
const mf::MaskMod kWindow = [](const Tensor&, const Tensor&, const Tensor& q, const Tensor& kv) {
  return (q - kv) <= 256;
};

// Attention FLOPs actually needed by the mask (2 matmuls, 2 * D flops per kept score each),
// so a variant that skips its empty blocks keeps its GFLOP/s near full's.
void run(benchmark::State& st, const std::optional<mf::BlockMask>& bm, double kept_fraction) {
  static const Inputs in;
  mf::NoGradGuard no_grad;
  for (auto _ : st) {
    Tensor out = mf::flex_attention(in.q, in.k, in.v, {.block_mask = bm}).out;
    benchmark::DoNotOptimize(out.raw_data());
  }
  const double scores = static_cast<double>(kB * kH) * kS * kS * kept_fraction;
  st.counters["GFLOP/s"] =
      benchmark::Counter(4.0 * kD * scores * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  if (bm) st.counters["sparsity_%"] = bm->sparsity();
}

// Fraction of (q, kv) pairs the mask keeps.
double causal_fraction() {
  return (static_cast<double>(kS) + 1) / (2.0 * kS);
}
double window_fraction() {
  double kept = 0;
  for (int64_t i = 0; i < kS; ++i) kept += static_cast<double>(std::min<int64_t>(i, 256) + 1);
  return kept / (static_cast<double>(kS) * kS);
}

void BM_flex_dense_full(benchmark::State& st) {
  run(st, std::nullopt, 1.0);
}

void BM_flex_dense_causal(benchmark::State& st) {
  static const mf::BlockMask bm = mf::create_block_mask(kCausal, 1, 1, kS, kS);
  run(st, bm, causal_fraction());
}

void BM_flex_dense_window256(benchmark::State& st) {
  static const mf::BlockMask bm =
      mf::create_block_mask(mf::and_masks(kCausal, kWindow), 1, 1, kS, kS);
  run(st, bm, window_fraction());
}

}  // namespace

BENCHMARK(BM_flex_dense_full)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_flex_dense_causal)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_flex_dense_window256)->Unit(benchmark::kMillisecond);

BENCHMARK_MAIN();
