// cat (dtype promotion, skipped empty inputs), stack, split/chunk views, tril/triu and
// one_hot against naive references; gradcheck for the differentiable ones; errors.
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

Tensor requires_grad(Tensor t) {
  t.requires_grad_();
  return t;
}

Tensor ids(const std::vector<int64_t>& v, const Shape& shape, DType dt = DType::Int64) {
  return mf::from_vector(v, shape, {.dtype = DType::Int64}).to(dt);
}

Shape unflatten(int64_t flat, const Shape& shape) {
  Shape idx(shape.size());
  for (size_t d = shape.size(); d-- > 0;) {
    idx[d] = flat % shape[d];
    flat /= shape[d];
  }
  return idx;
}

int64_t flatten(const Shape& idx, const Shape& shape) {
  int64_t f = 0;
  for (size_t d = 0; d < shape.size(); ++d) f = f * shape[d] + idx[d];
  return f;
}

// Naive cat: walks the output and finds which input each element comes from.
std::vector<double> ref_cat(const std::vector<Tensor>& ts, int64_t dim, const Shape& out) {
  std::vector<std::vector<double>> vals;
  for (const Tensor& t : ts) vals.push_back(t.to_vector<double>());
  std::vector<double> r;
  for (int64_t p = 0; p < mf::shape_numel(out); ++p) {
    Shape pos = unflatten(p, out);
    size_t i = 0;
    while (pos[dim] >= ts[i].sizes()[dim]) pos[dim] -= ts[i++].sizes()[dim];
    r.push_back(vals[i][flatten(pos, ts[i].sizes())]);
  }
  return r;
}

}  // namespace

TEST(ShapeOps, Cat) {
  const Tensor a = random_tensor({3, 5, 2}, 1);
  const Tensor b = random_tensor({3, 2, 5}, 2).transpose(1, 2);  // [3, 5, 2], non-contiguous
  const Tensor c = random_tensor({3, 5, 7}, 3);
  const Tensor out2 = mf::cat({a, b, c}, -1);
  ASSERT_EQ(out2.sizes(), (Shape{3, 5, 11}));
  EXPECT_EQ(out2.to_vector<double>(), ref_cat({a, b, c}, 2, {3, 5, 11}));
  const Tensor d = random_tensor({1, 5, 2}, 4);
  EXPECT_EQ(mf::cat({a, d, b}, 0).to_vector<double>(), ref_cat({a, d, b}, 0, {7, 5, 2}));
  const Tensor e = random_tensor({3, 97, 2}, 5);
  EXPECT_EQ(mf::cat({e, a}, 1).to_vector<double>(), ref_cat({e, a}, 1, {3, 102, 2}));
  // 1-D empty tensors are skipped whatever their shape.
  const Tensor empty = mf::zeros({0}, {.dtype = DType::Float64});
  EXPECT_EQ(mf::cat({empty, a, empty}, 1).sizes(), (Shape{3, 5, 2}));
  EXPECT_EQ(mf::cat({empty, empty}, 0).sizes(), (Shape{0}));
}

TEST(ShapeOps, CatPromotesDtypes) {
  // Values are small integers, so every conversion is exact.
  const Tensor i = ids({1, 2, 3, 4}, {2, 2}, DType::Int32);
  const Tensor f = random_tensor({2, 1}, 6, DType::Float32);
  const Tensor out = mf::cat({i, f}, 1);
  EXPECT_EQ(out.dtype(), DType::Float32);
  EXPECT_EQ(out.to_vector<double>(), ref_cat({i, f}, 1, {2, 3}));
  const Tensor h = random_tensor({1, 2}, 7, DType::Float16);
  const Tensor bf = random_tensor({2, 2}, 8, DType::BFloat16);
  const Tensor hb = mf::cat({h, bf}, 0);
  EXPECT_EQ(hb.dtype(), DType::Float32);
  EXPECT_EQ(hb.to_vector<double>(), ref_cat({h, bf}, 0, {3, 2}));
  EXPECT_EQ(mf::cat({i, ids({5, 6}, {1, 2})}, 0).dtype(), DType::Int64);
}

TEST(ShapeOps, CatGradcheck) {
  const auto r = mf::gradcheck(
      [](const mf::TensorList& x) {
        return mf::cat({x[0], x[1].t(), x[2]}, 1);
      },
      {requires_grad(random_tensor({2, 3}, 9)), requires_grad(random_tensor({1, 2}, 10)),
       requires_grad(random_tensor({2, 2}, 11))});
  EXPECT_TRUE(r.ok) << r.message;
}

TEST(ShapeOps, Stack) {
  const Tensor a = random_tensor({3, 4}, 12), b = random_tensor({4, 3}, 13).t(),
               c = random_tensor({3, 4}, 14);
  const std::vector<std::vector<double>> v = {a.to_vector<double>(), b.to_vector<double>(),
                                              c.to_vector<double>()};
  for (int64_t dim : {0, 1, 2, -1, -3}) {
    const int64_t d = dim < 0 ? dim + 3 : dim;
    const Tensor s = mf::stack({a, b, c}, dim);
    Shape want = {3, 4};
    want.insert(want.begin() + d, 3);
    ASSERT_EQ(s.sizes(), want) << "dim " << dim;
    std::vector<double> ref;
    for (int64_t p = 0; p < 36; ++p) {
      Shape pos = unflatten(p, want);
      const int64_t which = pos[d];
      pos.erase(pos.begin() + d);
      ref.push_back(v[which][pos[0] * 4 + pos[1]]);
    }
    EXPECT_EQ(s.to_vector<double>(), ref) << "dim " << dim;
  }
  const auto r = mf::gradcheck(
      [](const mf::TensorList& x) {
        return mf::stack({x[0], x[1].t()}, 1);
      },
      {requires_grad(random_tensor({2, 3}, 15)), requires_grad(random_tensor({3, 2}, 16))});
  EXPECT_TRUE(r.ok) << r.message;
}

TEST(ShapeOps, SplitAndChunkAreViews) {
  Tensor t = random_tensor({4, 5}, 17);
  const std::vector<double> tv = t.to_vector<double>();
  const std::vector<Tensor> parts = mf::split(t, 2, 1);
  ASSERT_EQ(parts.size(), 3u);
  EXPECT_EQ(parts[0].sizes(), (Shape{4, 2}));
  EXPECT_EQ(parts[2].sizes(), (Shape{4, 1}));
  EXPECT_EQ(mf::cat(parts, 1).to_vector<double>(), tv);
  const std::vector<Tensor> uneven = mf::split(t, std::vector<int64_t>{1, 0, 3}, 0);
  ASSERT_EQ(uneven.size(), 3u);
  EXPECT_EQ(uneven[1].sizes(), (Shape{0, 5}));
  EXPECT_EQ(uneven[2].sizes(), (Shape{3, 5}));
  EXPECT_EQ(mf::cat(uneven, 0).to_vector<double>(), tv);
  // chunk(5, 3) -> 2, 2, 1; chunk(5, 4) -> 2, 2, 1 (fewer chunks when they run out).
  for (int64_t chunks : {3, 4}) {
    const std::vector<Tensor> c = mf::chunk(t, chunks, -1);
    ASSERT_EQ(c.size(), 3u);
    EXPECT_EQ(c[1].sizes(), (Shape{4, 2}));
    EXPECT_EQ(c[2].sizes(), (Shape{4, 1}));
  }
  EXPECT_EQ(mf::chunk(t, 2, 0)[1].sizes(), (Shape{2, 5}));
  // Views: a write through a piece lands in t.
  Tensor piece = parts[1];
  piece.fill_(7.0);
  EXPECT_EQ(t.to_vector<double>()[2], 7.0);
  EXPECT_EQ(t.to_vector<double>()[3], 7.0);
  EXPECT_EQ(t.to_vector<double>()[4], tv[4]);

  const auto r1 = mf::gradcheck(
      [](const mf::TensorList& x) {
        const std::vector<Tensor> p = mf::split(x[0].t(), 2, 0);  // [2, 3], [2, 3], [1, 3]
        return p[0] * p[1] + p[2];
      },
      {requires_grad(random_tensor({3, 5}, 18))});
  EXPECT_TRUE(r1.ok) << r1.message;
  const auto r2 = mf::gradcheck(
      [](const mf::TensorList& x) {
        const std::vector<Tensor> p = mf::chunk(x[0], 3, 1);  // [2, 2], [2, 2], [2, 1]
        return mf::cat({p[2], p[0] * 2.0}, 1);
      },
      {requires_grad(random_tensor({2, 5}, 19))});
  EXPECT_TRUE(r2.ok) << r2.message;
}

TEST(ShapeOps, TrilTriu) {
  const Tensor t = random_tensor({2, 7, 5}, 20).transpose(1, 2);  // [2, 5, 7], non-contiguous
  const std::vector<double> tv = t.to_vector<double>();
  for (int64_t diag : {0, 1, -1, 3, -4, 9, -9}) {
    for (DType dt : {DType::Float64, DType::Float16, DType::Int64, DType::Bool}) {
      const Tensor x = t.to(dt);
      const std::vector<double> xv = x.to_vector<double>();
      std::vector<double> lo(70), up(70);
      for (int64_t p = 0; p < 70; ++p) {
        const Shape pos = unflatten(p, {2, 5, 7});
        const int64_t off = pos[2] - pos[1];
        lo[p] = off <= diag ? xv[p] : 0.0;
        up[p] = off >= diag ? xv[p] : 0.0;
      }
      EXPECT_EQ(mf::tril(x, diag).to_vector<double>(), lo) << "diag " << diag;
      EXPECT_EQ(mf::triu(x, diag).to_vector<double>(), up) << "diag " << diag;
      EXPECT_EQ(mf::tril(x, diag).dtype(), dt);
    }
  }
  for (int64_t diag : {0, -1, 2}) {
    const auto r = mf::gradcheck(
        [diag](const mf::TensorList& x) { return mf::tril(x[0].t(), diag) + mf::triu(x[0], diag); },
        {requires_grad(random_tensor({4, 4}, 21))});
    EXPECT_TRUE(r.ok) << r.message;
  }
}

TEST(ShapeOps, OneHot) {
  const Tensor i = ids({2, 0, 3, 2, 1, 0}, {2, 3}, DType::Int32);
  const Tensor o = mf::one_hot(i, 5);
  ASSERT_EQ(o.sizes(), (Shape{2, 3, 5}));
  EXPECT_EQ(o.dtype(), DType::Int64);
  std::vector<int64_t> ref(30, 0);
  const int64_t iv[] = {2, 0, 3, 2, 1, 0};
  for (int p = 0; p < 6; ++p) ref[p * 5 + iv[p]] = 1;
  EXPECT_EQ(o.to_vector<int64_t>(), ref);
  // num_classes = -1: max + 1 = 4.
  const Tensor inferred = mf::one_hot(i.to(DType::Int64));
  ASSERT_EQ(inferred.sizes(), (Shape{2, 3, 4}));
  EXPECT_EQ(inferred.sum().item<int64_t>(), 6);
}

TEST(ShapeOps, ShapeRulesUnderFakeTensors) {
  const Tensor a = Tensor::make({2, 3}, DType::Float32, mf::Device::cpu(), true);
  const Tensor b = Tensor::make({2, 5}, DType::Float16, mf::Device::cpu(), true);
  const Tensor c = mf::cat({a, b}, 1);
  EXPECT_TRUE(c.is_fake());
  EXPECT_EQ(c.sizes(), (Shape{2, 8}));
  EXPECT_EQ(mf::stack({a, a}, 1).sizes(), (Shape{2, 2, 3}));
  EXPECT_EQ(mf::tril(a).sizes(), (Shape{2, 3}));
  const Tensor i = Tensor::make({4}, DType::Int64, mf::Device::cpu(), true);
  EXPECT_EQ(mf::one_hot(i, 3).sizes(), (Shape{4, 3}));
  mftest::expect_error([&] { mf::one_hot(i); }, {"one_hot", "num_classes=-1", "fake"});
}

TEST(ShapeOps, Errors) {
  const Tensor a = random_tensor({2, 3}, 22), b = random_tensor({2, 4}, 23);
  mftest::expect_error(
      [&] {
        mf::cat({a, a, b}, 0);
      },
      {"cat", "tensor 2", "[2, 4]", "tensor 0", "[2, 3]", "dim 0"});
  mftest::expect_error(
      [&] {
        mf::cat({a, random_tensor({2, 3, 1}, 24)}, 1);
      },
      {"cat", "tensor 1", "[2, 3, 1]", "[2, 3]", "number of dims"});
  mftest::expect_error([&] { mf::cat({}, 0); }, {"cat", "non-empty"});
  mftest::expect_error([&] { mf::cat({random_tensor({}, 25)}, 0); }, {"cat", "0-d"});
  mftest::expect_error([&] { mf::cat({a, b}, 2); }, {"cat", "dim 2"});
  mftest::expect_error(
      [&] {
        mf::stack({a, b}, 0);
      },
      {"stack", "tensor 1", "[2, 4]", "tensor 0", "[2, 3]"});
  mftest::expect_error([&] { mf::stack({a, a}, 3); }, {"stack", "dim 3"});
  mftest::expect_error(
      [&] {
        mf::split(a, std::vector<int64_t>{1, 1}, 1);
      },
      {"split", "[1, 1]", "sum to 2", "[2, 3]", "size 3"});
  mftest::expect_error([&] { mf::split(a, 0, 1); }, {"split", "split_size", "0"});
  mftest::expect_error([&] { mf::chunk(a, 0, 1); }, {"chunk", "chunks", "0"});
  mftest::expect_error([&] { mf::tril(random_tensor({4}, 26)); }, {"tril", "2 dims", "[4]"});
  mftest::expect_error([&] { mf::triu(random_tensor({4}, 27)); }, {"triu", "2 dims", "[4]"});
  mftest::expect_error(
      [&] {
        mf::one_hot(ids({1, 5}, {2}), 4);
      },
      {"one_hot", "class id 5", "num_classes 4"});
  mftest::expect_error(
      [&] {
        mf::one_hot(ids({1, -1}, {2}), 4);
      },
      {"one_hot", "class id -1", "negative"});
  mftest::expect_error([&] { mf::one_hot(ids({1, -2}, {2})); }, {"one_hot", "class id -2"});
  mftest::expect_error([&] { mf::one_hot(a, 3); }, {"one_hot", "float64", "[2, 3]"});
  mftest::expect_error([&] { mf::one_hot(ids({1}, {1}), 0); }, {"one_hot", "num_classes", "0"});
  mftest::expect_error([&] { mf::one_hot(ids({}, {0})); }, {"one_hot", "empty", "[0]"});
}
