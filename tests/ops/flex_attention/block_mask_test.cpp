#include <chrono>

#include "ops/flex_attention/block_mask.h"
#include "test_util.h"

namespace mf = microflex;

namespace {
mf::MaskMod causal() {
  return [](const mf::Tensor&, const mf::Tensor&, const mf::Tensor& q, const mf::Tensor& kv) {
    return q >= kv;
  };
}
}  // namespace

TEST(BlockMask, CausalFieldsAndPicture) {
  // 300 x 300 with 128-blocks: 3 x 3 blocks, the last one a tail of 44.
  mf::BlockMask bm = mf::create_block_mask(causal(), 1, 1, 300, 300);
  EXPECT_EQ(bm.kv_num_blocks.sizes(), (mf::Shape{1, 1, 3}));
  EXPECT_EQ(bm.kv_indices.sizes(), (mf::Shape{1, 1, 3, 3}));
  // Diagonal blocks are partial, blocks below it full.
  EXPECT_EQ(bm.kv_num_blocks.to_vector<int32_t>(), (std::vector<int32_t>{1, 1, 1}));
  EXPECT_EQ(bm.full_kv_num_blocks.to_vector<int32_t>(), (std::vector<int32_t>{0, 1, 2}));
  EXPECT_EQ(bm.kv_indices.to_vector<int32_t>(),
            (std::vector<int32_t>{0, -1, -1, 1, -1, -1, 2, -1, -1}));
  EXPECT_EQ(bm.full_kv_indices.to_vector<int32_t>(),
            (std::vector<int32_t>{-1, -1, -1, 0, -1, -1, 0, 1, -1}));
  // Transposed lists for the backward: kv block 0 is full for q blocks 1 and 2.
  EXPECT_EQ(bm.q_num_blocks.to_vector<int32_t>(), (std::vector<int32_t>{1, 1, 1}));
  EXPECT_EQ(bm.full_q_num_blocks.to_vector<int32_t>(), (std::vector<int32_t>{2, 1, 0}));
  EXPECT_EQ(bm.full_q_indices.to_vector<int32_t>(),
            (std::vector<int32_t>{1, 2, -1, 2, -1, -1, -1, -1, -1}));
  EXPECT_EQ(bm.to_dense().to_vector<int32_t>(), (std::vector<int32_t>{1, 0, 0, 2, 1, 0, 2, 2, 1}));
  EXPECT_NEAR(bm.sparsity(), 100.0 * 3 / 9, 1e-9);
  EXPECT_EQ(bm.to_string(),
            "BlockMask(shape=(1, 1, 300, 300), block_size=128, sparsity=33.33%)\n"
            "(0, 0)\n"
            "░░    \n"
            "██░░  \n"
            "████░░\n");
}

TEST(BlockMask, BroadcastAndPerHeadMasks) {
  mf::MaskMod per_head = [](const mf::Tensor&, const mf::Tensor& h, const mf::Tensor& q,
                            const mf::Tensor& kv) { return (kv <= q) | (h == 1); };
  mf::BlockMask bm = mf::create_block_mask(per_head, 1, 2, 64, 64, mf::Device::cpu(), 32);
  EXPECT_EQ(bm.to_dense().to_vector<int32_t>(), (std::vector<int32_t>{1, 0, 2, 1, 2, 2, 2, 2}));
}

TEST(BlockMask, CombinatorsAndDenseMask) {
  mf::MaskMod window = [](const mf::Tensor&, const mf::Tensor&, const mf::Tensor& q,
                          const mf::Tensor& kv) { return (q - kv) < 3; };
  mf::Tensor m = mf::create_mask(mf::and_masks(causal(), window), 1, 1, 6, 6);
  mf::Tensor o = mf::create_mask(mf::or_masks(causal(), window), 1, 1, 6, 6);
  mf::Tensor n = mf::create_mask(mf::noop_mask(), 2, 1, 3, 4);
  EXPECT_EQ(n.sizes(), (mf::Shape{2, 1, 3, 4}));
  for (bool x : n.to_vector<bool>()) EXPECT_TRUE(x);
  const auto mv = m.to_vector<bool>(), ov = o.to_vector<bool>();
  for (int q = 0; q < 6; ++q)
    for (int kv = 0; kv < 6; ++kv) {
      EXPECT_EQ(mv[q * 6 + kv], q >= kv && q - kv < 3);
      EXPECT_EQ(ov[q * 6 + kv], q >= kv || q - kv < 3);
    }
}

TEST(BlockMask, AdjustKeepsLeadingBlocks) {
  mf::BlockMask bm = mf::create_block_mask(causal(), 1, 1, 512, 512);
  mf::BlockMask a = bm.adjust(200, 300);
  EXPECT_EQ(a.q_len, 200);
  EXPECT_EQ(a.kv_len, 300);
  EXPECT_EQ(a.to_dense().to_vector<int32_t>(), (std::vector<int32_t>{1, 0, 0, 2, 1, 0}));
  mftest::expect_error([&] { bm.adjust(600, 10); }, {"BlockMask::adjust", "600x10", "512x512"});
}

TEST(BlockMask, BadArguments) {
  mftest::expect_error([&] { mf::create_block_mask(causal(), 1, 1, 0, 8); },
                       {"create_block_mask", "0"});
  mf::MaskMod wrong = [](const mf::Tensor&, const mf::Tensor&, const mf::Tensor&,
                         const mf::Tensor&) { return mf::ones({3}, {.dtype = mf::DType::Bool}); };
  mftest::expect_error([&] { mf::create_block_mask(wrong, 1, 1, 8, 8); },
                       {"create_block_mask: mask_mod returned shape", "[1, 1, 8, 8]"});
}

// A 32768 x 32768 causal mask is built in row chunks, never as one M x N tensor.
TEST(BlockMask, LongSequencesBuildInSeconds) {
  const auto t0 = std::chrono::steady_clock::now();
  mf::BlockMask bm = mf::create_block_mask(causal(), 1, 1, 32768, 32768);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(bm.num_q_blocks(), 256);
  EXPECT_NEAR(bm.sparsity(), 100.0 * (1.0 - (256.0 * 257 / 2) / (256.0 * 256)), 1e-9);
  EXPECT_LT(secs, 30.0) << "took " << secs << " s";
  RecordProperty("build_seconds", std::to_string(secs));
}
