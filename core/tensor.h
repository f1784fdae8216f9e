// Tensor: a handle (shared pointer) to TensorImpl, which holds shape, strides, storage
// offset, dtype and storage (device comes from the storage), plus the autograd and
// tracing fields the upper layers fill in. Copying a Tensor copies the handle.
#pragma once
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include "core/device.h"
#include "core/dtype.h"
#include "core/scalar.h"
#include "core/storage.h"

namespace microflex {

using Shape = std::vector<int64_t>;
std::string shape_str(const Shape& s);  // "[2, 3]"
int64_t shape_numel(const Shape& s);
Shape contiguous_strides(const Shape& s);
// Wraps a possibly negative dim into [0, ndim); the error names `op`.
int64_t wrap_dim(int64_t dim, int64_t ndim, const char* op);

namespace autograd {
struct Node;
}
namespace graph {
class Tracer;
}

struct TensorOptions {
  DType dtype = DType::Float32;
  Device device = Device::cpu();
  bool requires_grad = false;
};

class Tensor;

struct TensorImpl {
  Shape sizes;
  Shape strides;
  int64_t offset = 0;  // in elements
  DType dtype = DType::Float32;
  std::shared_ptr<Storage> storage;

  // Autograd (autograd/): leaf flag, accumulated grad, the tape entry that made it.
  bool requires_grad = false;
  std::shared_ptr<TensorImpl> grad;
  std::shared_ptr<autograd::Node> grad_fn;
  int output_nr = 0;
  std::shared_ptr<autograd::Node> grad_accumulator;  // for leaves, made on first use
  // A 0-d tensor made from a C++ number: promotes like PyTorch's wrapped numbers.
  bool wrapped_number = false;

  // Tracing (graph/): the graph value this proxy stands for.
  graph::Tracer* tracer = nullptr;
  int64_t proxy_id = -1;
};

class Tensor {
 public:
  Tensor() = default;
  explicit Tensor(std::shared_ptr<TensorImpl> impl) : impl_(std::move(impl)) {}

  // Allocates an uninitialised tensor; fake storage when `fake`.
  static Tensor make(const Shape& sizes, DType dtype, Device device, bool fake,
                     const Shape& strides = {});

  bool defined() const { return impl_ != nullptr; }
  TensorImpl* impl() const { return impl_.get(); }
  const std::shared_ptr<TensorImpl>& impl_ptr() const { return impl_; }
  bool is_same(const Tensor& o) const { return impl_ == o.impl_; }

  const Shape& sizes() const { return defined_impl().sizes; }
  const Shape& shape() const { return defined_impl().sizes; }
  const Shape& strides() const { return defined_impl().strides; }
  int64_t size(int64_t d) const;
  int64_t stride(int64_t d) const;
  int64_t dim() const { return static_cast<int64_t>(defined_impl().sizes.size()); }
  int64_t numel() const { return shape_numel(defined_impl().sizes); }
  int64_t storage_offset() const { return defined_impl().offset; }
  DType dtype() const { return defined_impl().dtype; }
  Device device() const { return defined_impl().storage->device; }
  bool is_fake() const { return defined_impl().storage->fake; }
  bool is_cpu() const { return device().is_cpu(); }
  bool is_cuda() const { return device().is_cuda(); }
  bool is_contiguous() const;
  int64_t element_size() const { return itemsize(dtype()); }
  const std::shared_ptr<Storage>& storage() const { return defined_impl().storage; }
  uint64_t version() const { return defined_impl().storage->version; }
  void bump_version() const { ++defined_impl().storage->version; }

  // Pointer to the first element; the dtype must match T and the tensor must be real.
  template <typename T>
  T* data_ptr() const {
    check_data_access("data_ptr");
    MF_CHECK(dtype_of<T>::value == dtype(), "data_ptr: tensor has dtype ", dtype(), ", asked for ",
             dtype_of<T>::value);
    return static_cast<T*>(impl_->storage->data) + impl_->offset;
  }
  void* raw_data() const;  // first element, any dtype
  // The single value of a one-element tensor (synchronizes with the device).
  template <typename T>
  T item() const;
  // All values in logical (row-major) order, converted to T (copies from the device).
  template <typename T>
  std::vector<T> to_vector() const;

  // Autograd surface (autograd/).
  bool requires_grad() const { return defined_impl().requires_grad; }
  Tensor& requires_grad_(bool r = true);
  bool is_leaf() const;
  Tensor grad() const { return Tensor(defined_impl().grad); }
  void set_grad(const Tensor& g) { defined_impl().grad = g.impl_; }
  void zero_grad() { defined_impl().grad.reset(); }
  const std::shared_ptr<autograd::Node>& grad_fn() const { return defined_impl().grad_fn; }
  void backward(const Tensor& grad = Tensor(), bool retain_graph = false) const;
  // A tensor sharing storage but cut from the tape.
  Tensor detach() const;

  // Conversions.
  Tensor to(DType dtype) const;
  Tensor to(Device device) const;
  Tensor clone() const;
  Tensor contiguous() const;

  // Views: share storage (ops/view_ops.cpp).
  Tensor view(const Shape& shape) const;
  Tensor reshape(const Shape& shape) const;
  Tensor permute(const Shape& dims) const;
  Tensor transpose(int64_t d0, int64_t d1) const;
  Tensor t() const;  // transpose of a 2-d tensor
  Tensor expand(const Shape& shape) const;
  Tensor broadcast_to(const Shape& shape) const { return expand(shape); }
  Tensor slice(int64_t dim, int64_t start, int64_t end, int64_t step = 1) const;
  Tensor narrow(int64_t dim, int64_t start, int64_t length) const;
  Tensor select(int64_t dim, int64_t index) const;
  Tensor unsqueeze(int64_t dim) const;
  Tensor squeeze() const;
  Tensor squeeze(int64_t dim) const;
  Tensor flatten(int64_t start_dim = 0, int64_t end_dim = -1) const;

  // Indexing with index tensors that broadcast (ops/indexing.cpp): t.index({i, j})
  // gathers t[i, j] over the leading dims.
  Tensor index(const std::vector<Tensor>& indices) const;

  // Reductions as methods, for readability.
  Tensor sum() const;
  Tensor sum(const Shape& dims, bool keepdim = false) const;
  Tensor mean() const;
  Tensor mean(const Shape& dims, bool keepdim = false) const;

  // In-place (bump the version counter).
  Tensor& fill_(const Scalar& v);
  Tensor& zero_() { return fill_(0); }
  Tensor& copy_(const Tensor& src);
  Tensor& add_(const Tensor& other, const Scalar& alpha = 1);
  Tensor& mul_(const Tensor& other);
  Tensor& mul_(const Scalar& other);

  std::string to_string() const;

 private:
  // The impl of a defined tensor: reading the metadata of an undefined (default
  // constructed) Tensor is an Error, not a null dereference.
  TensorImpl& defined_impl() const {
    if (!impl_) [[unlikely]]
      throw_undefined();
    return *impl_;
  }
  [[noreturn]] static void throw_undefined();
  void check_data_access(const char* what) const;
  std::shared_ptr<TensorImpl> impl_;
};

using TensorList = std::vector<Tensor>;

std::ostream& operator<<(std::ostream& os, const Tensor& t);

// ---- Factories (ops/factory_ops.cpp); all go through the dispatcher, so they make
// fake tensors under fake mode and graph nodes under tracing. ----
Tensor empty(const Shape& shape, const TensorOptions& opts = {});
Tensor empty_strided(const Shape& shape, const Shape& strides, const TensorOptions& opts = {});
Tensor zeros(const Shape& shape, const TensorOptions& opts = {});
Tensor ones(const Shape& shape, const TensorOptions& opts = {});
Tensor full(const Shape& shape, const Scalar& value, const TensorOptions& opts = {});
Tensor empty_like(const Tensor& t);
Tensor zeros_like(const Tensor& t);
Tensor ones_like(const Tensor& t);
Tensor full_like(const Tensor& t, const Scalar& value);
// [start, end) step `step`; int64 unless a bound is floating or opts say otherwise.
Tensor arange(const Scalar& end, const TensorOptions& opts = {.dtype = DType::Int64});
Tensor arange(const Scalar& start, const Scalar& end, const Scalar& step = 1,
              const TensorOptions& opts = {.dtype = DType::Int64});
Tensor linspace(double start, double end, int64_t steps, const TensorOptions& opts = {});
// A 0-d tensor holding a C++ number (dtype float64 for floating, int64 for integers,
// unless given); `wrapped` marks it as a number for type promotion.
Tensor scalar_tensor(const Scalar& s, const TensorOptions& opts, bool wrapped = false);
Tensor wrapped_scalar(const Scalar& s, Device device);

// From host data: copies `values` into a new tensor of `shape` (the values' count must
// match); the tensor's dtype is T's unless opts override.
template <typename T>
Tensor from_vector(const std::vector<T>& values, const Shape& shape, TensorOptions opts);
template <typename T>
Tensor from_vector(const std::vector<T>& values, const Shape& shape) {
  return from_vector(values, shape, TensorOptions{.dtype = dtype_of<T>::value});
}
template <typename T>
Tensor from_vector(const std::vector<T>& values) {
  return from_vector(values, {static_cast<int64_t>(values.size())});
}

// ---- Random numbers (core/random.cpp): a global seeded Philox generator. ----
void manual_seed(uint64_t seed);
Tensor rand(const Shape& shape, const TensorOptions& opts = {});
Tensor randn(const Shape& shape, const TensorOptions& opts = {});
Tensor randint(int64_t low, int64_t high, const Shape& shape,
               const TensorOptions& opts = {.dtype = DType::Int64});

}  // namespace microflex
