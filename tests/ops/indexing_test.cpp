// index (broadcasting index tensors, the flex_attention captured-buffer pattern,
// negative and duplicate indices), gather, index_select, embedding and masked_fill
// against naive float64 references; gradcheck for each; errors.
#include <random>

#include "test_util.h"

namespace mf = microflex;
using mf::DType;
using mf::Shape;
using mf::Tensor;

namespace {

Tensor random_tensor(const Shape& shape, uint32_t seed, DType dt = DType::Float64) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<double> u(-2.0, 2.0);
  std::vector<double> v(static_cast<size_t>(mf::shape_numel(shape)));
  for (double& x : v) x = u(gen);
  return mf::from_vector(v, shape, {.dtype = DType::Float64}).to(dt);
}

// Integers in [lo, hi], as int64 unless dt says otherwise.
Tensor random_ids(const Shape& shape, int64_t lo, int64_t hi, uint32_t seed,
                  DType dt = DType::Int64) {
  std::mt19937 gen(seed);
  std::uniform_int_distribution<int64_t> u(lo, hi);
  std::vector<int64_t> v(static_cast<size_t>(mf::shape_numel(shape)));
  for (int64_t& x : v) x = u(gen);
  return mf::from_vector(v, shape, {.dtype = DType::Int64}).to(dt);
}

Tensor requires_grad(Tensor t) {
  t.requires_grad_();
  return t;
}

Tensor ids(const std::vector<int64_t>& v, const Shape& shape) {
  return mf::from_vector(v, shape, {.dtype = DType::Int64});
}

Tensor bools(const std::vector<bool>& v, const Shape& shape) {
  return mf::from_vector(v, shape, {.dtype = DType::Bool});
}

int64_t wrap(int64_t i, int64_t n) {
  return i < 0 ? i + n : i;
}

// Row-major flat index of `idx` in `shape`, broadcasting size-1 dims (right-aligned).
int64_t flat_broadcast(const Shape& idx, const Shape& shape) {
  int64_t f = 0;
  const size_t lead = idx.size() - shape.size();
  for (size_t d = 0; d < shape.size(); ++d) f = f * shape[d] + (shape[d] == 1 ? 0 : idx[lead + d]);
  return f;
}

Shape unflatten(int64_t flat, const Shape& shape) {
  Shape idx(shape.size());
  for (size_t d = shape.size(); d-- > 0;) {
    idx[d] = flat % shape[d];
    flat /= shape[d];
  }
  return idx;
}

// Naive advanced indexing over the leading dims (the index shapes broadcast to P).
std::vector<double> ref_index(const Tensor& t, const std::vector<Tensor>& idx, const Shape& P) {
  const std::vector<double> tv = t.to_vector<double>();
  std::vector<std::vector<int64_t>> iv;
  for (const Tensor& i : idx) iv.push_back(i.to_vector<int64_t>());
  int64_t inner = 1;
  for (size_t d = idx.size(); d < t.sizes().size(); ++d) inner *= t.sizes()[d];
  std::vector<double> out;
  for (int64_t p = 0; p < mf::shape_numel(P); ++p) {
    const Shape pi = unflatten(p, P);
    int64_t row = 0;
    for (size_t j = 0; j < idx.size(); ++j)
      row = row * t.sizes()[j] +
            wrap(iv[j][static_cast<size_t>(flat_broadcast(pi, idx[j].sizes()))], t.sizes()[j]);
    for (int64_t i = 0; i < inner; ++i) out.push_back(tv[static_cast<size_t>(row * inner + i)]);
  }
  return out;
}

}  // namespace

TEST(Indexing, IndexFlexAttentionPattern) {
  // score_mod reads a captured bias [M, N] with q_idx [1,1,M,1] and kv_idx [1,1,1,N].
  const int64_t M = 5, N = 7;
  const Tensor bias = random_tensor({M, N}, 1);
  const Tensor q_idx = mf::arange(M, {.dtype = DType::Int32}).view({1, 1, M, 1});
  const Tensor kv_idx = mf::arange(N).view({1, 1, 1, N});
  const Tensor s = bias.index({q_idx, kv_idx});
  ASSERT_EQ(s.sizes(), (Shape{1, 1, M, N}));
  EXPECT_EQ(s.to_vector<double>(), bias.to_vector<double>());
  // Same through the free function, with permuted and negative indices.
  const Tensor qp = random_ids({1, 1, M, 1}, -M, M - 1, 2);
  const Tensor kp = random_ids({1, 1, 1, N}, -N, N - 1, 3, DType::Int32);
  const Tensor s2 = mf::index(bias, {qp, kp});
  EXPECT_EQ(s2.to_vector<double>(), ref_index(bias, {qp, kp}, {1, 1, M, N}));
}

TEST(Indexing, IndexLeadingDimsAndTrailingRows) {
  // t [4, 5, 3] indexed on dims 0 and 1 by [2, 1] and [6]: out [2, 6, 3].
  const Tensor t = random_tensor({4, 5, 3}, 4);
  const Tensor i = random_ids({2, 1}, -4, 3, 5), j = random_ids({6}, -5, 4, 6);
  const Tensor out = t.index({i, j});
  ASSERT_EQ(out.sizes(), (Shape{2, 6, 3}));
  EXPECT_EQ(out.to_vector<double>(), ref_index(t, {i, j}, {2, 6}));
  // One index: whole [5, 3] blocks; a 0-d index drops the dim.
  const Tensor k = random_ids({3, 2}, 0, 3, 7);
  EXPECT_EQ(t.index({k}).sizes(), (Shape{3, 2, 5, 3}));
  EXPECT_EQ(t.index({k}).to_vector<double>(), ref_index(t, {k}, {3, 2}));
  const Tensor z = mf::scalar_tensor(2, {.dtype = DType::Int64});
  EXPECT_EQ(t.index({z}).sizes(), (Shape{5, 3}));
  EXPECT_EQ(t.index({z}).to_vector<double>(), t.select(0, 2).contiguous().to_vector<double>());
  // Non-contiguous source and index.
  const Tensor tt = random_tensor({3, 5, 4}, 8).permute({2, 1, 0});  // [4, 5, 3]
  const Tensor it = random_ids({6, 2}, 0, 3, 9).t();                 // [2, 6]
  ASSERT_FALSE(tt.is_contiguous());
  ASSERT_FALSE(it.is_contiguous());
  EXPECT_EQ(tt.index({it}).to_vector<double>(), ref_index(tt, {it}, {2, 6}));
}

TEST(Indexing, IndexEveryDtype) {
  // A gather copies values, so every dtype is exact.
  const Tensor i = random_ids({4, 1}, -3, 2, 10), j = random_ids({5}, 0, 3, 11);
  for (DType dt :
       {DType::Float32, DType::Float16, DType::BFloat16, DType::Int32, DType::Int64, DType::Bool}) {
    const Tensor t = random_tensor({3, 4, 2}, 12, dt);
    const Tensor out = t.index({i, j});
    EXPECT_EQ(out.dtype(), dt);
    EXPECT_EQ(out.to_vector<double>(), ref_index(t, {i, j}, {4, 5})) << mf::dtype_name(dt);
  }
}

TEST(Indexing, IndexGradientAccumulatesDuplicates) {
  const Tensor t = requires_grad(random_tensor({4, 3}, 13));
  const Tensor i = ids({0, 2, 0, 0, -1}, {5});
  const Tensor g = random_tensor({5, 3}, 14);
  t.index({i}).backward(g);
  const std::vector<double> gv = g.to_vector<double>();
  std::vector<double> ref(12, 0.0);
  const int64_t rows[] = {0, 2, 0, 0, 3};
  for (int p = 0; p < 5; ++p)
    for (int c = 0; c < 3; ++c) ref[rows[p] * 3 + c] += gv[p * 3 + c];
  mftest::expect_close(t.grad().to_vector<double>(), ref, 1e-12, 1e-12);
}

TEST(Indexing, IndexFlexPatternGradientReachesBias) {
  // Broadcasting over batch and heads reads every bias entry B * H times; its gradient
  // is the score gradient summed over them.
  const int64_t B = 2, H = 3, M = 4, N = 5;
  const Tensor bias = requires_grad(random_tensor({M, N}, 15));
  const Tensor q_idx = mf::arange(M).view({1, 1, M, 1}).expand({B, H, M, 1});
  const Tensor kv_idx = mf::arange(N, {.dtype = DType::Int32}).view({1, 1, 1, N});
  const Tensor g = random_tensor({B, H, M, N}, 16);
  bias.index({q_idx, kv_idx}).backward(g);
  const std::vector<double> gv = g.to_vector<double>();
  std::vector<double> ref(M * N, 0.0);
  for (int64_t p = 0; p < B * H; ++p)
    for (int64_t e = 0; e < M * N; ++e) ref[e] += gv[p * M * N + e];
  mftest::expect_close(bias.grad().to_vector<double>(), ref, 1e-12, 1e-12);
}

TEST(Indexing, IndexBackwardSixteenBitAndDeterminism) {
  // 16-bit gradients accumulate in float32 and round once: float16 rtol 1e-3,
  // bfloat16 rtol 1e-2 (half an ulp is 4.9e-4 and 3.9e-3).
  const Tensor i = random_ids({40}, 0, 2, 17);  // many duplicates
  const Tensor g64 = random_tensor({40, 2}, 18);
  for (auto [dt, tol] : {std::pair{DType::Float16, 1e-3}, std::pair{DType::BFloat16, 1e-2}}) {
    const Tensor g = g64.to(dt);
    const std::vector<double> gv = g.to_vector<double>();
    const std::vector<int64_t> iv = i.to_vector<int64_t>();
    std::vector<double> ref(6, 0.0);
    for (int p = 0; p < 40; ++p)
      for (int c = 0; c < 2; ++c) ref[iv[p] * 2 + c] += gv[p * 2 + c];
    const Tensor r = mf::index_backward(g, {i}, {3, 2});
    EXPECT_EQ(r.dtype(), dt);
    mftest::expect_close(r.to_vector<double>(), ref, tol, tol, mf::dtype_name(dt));
  }
  // A fixed accumulation order: float32 results are bitwise repeatable.
  const Tensor g32 = random_tensor({40, 2}, 19, DType::Float32);
  EXPECT_EQ(mf::index_backward(g32, {i}, {3, 2}).to_vector<float>(),
            mf::index_backward(g32, {i}, {3, 2}).to_vector<float>());
}

TEST(Indexing, IndexGradcheck) {
  const Tensor i = ids({1, -1, 1, 0}, {4, 1});
  const Tensor j = ids({2, 0, 2}, {3});
  auto fn = [&](const mf::TensorList& x) { return x[0].transpose(0, 1).index({i, j}); };
  const auto r = mf::gradcheck(fn, {requires_grad(random_tensor({3, 2, 2}, 20))});
  EXPECT_TRUE(r.ok) << r.message;
}

TEST(Indexing, Gather) {
  const Tensor t = random_tensor({4, 5, 3}, 21);
  const std::vector<double> tv = t.to_vector<double>();
  for (int64_t dim : {0, 1, 2, -1}) {
    const int64_t d = dim < 0 ? dim + 3 : dim;
    // Smaller than t in the other dims, larger along `dim`, with negative indices.
    Shape is = {3, 4, 2};
    is[d] = 6;
    const Tensor idx = random_ids(is, -t.sizes()[d], t.sizes()[d] - 1, 22 + d);
    const Tensor out = mf::gather(t, dim, idx);
    ASSERT_EQ(out.sizes(), is);
    const std::vector<int64_t> iv = idx.to_vector<int64_t>();
    std::vector<double> ref;
    for (int64_t p = 0; p < mf::shape_numel(is); ++p) {
      Shape pos = unflatten(p, is);
      pos[d] = wrap(iv[p], t.sizes()[d]);
      ref.push_back(tv[(pos[0] * 5 + pos[1]) * 3 + pos[2]]);
    }
    EXPECT_EQ(out.to_vector<double>(), ref) << "dim " << dim;
  }
  const Tensor idx = random_ids({2, 3}, 0, 2, 26);  // duplicates
  const auto r =
      mf::gradcheck([&](const mf::TensorList& x) { return mf::gather(x[0].t(), 1, idx); },
                    {requires_grad(random_tensor({3, 2}, 27))});
  EXPECT_TRUE(r.ok) << r.message;
}

TEST(Indexing, IndexSelect) {
  const Tensor t = random_tensor({4, 5, 3}, 28);
  const std::vector<double> tv = t.to_vector<double>();
  for (int64_t dim : {0, 1, 2, -2}) {
    const int64_t d = dim < 0 ? dim + 3 : dim;
    const Tensor idx = random_ids({7}, -t.sizes()[d], t.sizes()[d] - 1, 29 + d, DType::Int32);
    const Tensor out = mf::index_select(t, dim, idx);
    Shape os = t.sizes();
    os[d] = 7;
    ASSERT_EQ(out.sizes(), os);
    const std::vector<int64_t> iv = idx.to_vector<int64_t>();
    std::vector<double> ref;
    for (int64_t p = 0; p < mf::shape_numel(os); ++p) {
      Shape pos = unflatten(p, os);
      pos[d] = wrap(iv[pos[d]], t.sizes()[d]);
      ref.push_back(tv[(pos[0] * 5 + pos[1]) * 3 + pos[2]]);
    }
    EXPECT_EQ(out.to_vector<double>(), ref) << "dim " << dim;
  }
  EXPECT_EQ(mf::index_select(t, 1, mf::scalar_tensor(3, {.dtype = DType::Int64})).sizes(),
            (Shape{4, 1, 3}));
  const Tensor idx = ids({2, 0, 2, 1}, {4});
  const auto r = mf::gradcheck(
      [&](const mf::TensorList& x) { return mf::index_select(x[0].transpose(0, 2), 1, idx); },
      {requires_grad(random_tensor({2, 3, 3}, 32))});
  EXPECT_TRUE(r.ok) << r.message;
}

TEST(Indexing, Embedding) {
  const Tensor w = requires_grad(random_tensor({10, 4}, 33));
  const Tensor id = ids({3, 9, 3, 0, 3, 7}, {2, 3});
  const Tensor out = mf::embedding(w, id);
  ASSERT_EQ(out.sizes(), (Shape{2, 3, 4}));
  EXPECT_EQ(out.to_vector<double>(), ref_index(w, {id}, {2, 3}));
  const Tensor g = random_tensor({2, 3, 4}, 34);
  out.backward(g);
  std::vector<double> ref(40, 0.0);
  const std::vector<double> gv = g.to_vector<double>();
  const std::vector<int64_t> iv = id.to_vector<int64_t>();
  for (int p = 0; p < 6; ++p)
    for (int c = 0; c < 4; ++c) ref[iv[p] * 4 + c] += gv[p * 4 + c];
  mftest::expect_close(w.grad().to_vector<double>(), ref, 1e-12, 1e-12);
  const auto r = mf::gradcheck([&](const mf::TensorList& x) { return mf::embedding(x[0], id); },
                               {requires_grad(random_tensor({10, 3}, 35))});
  EXPECT_TRUE(r.ok) << r.message;
}

TEST(Indexing, MaskedFill) {
  const Tensor t = random_tensor({3, 4}, 36);
  const Tensor mask = bools({true, false, false, true}, {4});
  const Tensor mask3 = bools(
      {true, false, true, false, false, false, true, true, false, true, false, true}, {3, 1, 4});
  for (DType dt : {DType::Float64, DType::Float32, DType::Float16, DType::Int64}) {
    const Tensor x = t.to(dt);
    const std::vector<double> xv = x.to_vector<double>();
    const Tensor a = mf::masked_fill(x, mask, -7);
    ASSERT_EQ(a.dtype(), dt);
    std::vector<double> ref = xv;
    for (int e = 0; e < 12; ++e)
      if (e % 4 == 0 || e % 4 == 3) ref[e] = -7;
    EXPECT_EQ(a.to_vector<double>(), ref) << mf::dtype_name(dt);
    // Both operands broadcast: [3, 4] and [3, 1, 4] -> [3, 3, 4].
    const Tensor b = mf::masked_fill(x.t().t(), mask3, mf::scalar_tensor(2.5, {}));
    ASSERT_EQ(b.sizes(), (Shape{3, 3, 4}));
    const std::vector<bool> mv = {true, false, true,  false, false, false,
                                  true, true,  false, true,  false, true};
    const double fill = dt == DType::Int64 ? 2.0 : 2.5;
    for (int64_t p = 0; p < 36; ++p) {
      const Shape pos = unflatten(p, {3, 3, 4});
      const double want = mv[pos[0] * 4 + pos[2]] ? fill : xv[pos[1] * 4 + pos[2]];
      EXPECT_EQ(b.to_vector<double>()[p], want) << mf::dtype_name(dt) << " at " << p;
    }
  }
  // Gradients w.r.t. the input (zero where filled, summed over broadcast) and the value.
  const auto r = mf::gradcheck(
      [&](const mf::TensorList& x) { return mf::masked_fill(x[0].t(), mask3, x[1]); },
      {requires_grad(random_tensor({4, 3}, 37)), requires_grad(random_tensor({}, 38))});
  EXPECT_TRUE(r.ok) << r.message;
}

TEST(Indexing, ShapeRulesUnderFakeTensors) {
  auto fake = [](const Shape& s, DType dt) { return Tensor::make(s, dt, mf::Device::cpu(), true); };
  const Tensor bias = fake({5, 7}, DType::Float32);
  const Tensor s = bias.index({fake({1, 1, 5, 1}, DType::Int32), fake({1, 1, 1, 7}, DType::Int64)});
  EXPECT_TRUE(s.is_fake());
  EXPECT_EQ(s.sizes(), (Shape{1, 1, 5, 7}));
  EXPECT_EQ(mf::embedding(bias, fake({2, 3}, DType::Int64)).sizes(), (Shape{2, 3, 7}));
  EXPECT_EQ(mf::gather(bias, 1, fake({5, 2}, DType::Int64)).sizes(), (Shape{5, 2}));
  EXPECT_EQ(mf::index_select(bias, 1, fake({4}, DType::Int64)).sizes(), (Shape{5, 4}));
  EXPECT_EQ(mf::masked_fill(bias, fake({3, 1, 7}, DType::Bool), 0.0).sizes(), (Shape{3, 5, 7}));
  mftest::expect_error([&] { bias.index({fake({2}, DType::Float32)}); }, {"index", "float32"});
}

TEST(Indexing, Errors) {
  const Tensor t = random_tensor({5, 3}, 39);
  mftest::expect_error(
      [&] {
        t.index({ids({1, 7}, {2})});
      },
      {"index", "index 7", "dim 0", "size 5"});
  mftest::expect_error(
      [&] {
        t.index({ids({0}, {1}), ids({-4}, {1})});
      },
      {"index", "index -4", "dim 1", "size 3"});
  mftest::expect_error(
      [&] {
        t.index({ids({0}, {1}), ids({0}, {1}), ids({0}, {1})});
      },
      {"index", "too many indices (3)", "[5, 3]"});
  mftest::expect_error([&] { t.index({random_tensor({2}, 40)}); },
                       {"index", "index 0", "float64", "int32 or int64"});
  mftest::expect_error(
      [&] {
        t.index({ids({0, 1}, {2}), ids({0, 1, 2}, {3})});
      },
      {"index", "[2]", "[3]", "broadcast"});
  mftest::expect_error([&] { t.index({}); }, {"index", "at least one index"});
  mftest::expect_error(
      [&] {
        mf::gather(t, 1, ids({0, 1, 2}, {3}));
      },
      {"gather", "[3]", "[5, 3]", "dims"});
  mftest::expect_error(
      [&] {
        mf::gather(t, 1, ids(std::vector<int64_t>(12, 0), {6, 2}));
      },
      {"gather", "[6, 2]", "[5, 3]", "dim 0", "6 > 5"});
  mftest::expect_error(
      [&] {
        mf::gather(t, 1, ids({0, 3}, {1, 2}));
      },
      {"gather", "index 3", "dim 1", "size 3"});
  mftest::expect_error([&] { mf::gather(t, 2, ids({0}, {1, 1})); }, {"gather", "dim 2"});
  mftest::expect_error(
      [&] {
        mf::index_select(t, 0, ids({0, 1}, {1, 2}));
      },
      {"index_select", "0-d or 1-D", "[1, 2]"});
  mftest::expect_error([&] { mf::index_select(t, 1, ids({5}, {1})); },
                       {"index_select", "index 5", "dim 1", "size 3"});
  mftest::expect_error([&] { mf::embedding(random_tensor({10}, 41), ids({1}, {1})); },
                       {"embedding", "2-D", "[10]"});
  mftest::expect_error(
      [&] {
        mf::embedding(random_tensor({10, 2}, 42), ids({12}, {1}));
      },
      {"embedding", "index 12", "size 10"});
  // Ids are row numbers: a negative id is out of range, not counted from the end.
  mftest::expect_error(
      [&] {
        mf::embedding(random_tensor({10, 2}, 42), ids({3, -1}, {2}));
      },
      {"embedding: index -1 is out of bounds for dim 0 with size 10"});
  mftest::expect_error(
      [&] {
        mf::embedding(random_tensor({10, 2}, 43), random_tensor({2}, 44));
      },
      {"embedding", "ids", "float64"});
  mftest::expect_error(
      [&] {
        mf::masked_fill(t, ids({1, 0, 1}, {3}), 0.0);
      },
      {"masked_fill", "mask", "bool", "int64"});
  mftest::expect_error(
      [&] {
        mf::masked_fill(t, bools({true, false}, {2}), 0.0);
      },
      {"masked_fill", "[5, 3]", "[2]", "broadcast"});
  mftest::expect_error([&] { mf::masked_fill(t, bools({true}, {1}), random_tensor({2}, 45)); },
                       {"masked_fill", "0-d", "[2]"});
}
