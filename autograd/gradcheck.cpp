#include "autograd/gradcheck.h"

#include <cmath>
#include <sstream>

#include "autograd/grad_mode.h"
#include "core/dispatch.h"

namespace microflex {

namespace {

// Element offsets (in elements, from the first element) of a tensor's logical order.
std::vector<int64_t> element_offsets(const Tensor& t) {
  std::vector<int64_t> offs;
  offs.reserve(static_cast<size_t>(t.numel()));
  Shape idx(t.dim(), 0);
  for (int64_t n = 0; n < t.numel(); ++n) {
    int64_t off = 0;
    for (int64_t d = 0; d < t.dim(); ++d) off += idx[d] * t.strides()[d];
    offs.push_back(off);
    for (int64_t d = t.dim() - 1; d >= 0; --d) {
      if (++idx[d] < t.sizes()[d]) break;
      idx[d] = 0;
    }
  }
  return offs;
}

std::string index_str(int64_t flat, const Shape& s) {
  Shape idx(s.size());
  for (int64_t d = static_cast<int64_t>(s.size()) - 1; d >= 0; --d) {
    idx[d] = s[d] ? flat % s[d] : 0;
    flat = s[d] ? flat / s[d] : 0;
  }
  return shape_str(idx);
}

std::vector<double> eval_flat(const std::function<Tensor(const TensorList&)>& fn,
                              const TensorList& inputs) {
  NoGradGuard g;
  return fn(inputs).to_vector<double>();
}

}  // namespace

GradcheckResult gradcheck(const std::function<Tensor(const TensorList&)>& fn,
                          const TensorList& inputs, double eps, double atol, double rtol) {
  for (size_t i = 0; i < inputs.size(); ++i) {
    if (!inputs[i].defined() || !inputs[i].requires_grad()) continue;
    MF_CHECK(inputs[i].dtype() == DType::Float64, "gradcheck: input ", i,
             " requires grad and must be float64, got ", inputs[i].dtype());
    MF_CHECK(inputs[i].is_cpu() && !inputs[i].is_fake(), "gradcheck: input ", i,
             " must be a real CPU tensor");
  }
  // Analytic Jacobian, one backward per output element.
  Tensor y = fn(inputs);
  const int64_t n_out = y.numel();
  std::vector<std::vector<std::vector<double>>> analytic(inputs.size());
  for (size_t i = 0; i < inputs.size(); ++i)
    if (inputs[i].defined() && inputs[i].requires_grad())
      analytic[i].assign(static_cast<size_t>(n_out),
                         std::vector<double>(static_cast<size_t>(inputs[i].numel()), 0.0));
  if (y.requires_grad()) {
    for (int64_t k = 0; k < n_out; ++k) {
      for (const Tensor& x : inputs)
        if (x.defined()) const_cast<Tensor&>(x).zero_grad();
      std::vector<double> seed(static_cast<size_t>(n_out), 0.0);
      seed[k] = 1.0;
      y.backward(from_vector(seed, y.sizes(), {.dtype = y.dtype()}), /*retain_graph=*/true);
      for (size_t i = 0; i < inputs.size(); ++i) {
        if (analytic[i].empty() || !inputs[i].grad().defined()) continue;
        analytic[i][k] = inputs[i].grad().to_vector<double>();
      }
    }
    for (const Tensor& x : inputs)
      if (x.defined()) const_cast<Tensor&>(x).zero_grad();
  }

  GradcheckResult res;
  double worst_excess = 0.0;
  for (size_t i = 0; i < inputs.size(); ++i) {
    if (analytic[i].empty()) continue;
    const Tensor& x = inputs[i];
    double* base = static_cast<double*>(x.raw_data());
    const std::vector<int64_t> offs = element_offsets(x);
    for (int64_t j = 0; j < x.numel(); ++j) {
      double& v = base[offs[j]];
      const double orig = v;
      v = orig + eps;
      const std::vector<double> plus = eval_flat(fn, inputs);
      v = orig - eps;
      const std::vector<double> minus = eval_flat(fn, inputs);
      v = orig;
      for (int64_t k = 0; k < n_out; ++k) {
        const double num = (plus[k] - minus[k]) / (2 * eps);
        const double ana = analytic[i][k][j];
        const double err = std::abs(num - ana);
        res.max_error = std::max(res.max_error, err);
        const double excess = err - (atol + rtol * std::abs(num));
        if (excess > worst_excess || (!std::isfinite(ana) && std::isfinite(num))) {
          worst_excess = std::isfinite(excess) ? excess : 1e300;
          res.ok = false;
          std::ostringstream os;
          os.precision(10);
          os << "gradcheck: input " << i << " element " << index_str(j, x.sizes())
             << ", output element " << index_str(k, y.sizes()) << ": analytic " << ana
             << " vs numeric " << num << " (error " << err << ", allowed "
             << atol + rtol * std::abs(num) << ")";
          res.message = os.str();
        }
      }
    }
  }
  if (res.ok) res.message = "gradcheck: ok";
  return res;
}

}  // namespace microflex
