#include <chrono>
#include <optional>
#include <random>

#include "ops/flex_attention/block_mask.h"
#include "ops/flex_attention/flex_attention.h"
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

namespace {

// Every field of two masks, the 8 tensors compared by shape and value.
void expect_same_mask(const mf::BlockMask& a, const mf::BlockMask& e, const std::string& what) {
  EXPECT_EQ(a.q_len, e.q_len) << what;
  EXPECT_EQ(a.kv_len, e.kv_len) << what;
  EXPECT_EQ(a.q_block_size, e.q_block_size) << what;
  EXPECT_EQ(a.kv_block_size, e.kv_block_size) << what;
  const std::vector<std::pair<const char*, std::pair<mf::Tensor, mf::Tensor>>> fields{
      {"kv_num_blocks", {a.kv_num_blocks, e.kv_num_blocks}},
      {"kv_indices", {a.kv_indices, e.kv_indices}},
      {"full_kv_num_blocks", {a.full_kv_num_blocks, e.full_kv_num_blocks}},
      {"full_kv_indices", {a.full_kv_indices, e.full_kv_indices}},
      {"q_num_blocks", {a.q_num_blocks, e.q_num_blocks}},
      {"q_indices", {a.q_indices, e.q_indices}},
      {"full_q_num_blocks", {a.full_q_num_blocks, e.full_q_num_blocks}},
      {"full_q_indices", {a.full_q_indices, e.full_q_indices}},
      {"to_dense", {a.to_dense(), e.to_dense()}}};
  for (const auto& [name, t] : fields) {
    ASSERT_EQ(t.first.sizes(), t.second.sizes()) << what << " " << name;
    EXPECT_EQ(t.first.to_vector<int32_t>(), t.second.to_vector<int32_t>()) << what << " " << name;
  }
}

constexpr int64_t kLen = 389;  // not a multiple of 64 or 128: the last query block is a tail

// Document ids per batch with different boundaries, so rows differ between batches.
mf::Tensor document_ids(int64_t B, int64_t M) {
  std::vector<int32_t> ids(B * M);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t m = 0; m < M; ++m) ids[b * M + m] = static_cast<int32_t>(m / (70 + 45 * b));
  return mf::from_vector(ids, {B, M});
}

// Same document and causal, except head 1, which sees its whole document.
mf::MaskMod document_mask(const mf::Tensor& doc) {
  return
      [doc](const mf::Tensor& b, const mf::Tensor& h, const mf::Tensor& q, const mf::Tensor& kv) {
        return (doc.index({b, q}) == doc.index({b, kv})) & ((q >= kv) | (h == 1));
      };
}

mf::MaskMod sliding_window() {
  return mf::and_masks(causal(), [](const mf::Tensor&, const mf::Tensor&, const mf::Tensor& q,
                                    const mf::Tensor& kv) { return (q - kv) < 100; });
}

mf::Tensor index_const(int64_t i) {
  return mf::full({1, 1, 1, 1}, i, {.dtype = mf::DType::Int32});
}

// The sub-problem's mask_mod: batch b (or all when B is kept), head h (or all), query rows
// from `offset` on.
mf::MaskMod sub_mod(const mf::MaskMod& mm, std::optional<int64_t> b, std::optional<int64_t> h,
                    int64_t offset) {
  return
      [=](const mf::Tensor& bi, const mf::Tensor& hi, const mf::Tensor& q, const mf::Tensor& kv) {
        return mm(b ? index_const(*b) : bi, h ? index_const(*h) : hi, q + offset, kv);
      };
}

// A slice against the sub-problem's mask built directly: the 8 tensors, and the dense mask
// of the wrapped mask_mod.
void expect_slice(const mf::BlockMask& sliced, const mf::MaskMod& mm, int64_t B, int64_t H,
                  std::optional<int64_t> b, std::optional<int64_t> h, int64_t offset, int64_t M,
                  int64_t bs, const std::string& what) {
  const mf::MaskMod sub = sub_mod(mm, b, h, offset);
  const int64_t sb = b ? 1 : B, sh = h ? 1 : H;
  expect_same_mask(sliced, mf::create_block_mask(sub, sb, sh, M, kLen, mf::Device::cpu(), bs),
                   what);
  // Dense masks are the slow part: one block size and the masks with a selected batch or
  // head suffice (they wrap the query offset too).
  if (bs == 128 && (b || h))
    EXPECT_EQ(mf::create_mask(sliced.mask_mod, sb, sh, M, kLen).to_vector<bool>(),
              mf::create_mask(sub, sb, sh, M, kLen).to_vector<bool>())
        << what << " mask_mod";
}

}  // namespace

TEST(BlockMask, SliceQBlocksRecomputesTransposedLists) {
  // Causal 389 x 389 in 128-blocks; rows of blocks 1 and 2: q rows 128..383.
  mf::BlockMask s = mf::create_block_mask(causal(), 1, 1, kLen, kLen).slice_q_blocks(1, 3);
  EXPECT_EQ(s.q_len, 256);
  EXPECT_EQ(s.kv_len, kLen);
  EXPECT_EQ(s.to_dense().to_vector<int32_t>(), (std::vector<int32_t>{2, 1, 0, 0, 2, 2, 1, 0}));
  EXPECT_EQ(s.q_num_blocks.to_vector<int32_t>(), (std::vector<int32_t>{0, 1, 1, 0}));
  EXPECT_EQ(s.q_indices.sizes(), (mf::Shape{1, 1, 4, 2}));
  EXPECT_EQ(s.q_indices.to_vector<int32_t>(), (std::vector<int32_t>{-1, -1, 0, -1, 1, -1, -1, -1}));
  EXPECT_EQ(s.full_q_num_blocks.to_vector<int32_t>(), (std::vector<int32_t>{2, 1, 0, 0}));
  EXPECT_EQ(s.full_q_indices.to_vector<int32_t>(),
            (std::vector<int32_t>{0, 1, 1, -1, -1, -1, -1, -1}));
  // The wrapped mask_mod sees the original row indices: its mask is rows 128..383 of causal.
  const auto d = mf::create_mask(s.mask_mod, 1, 1, 256, kLen).to_vector<bool>();
  for (int64_t q = 0; q < 256; q += 17)
    for (int64_t kv = 0; kv < kLen; kv += 13)
      EXPECT_EQ(d[q * kLen + kv], q + 128 >= kv) << q << ", " << kv;
}

TEST(BlockMask, SlicesEqualMasksBuiltForTheSubProblem) {
  const int64_t B = 2, H = 3;
  const std::vector<std::pair<const char*, mf::MaskMod>> masks{
      {"causal", causal()},
      {"sliding_window", sliding_window()},
      {"document", document_mask(document_ids(B, kLen))}};
  for (const int64_t bs : {int64_t{128}, int64_t{64}}) {
    const int64_t Mb = (kLen + bs - 1) / bs;
    for (const auto& [name, mm] : masks) {
      const mf::BlockMask bm = mf::create_block_mask(mm, B, H, kLen, kLen, mf::Device::cpu(), bs);
      const std::string tag = std::string(name) + " bs " + std::to_string(bs);
      // Query block ranges: the tail included, interior, negative bounds, a single block.
      const std::vector<std::pair<int64_t, std::optional<int64_t>>> ranges{
          {1, std::nullopt}, {1, 3}, {-2, -1}, {0, 1}, {-1, std::nullopt}};
      for (const auto& [s, e] : ranges) {
        const int64_t s0 = s < 0 ? s + Mb : s, e0 = !e ? Mb : *e < 0 ? *e + Mb : *e;
        const int64_t offset = s0 * bs, M = std::min(e0 * bs, kLen) - offset;
        const std::string where =
            tag + " blocks [" + std::to_string(s0) + ", " + std::to_string(e0) + ")";
        expect_slice(bm.slice_q_blocks(s, e), mm, B, H, {}, {}, offset, M, bs, where);
        expect_slice(bm.select_batch(1).select_head(-1).slice_q_blocks(s, e), mm, B, H, 1, 2,
                     offset, M, bs, where + " b 1 h 2");
      }
      expect_slice(bm.select_batch(-2), mm, B, H, 0, {}, 0, kLen, bs, tag + " b 0");
      expect_slice(bm.select_head(1), mm, B, H, {}, 1, 0, kLen, bs, tag + " h 1");
    }
  }
}

TEST(BlockMask, SelectOnBroadcastDimensionKeepsTheMask) {
  mf::BlockMask bm = mf::create_block_mask(causal(), 1, 2, 100, 100, mf::Device::cpu(), 32);
  mf::BlockMask s = bm.select_batch(0).select_head(1);
  EXPECT_EQ(s.batch(), 1);
  EXPECT_EQ(s.heads(), 1);
  expect_same_mask(s, mf::create_block_mask(causal(), 1, 1, 100, 100, mf::Device::cpu(), 32),
                   "b 0 h 1");
  expect_same_mask(bm.select_batch(-1), bm, "broadcast batch");
}

TEST(BlockMask, FlexAttentionOnSliceEqualsRowsOfFullResult) {
  const int64_t B = 2, H = 3, D = 16, bs = 64;
  std::mt19937 gen(11);
  std::normal_distribution<double> nd(0.0, 1.0);
  auto rnd = [&](const mf::Shape& s) {
    std::vector<double> v(static_cast<size_t>(mf::shape_numel(s)));
    for (auto& x : v) x = nd(gen);
    return mf::from_vector(v, s);
  };
  const mf::Tensor q = rnd({B, H, kLen, D}), k = rnd({B, H, kLen, D}), v = rnd({B, H, kLen, D});
  const mf::BlockMask bm = mf::create_block_mask(document_mask(document_ids(B, kLen)), B, H, kLen,
                                                 kLen, mf::Device::cpu(), bs);
  auto attend = [](const mf::Tensor& q, const mf::Tensor& k, const mf::Tensor& v,
                   const mf::BlockMask& m) {
    return mf::flex_attention(q, k, v, {.block_mask = m, .kernel = mf::FlexKernel::Dense}).out;
  };
  const mf::Tensor full = attend(q, k, v, bm);
  // float64 throughout: the same sums in the same order, up to rounding of the softmax.
  for (const auto& [s, e] : std::vector<std::pair<int64_t, int64_t>>{{2, 7}, {1, 3}, {0, 1}}) {
    const int64_t r0 = s * bs, r1 = std::min(e * bs, kLen);
    const std::string where = "blocks [" + std::to_string(s) + ", " + std::to_string(e) + ")";
    mftest::expect_close(attend(q.slice(2, r0, r1), k, v, bm.slice_q_blocks(s, e)),
                         full.slice(2, r0, r1), 1e-12, 1e-12, where);
    // Batch 1, head 0: also the matching k and v.
    auto bh = [](const mf::Tensor& t) { return t.slice(0, 1, 2).slice(1, 0, 1); };
    mftest::expect_close(attend(bh(q).slice(2, r0, r1), bh(k), bh(v),
                                bm.select_batch(1).select_head(0).slice_q_blocks(s, e)),
                         bh(full).slice(2, r0, r1), 1e-12, 1e-12, where + " b 1 h 0");
  }
}

TEST(BlockMask, AdjustShrinksAndRejectsGrowth) {
  const mf::BlockMask bm = mf::create_block_mask(document_mask(document_ids(2, kLen)), 2, 3, kLen,
                                                 kLen, mf::Device::cpu(), 64);
  const mf::BlockMask a = bm.adjust(200, 300);
  EXPECT_EQ(a.q_len, 200);
  EXPECT_EQ(a.kv_len, 300);
  EXPECT_EQ(a.to_dense().sizes(), (mf::Shape{2, 3, 4, 5}));
  // The leading 4 x 5 blocks of every (b, h).
  const auto ad = a.to_dense().to_vector<int32_t>(), fd = bm.to_dense().to_vector<int32_t>();
  for (int64_t bh = 0; bh < 6; ++bh)
    for (int64_t m = 0; m < 4; ++m)
      for (int64_t n = 0; n < 5; ++n) EXPECT_EQ(ad[(bh * 4 + m) * 5 + n], fd[(bh * 7 + m) * 7 + n]);
  mftest::expect_error([&] { bm.adjust(390, 389); }, {"BlockMask::adjust", "390x389", "389x389"});
  mftest::expect_error([&] { bm.adjust(389, 400); }, {"BlockMask::adjust", "389x400", "389x389"});
  mftest::expect_error([&] { bm.adjust(0, 10); }, {"BlockMask::adjust", "0x10"});
}

TEST(BlockMask, SliceBadArguments) {
  const mf::BlockMask bm = mf::create_block_mask(causal(), 2, 3, kLen, kLen);  // 4 query blocks
  mftest::expect_error([&] { bm.select_batch(2); },
                       {"BlockMask::select_batch", "batch index 2", "B = 2"});
  mftest::expect_error([&] { bm.select_batch(-3); }, {"BlockMask::select_batch", "-3", "B = 2"});
  mftest::expect_error([&] { bm.select_head(3); },
                       {"BlockMask::select_head", "head index 3", "H = 3"});
  mftest::expect_error([&] { bm.select_batch(0).select_batch(1); },
                       {"BlockMask::select_batch", "1", "B = 1"});
  mftest::expect_error([&] { bm.slice_q_blocks(2, 2); },
                       {"BlockMask::slice_q_blocks", "[2, 2)", "4 query blocks", "q_len 389"});
  mftest::expect_error([&] { bm.slice_q_blocks(0, 5); },
                       {"BlockMask::slice_q_blocks", "[0, 5)", "4 query blocks"});
  mftest::expect_error([&] { bm.slice_q_blocks(-5); },
                       {"BlockMask::slice_q_blocks", "[-5, end)", "4 query blocks"});
  mftest::expect_error([&] { bm.slice_q_blocks(3, 1); },
                       {"BlockMask::slice_q_blocks", "[3, 1)", "block size 128"});
}
