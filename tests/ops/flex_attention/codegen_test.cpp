// The CUDA source generated from traced score_mod / mask_mod graphs (golden strings for
// the classic variants) and the errors for graphs it cannot emit.
#include "ops/flex_attention/codegen.h"

#include <cmath>

#include "microflex/microflex.h"
#include "ops/flex_attention/flex_attention.h"
#include "test_util.h"

namespace mf = microflex;
namespace cg = microflex::flex_codegen;

namespace {

using T = mf::Tensor;

std::string score_src(const mf::ScoreMod& f) {
  return cg::generate_score_mod(
      mf::trace_score_mod(f, mf::DType::Float32, mf::Device::cpu()).graph());
}
std::string mask_src(const mf::MaskMod& f) {
  return cg::generate_mask_mod(mf::trace_mask_mod(f, mf::Device::cpu()).graph());
}

const char* const kAlibi =
    R"(__device__ __forceinline__ float score_mod(float score, int b, int h, int q, int kv,
                                           const FlexCaptured& cap) {
  const int v5 = kv - q;
  long long o7 = 0;
  const bool k7 = mf_index_dim(cap, 0, 0, static_cast<long long>(h), o7);
  const double v7 = k7 ? static_cast<const double*>(cap.t[0].data)[o7] : 0.0;
  const double v8 = v7 * static_cast<double>(v5);
  const double v9 = static_cast<double>(score) + v8;
  return static_cast<float>(v9);
}
)";
const char* const kSoftcap =
    R"(__device__ __forceinline__ float score_mod(float score, int b, int h, int q, int kv,
                                           const FlexCaptured& cap) {
  const float v6 = score / 30.0f;
  const float v7 = tanhf(v6);
  const float v9 = v7 * 30.0f;
  return v9;
}
)";
const char* const kCausal = R"(__device__ __forceinline__ bool mask_mod(int b, int h, int q, int kv,
                                         const FlexCaptured& cap) {
  const bool v4 = q >= kv;
  return v4;
}
)";
const char* const kDocument =
    R"(__device__ __forceinline__ bool mask_mod(int b, int h, int q, int kv,
                                         const FlexCaptured& cap) {
  const bool v4 = q >= kv;
  long long o6 = 0;
  const bool k6 = mf_index_dim(cap, 0, 0, static_cast<long long>(kv), o6);
  const int v6 = k6 ? static_cast<const int*>(cap.t[0].data)[o6] : 0;
  long long o7 = 0;
  const bool k7 = mf_index_dim(cap, 0, 0, static_cast<long long>(q), o7);
  const int v7 = k7 ? static_cast<const int*>(cap.t[0].data)[o7] : 0;
  const bool v8 = v7 == v6;
  const bool v9 = v8 && v4;
  return v9;
}
)";
const char* const kRelbias =
    R"(__device__ __forceinline__ float score_mod(float score, int b, int h, int q, int kv,
                                           const FlexCaptured& cap) {
  const int v5 = q - kv;
  const int v7 = v5 + 5;
  long long o9 = 0;
  const bool k9 = mf_index_dim(cap, 0, 0, static_cast<long long>(v7), o9);
  const float v9 = k9 ? static_cast<const float*>(cap.t[0].data)[o9] : 0.0f;
  const float v10 = score + v9;
  return v10;
}
)";

// ALiBi: a float64 slope per head read from a captured tensor; the score promotes to double.
TEST(FlexCodegen, Alibi) {
  T slopes = mf::from_vector(std::vector<double>{0.5, 0.25, 0.125, 0.0625});
  EXPECT_EQ(score_src([slopes](const T& s, const T&, const T& h, const T& q, const T& kv) {
              return s + slopes.index({h}) * (kv - q);
            }),
            kAlibi);
}

TEST(FlexCodegen, Softcap) {
  EXPECT_EQ(score_src([](const T& s, const T&, const T&, const T&, const T&) {
              return mf::tanh(s / 30.0) * 30.0;
            }),
            kSoftcap);
}

TEST(FlexCodegen, Causal) {
  EXPECT_EQ(mask_src([](const T&, const T&, const T& q, const T& kv) { return q >= kv; }), kCausal);
}

TEST(FlexCodegen, DocumentMask) {
  T doc = mf::from_vector(std::vector<int64_t>{0, 0, 1, 1, 1, 2}, {6}, {.dtype = mf::DType::Int32});
  EXPECT_EQ(mask_src([doc](const T&, const T&, const T& q, const T& kv) {
              return mf::logical_and(doc.index({q}) == doc.index({kv}), q >= kv);
            }),
            kDocument);
}

const char* const kDocumentSplit =
    R"(#define MF_MASK_PAIR_GATHERS 0
struct MfMaskQ {
  int v7;
};
struct MfMaskKv {
  int v6;
};
__device__ __forceinline__ MfMaskQ mask_mod_shfl(const MfMaskQ& x, int lane) {
  MfMaskQ r;
  r.v7 = __shfl_sync(0xffffffffu, x.v7, lane);
  return r;
}
__device__ __forceinline__ MfMaskKv mask_mod_shfl(const MfMaskKv& x, int lane) {
  MfMaskKv r;
  r.v6 = __shfl_sync(0xffffffffu, x.v6, lane);
  return r;
}
__device__ __forceinline__ MfMaskQ mask_mod_q(int b, int h, int q, const FlexCaptured& cap) {
  long long o7 = 0;
  const bool k7 = mf_index_dim(cap, 0, 0, static_cast<long long>(q), o7);
  const int v7 = k7 ? static_cast<const int*>(cap.t[0].data)[o7] : 0;
  MfMaskQ r;
  r.v7 = v7;
  return r;
}
__device__ __forceinline__ MfMaskKv mask_mod_kv(int b, int h, int kv, const FlexCaptured& cap) {
  long long o6 = 0;
  const bool k6 = mf_index_dim(cap, 0, 0, static_cast<long long>(kv), o6);
  const int v6 = k6 ? static_cast<const int*>(cap.t[0].data)[o6] : 0;
  MfMaskKv r;
  r.v6 = v6;
  return r;
}
__device__ __forceinline__ bool mask_mod_pair(int b, int h, int q, int kv, const MfMaskQ& qv,
                                              const MfMaskKv& kvv, const FlexCaptured& cap) {
  const bool v4 = q >= kv;
  const bool v8 = qv.v7 == kvv.v6;
  const bool v9 = v8 && v4;
  return v9;
}
)";

std::string split_src(const mf::MaskMod& f) {
  return cg::generate_mask_mod_split(mf::trace_mask_mod(f, mf::Device::cpu()).graph());
}

// Split (Note [Split mask_mod]): each doc read moves to its own side; the pair function
// only compares.
TEST(FlexCodegen, DocumentMaskSplit) {
  T doc = mf::from_vector(std::vector<int64_t>{0, 0, 1, 1, 1, 2}, {6}, {.dtype = mf::DType::Int32});
  EXPECT_EQ(split_src([doc](const T&, const T&, const T& q, const T& kv) {
              return mf::logical_and(doc.index({q}) == doc.index({kv}), q >= kv);
            }),
            kDocumentSplit);
}

// A mask on the key alone (a per-batch length): the per-batch read is uniform, so it is
// repeated on the key side, and the pair function returns the key side's value.
TEST(FlexCodegen, KeyOnlyMaskSplit) {
  T len = mf::from_vector(std::vector<int64_t>{5, 3}, {2}, {.dtype = mf::DType::Int64});
  const std::string src =
      split_src([len](const T& b, const T&, const T&, const T& kv) { return kv < len.index({b}); });
  EXPECT_NE(src.find("struct MfMaskQ {\n};"), std::string::npos) << src;
  EXPECT_NE(src.find("static_cast<long long>(b)"), std::string::npos) << src;
  const size_t pair = src.find("mask_mod_pair");
  ASSERT_NE(pair, std::string::npos) << src;
  EXPECT_EQ(src.find("mf_index_dim", pair), std::string::npos) << src;
  EXPECT_NE(src.find("return kvv.v", pair), std::string::npos) << src;
  // The bool field crosses lanes as an int; the pair function reads nothing.
  EXPECT_NE(src.find("__shfl_sync(0xffffffffu, static_cast<int>(x.v"), std::string::npos) << src;
  EXPECT_EQ(src.rfind("#define MF_MASK_PAIR_GATHERS 0", 0), 0u) << src;
}

// A per-element table read stays in the pair function, which then gathers.
TEST(FlexCodegen, TableMaskSplit) {
  T table = mf::from_vector(std::vector<int64_t>{1, 0, 0, 1}, {2, 2}, {.dtype = mf::DType::Bool});
  const std::string src = split_src([table](const T&, const T&, const T& q, const T& kv) {
    return table.index({q, kv});
  });
  EXPECT_EQ(src.rfind("#define MF_MASK_PAIR_GATHERS 1", 0), 0u) << src;
  const size_t pair = src.find("mask_mod_pair");
  ASSERT_NE(pair, std::string::npos) << src;
  EXPECT_NE(src.find("mf_index_dim", pair), std::string::npos) << src;
  EXPECT_EQ(src.find("mf_index_dim"), src.find("mf_index_dim", pair)) << src;
}

// A mask_mod that reads a captured 0-d tensor as a whole (here in a term of q and kv) gets
// the generator's error from the split too.
TEST(FlexCodegen, SplitRejectsWholeCapturedRead) {
  T limit = mf::from_vector(std::vector<int64_t>{3}, {}, {.dtype = mf::DType::Int64});
  mftest::expect_error(
      [&] {
        split_src([limit](const T&, const T&, const T& q, const T& kv) { return q - kv < limit; });
      },
      {"flex_attention: cannot generate GPU code for", "mask_mod"});
}

// & | ^ ~ on bool values (PyTorch users write masks this way) and on integers.
TEST(FlexCodegen, BitwiseOps) {
  EXPECT_EQ(mask_src([](const T&, const T&, const T& q, const T& kv) {
              const T causal = q >= kv;  // one operand per statement: a fixed node order
              const T far = ~(q > kv + 3);
              return causal & far;
            }),
            "__device__ __forceinline__ bool mask_mod(int b, int h, int q, int kv,\n"
            "                                         const FlexCaptured& cap) {\n"
            "  const bool v4 = q >= kv;\n"
            "  const int v6 = kv + 3;\n"
            "  const bool v7 = q > v6;\n"
            "  const bool v8 = !v7;\n"
            "  const bool v9 = v4 & v8;\n"
            "  return v9;\n"
            "}\n");
  const std::string src = mask_src(
      [](const T&, const T&, const T& q, const T& kv) { return ((q ^ kv) | (q & kv)) > 2; });
  for (const char* part : {"q ^ kv", "q & kv", " | "})
    EXPECT_NE(src.find(part), std::string::npos) << part << " missing in\n" << src;
}

// bias[q - kv + N]: the index is computed in int32 and widened for the bounds check.
TEST(FlexCodegen, RelativeBias) {
  T bias = mf::from_vector(std::vector<double>(11, 0.5), {11}, {.dtype = mf::DType::Float32});
  EXPECT_EQ(score_src([bias](const T& s, const T&, const T&, const T& q, const T& kv) {
              return s + bias.index({q - kv + 5});
            }),
            kRelbias);
}

// Constants, casts, where and the NaN-propagating helpers.
TEST(FlexCodegen, MixedOps) {
  const std::string src = score_src([](const T& s, const T& b, const T&, const T& q, const T& kv) {
    T x = mf::where(q > kv, mf::maximum(s, s * 0.5), -s);
    return mf::exp2(x.to(mf::DType::BFloat16).to(mf::DType::Float32)) + b;
  });
  for (const char* part : {"mf_maximum(", "mf_round_bf16(", "exp2f(", "q > kv;", " ? "})
    EXPECT_NE(src.find(part), std::string::npos) << part << " missing in\n" << src;
  EXPECT_EQ(cg::uses_index(mf::trace_score_mod(
                               [](const T& s, const T&, const T&, const T&, const T&) { return s; },
                               mf::DType::Float32, mf::Device::cpu())
                               .graph()),
            false);
}

TEST(FlexCodegen, Errors) {
  // An op the generator has no code for.
  T w = mf::from_vector(std::vector<double>{1, 2, 3, 4}, {2, 2});
  mftest::expect_error(
      [&] {
        score_src(
            [w](const T& s, const T&, const T&, const T&, const T&) { return s + mf::gelu(s); });
      },
      {"flex_attention: cannot generate GPU code for op 'gelu' in score_mod", "dense path"});
  // A partial index (the result would not be a scalar) reads a whole row.
  mftest::expect_error(
      [&] {
        score_src([w](const T& s, const T&, const T& h, const T& q, const T&) {
          return s + w.index({h}).index({q});
        });
      },
      {"cannot generate GPU code for op 'index' in score_mod", "non-scalar"});
  // Work on a whole captured tensor before the gather.
  mftest::expect_error(
      [&] {
        score_src([w](const T& s, const T&, const T& h, const T& q, const T&) {
          return s + (w * 2.0).index({h, q});
        });
      },
      {"cannot generate GPU code for op 'mul' in score_mod", "non-scalar"});
}

}  // namespace

namespace {

bool mask_in_range(const mf::MaskMod& f, std::vector<int64_t> extents) {
  return cg::indices_in_range(mf::trace_mask_mod(f, mf::Device::cpu()).graph(), 0, extents);
}
bool score_in_range(const mf::ScoreMod& f, std::vector<int64_t> extents) {
  return cg::indices_in_range(mf::trace_score_mod(f, mf::DType::Float32, mf::Device::cpu()).graph(),
                              1, extents);
}

}  // namespace

// The interval pass that lets the launcher skip the fault read-back: extents {B, H, M, N};
// each case is checked on both sides of the boundary where a read leaves the tensor.
TEST(FlexCodegen, IndicesInRange) {
  const auto i64 = mf::DType::Int64;
  T doc = mf::from_vector(std::vector<int64_t>(97, 0), {97}, {.dtype = i64});
  mf::MaskMod document = [doc](const T&, const T&, const T& q, const T& kv) {
    return doc.index({q}) == doc.index({kv});
  };
  EXPECT_TRUE(mask_in_range(document, {2, 4, 97, 97}));
  EXPECT_FALSE(mask_in_range(document, {2, 4, 97, 98}));
  EXPECT_FALSE(mask_in_range(document, {2, 4, 98, 97}));

  T slopes = mf::from_vector(std::vector<double>{0.5, 0.25, 0.125, 0.0625});
  mf::ScoreMod alibi = [slopes](const T& s, const T&, const T& h, const T& q, const T& kv) {
    return s + slopes.index({h}) * (kv - q);
  };
  EXPECT_TRUE(score_in_range(alibi, {3, 4, 1025, 59}));
  EXPECT_FALSE(score_in_range(alibi, {3, 5, 1025, 59}));

  // bias[q - kv + N] over 2N + 1 entries (N = 59): q - kv + 59 lies in [1, M + 58].
  T bias = mf::from_vector(std::vector<float>(119, 0.0f));
  mf::ScoreMod relbias = [bias](const T& s, const T&, const T&, const T& q, const T& kv) {
    return s + bias.index({q - kv + 59});
  };
  EXPECT_TRUE(score_in_range(relbias, {1, 1, 60, 59}));
  EXPECT_FALSE(score_in_range(relbias, {1, 1, 61, 59}));
  // Negative indices wrap: bias[kv - q] reads -(M - 1) .. N - 1.
  mf::ScoreMod wrapped = [bias](const T& s, const T&, const T&, const T& q, const T& kv) {
    return s + bias.index({kv - q});
  };
  EXPECT_TRUE(score_in_range(wrapped, {1, 1, 120, 119}));
  EXPECT_FALSE(score_in_range(wrapped, {1, 1, 121, 119}));

  // remainder / floor_divide by a constant, clamp, where and abs.
  T table = mf::from_vector(std::vector<int64_t>(8, 1), {8}, {.dtype = i64});
  EXPECT_TRUE(mask_in_range([table](const T&, const T&, const T& q,
                                    const T&) { return table.index({mf::remainder(q, 8)}) == 1; },
                            {1, 1, 5000, 5000}));
  EXPECT_TRUE(
      mask_in_range([table](const T&, const T&, const T& q,
                            const T&) { return table.index({mf::floor_divide(q, 1000)}) == 1; },
                    {1, 1, 8000, 1}));
  EXPECT_FALSE(
      mask_in_range([table](const T&, const T&, const T& q,
                            const T&) { return table.index({mf::floor_divide(q, 1000)}) == 1; },
                    {1, 1, 8001, 1}));
  EXPECT_TRUE(mask_in_range(
      [table](const T&, const T&, const T& q, const T& kv) {
        return table.index({mf::clamp(mf::abs(q - kv), 0, 7)}) == 1;
      },
      {1, 1, 300, 300}));
  EXPECT_TRUE(mask_in_range(
      [table](const T&, const T&, const T& q, const T& kv) {
        return table.index({mf::remainder(mf::where(q > kv, q - kv, kv - q), 8)}) == 1;
      },
      {1, 1, 300, 300}));
  // An index read from a captured tensor is data: never proven.
  T ids = mf::from_vector(std::vector<int64_t>(4, 0), {4}, {.dtype = i64});
  EXPECT_FALSE(mask_in_range([table, ids](const T&, const T&, const T& q,
                                          const T&) { return table.index({ids.index({q})}) == 1; },
                             {1, 1, 4, 4}));
}
