#include "core/tensor.h"

#include <cmath>
#include <iomanip>
#include <sstream>

#include "core/dispatch.h"

namespace microflex {

std::string shape_str(const Shape& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) {
    if (i) out += ", ";
    out += std::to_string(s[i]);
  }
  return out + "]";
}

int64_t shape_numel(const Shape& s) {
  int64_t n = 1;
  for (int64_t d : s) n *= d;
  return n;
}

Shape contiguous_strides(const Shape& s) {
  Shape st(s.size());
  int64_t acc = 1;
  for (int64_t i = static_cast<int64_t>(s.size()) - 1; i >= 0; --i) {
    st[i] = acc;
    acc *= std::max<int64_t>(s[i], 1);
  }
  return st;
}

int64_t wrap_dim(int64_t dim, int64_t ndim, const char* op) {
  const int64_t n = std::max<int64_t>(ndim, 1);  // a 0-d tensor accepts dim 0 and -1
  MF_CHECK(dim >= -n && dim < n, op, ": dim ", dim, " is out of range for a tensor with ", ndim,
           " dims (expected in [", -n, ", ", n - 1, "])");
  return dim < 0 ? dim + n : dim;
}

Tensor Tensor::make(const Shape& sizes, DType dtype, Device device, bool fake,
                    const Shape& strides) {
  for (int64_t d : sizes) MF_CHECK(d >= 0, "tensor: negative size in shape ", shape_str(sizes));
  // Guard the byte count against overflow: a shape claiming 2^62 elements is an error.
  int64_t numel = 1;
  for (int64_t d : sizes) {
    MF_CHECK(d == 0 || numel <= (int64_t(1) << 56) / d, "tensor: shape ", shape_str(sizes),
             " has too many elements");
    numel *= d;
  }
  auto impl = std::make_shared<TensorImpl>();
  impl->sizes = sizes;
  impl->dtype = dtype;
  int64_t span = numel;
  if (strides.empty()) {
    impl->strides = contiguous_strides(sizes);
  } else {
    MF_CHECK(strides.size() == sizes.size(), "empty_strided: ", sizes.size(), " sizes but ",
             strides.size(), " strides");
    impl->strides = strides;
    span = numel == 0 ? 0 : 1;
    for (size_t i = 0; i < sizes.size(); ++i) {
      MF_CHECK(strides[i] >= 0, "empty_strided: negative stride in ", shape_str(strides));
      span += (sizes[i] - 1) * strides[i];
    }
  }
  impl->storage = std::make_shared<Storage>(span * itemsize(dtype), device, fake);
  return Tensor(std::move(impl));
}

int64_t Tensor::size(int64_t d) const {
  return sizes()[wrap_dim(d, dim(), "size")];
}
int64_t Tensor::stride(int64_t d) const {
  return strides()[wrap_dim(d, dim(), "stride")];
}

bool Tensor::is_contiguous() const {
  // An empty tensor has no element to be out of place (PyTorch agrees); the loop below
  // would reject [3, 0], whose stride for dim 0 is 1 but whose running size is 0.
  if (numel() == 0) return true;
  int64_t expected = 1;
  for (int64_t i = dim() - 1; i >= 0; --i) {
    if (sizes()[i] == 1) continue;
    if (strides()[i] != expected) return false;
    expected *= sizes()[i];
  }
  return true;
}

void Tensor::throw_undefined() {
  detail::throw_error(
      "tensor is undefined: a default-constructed Tensor was used where a tensor is needed");
}

void Tensor::check_data_access(const char* what) const {
  MF_CHECK(defined(), what, ": tensor is undefined");
  MF_CHECK(!is_fake(), what, ": cannot read data of a fake tensor (shape ", shape_str(sizes()),
           ", ", dtype(), ", ", device(), "): fake tensors carry no data");
}

void* Tensor::raw_data() const {
  check_data_access("raw_data");
  return static_cast<char*>(impl_->storage->data) + impl_->offset * element_size();
}

template <typename T>
std::vector<T> Tensor::to_vector() const {
  check_data_access("to_vector");
  Tensor c = (is_cpu() ? *this : to(Device::cpu())).contiguous();
  std::vector<T> out(static_cast<size_t>(c.numel()));
  MF_DISPATCH_ALL(c.dtype(), "to_vector", [&] {
    const scalar_t* p = c.data_ptr<scalar_t>();
    for (size_t i = 0; i < out.size(); ++i) {
      if constexpr (std::is_same_v<T, bool>) {
        out[i] = static_cast<double>(acc_t<scalar_t>(p[i])) != 0.0;
      } else {
        out[i] = static_cast<T>(static_cast<acc_t<scalar_t>>(p[i]));
      }
    }
  });
  return out;
}

template <typename T>
T Tensor::item() const {
  check_data_access("item");
  MF_CHECK(numel() == 1, "item: tensor with ", numel(), " elements (shape ", shape_str(sizes()),
           ") cannot be converted to a scalar");
  return to_vector<T>()[0];
}

#define MF_INSTANTIATE(T)                               \
  template std::vector<T> Tensor::to_vector<T>() const; \
  template T Tensor::item<T>() const;
MF_INSTANTIATE(float)
MF_INSTANTIATE(double)
MF_INSTANTIATE(int32_t)
MF_INSTANTIATE(int64_t)
MF_INSTANTIATE(bool)
#undef MF_INSTANTIATE

template <typename T>
Tensor from_vector(const std::vector<T>& values, const Shape& shape, TensorOptions opts) {
  MF_CHECK(static_cast<int64_t>(values.size()) == shape_numel(shape),
           "from_vector: ", values.size(), " values cannot fill shape ", shape_str(shape));
  const DType src = dtype_of<T>::value;
  Tensor t = Tensor::make(shape, src, Device::cpu(), false);
  if (!values.empty()) {
    if constexpr (std::is_same_v<T, bool>) {
      bool* p = t.data_ptr<bool>();
      for (size_t i = 0; i < values.size(); ++i) p[i] = values[i];
    } else {
      std::memcpy(t.raw_data(), values.data(), values.size() * sizeof(T));
    }
  }
  Tensor out = t;
  if (opts.dtype != src) out = out.to(opts.dtype);
  if (opts.device != Device::cpu()) out = out.to(opts.device);
  const LocalDispatchState& tls = local_dispatch_state();
  if (tls.included.has(DispatchKey::Fake) && !tls.excluded.has(DispatchKey::Fake))
    out = Tensor::make(shape, opts.dtype, opts.device, true);
  if (opts.requires_grad) out.requires_grad_();
  return out;
}

template Tensor from_vector<float>(const std::vector<float>&, const Shape&, TensorOptions);
template Tensor from_vector<double>(const std::vector<double>&, const Shape&, TensorOptions);
template Tensor from_vector<int32_t>(const std::vector<int32_t>&, const Shape&, TensorOptions);
template Tensor from_vector<int64_t>(const std::vector<int64_t>&, const Shape&, TensorOptions);
template Tensor from_vector<bool>(const std::vector<bool>&, const Shape&, TensorOptions);
template Tensor from_vector<Half>(const std::vector<Half>&, const Shape&, TensorOptions);
template Tensor from_vector<BFloat16>(const std::vector<BFloat16>&, const Shape&, TensorOptions);

// ---- Printing, in the spirit of PyTorch's repr. ----
namespace {

void print_values(std::ostream& os, const std::vector<double>& v, const Shape& s, size_t dim,
                  int64_t base, const Shape& cstrides, bool summarize, bool floating, int indent) {
  if (s.empty()) {
    os << v[0];
    return;
  }
  const int64_t n = s[dim];
  os << '[';
  for (int64_t i = 0; i < n; ++i) {
    if (summarize && n > 6 && i == 3) {
      os << "...";
      i = n - 4;
      if (dim + 1 == s.size()) {
        os << ", ";
      } else {
        os << ",\n" << std::string(indent + 1, ' ');
      }
      continue;
    }
    const int64_t off = base + i * cstrides[dim];
    if (dim + 1 == s.size()) {
      if (floating) {
        os << std::fixed << std::setprecision(4) << v[off];
      } else {
        os << static_cast<int64_t>(v[off]);
      }
    } else {
      print_values(os, v, s, dim + 1, off, cstrides, summarize, floating, indent + 1);
    }
    if (i + 1 < n) {
      if (dim + 1 == s.size()) {
        os << ", ";
      } else {
        os << ",\n" << std::string(indent + 1, ' ');
      }
    }
  }
  os << ']';
}

}  // namespace

std::string Tensor::to_string() const {
  if (!defined()) return "tensor(undefined)";
  std::ostringstream os;
  if (is_fake()) {
    os << "FakeTensor(shape=" << shape_str(sizes()) << ", dtype=" << dtype()
       << ", device=" << device() << ")";
    return os.str();
  }
  std::vector<double> v = to_vector<double>();
  os << "tensor(";
  if (dtype() == DType::Bool) {
    std::vector<double> b(v.begin(), v.end());
    print_values(os, b, sizes(), 0, 0, contiguous_strides(sizes()), numel() > 1000, false, 7);
  } else {
    print_values(os, v, sizes(), 0, 0, contiguous_strides(sizes()), numel() > 1000,
                 is_floating(dtype()), 7);
  }
  os << ", dtype=" << dtype() << ", shape=" << shape_str(sizes());
  if (!is_cpu()) os << ", device=" << device();
  if (requires_grad()) os << ", requires_grad=true";
  os << ")";
  return os.str();
}

std::ostream& operator<<(std::ostream& os, const Tensor& t) {
  return os << t.to_string();
}

}  // namespace microflex
