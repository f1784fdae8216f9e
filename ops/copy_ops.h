// Copies and conversions: to(dtype), to(device), clone, contiguous, copy_, fill_.
#pragma once
#include "core/tensor.h"

namespace microflex {

Tensor to_dtype(const Tensor& t, DType dtype);
Tensor to_device(const Tensor& t, Device device);
Tensor clone(const Tensor& t);
Tensor contiguous(const Tensor& t);
Tensor& copy_(Tensor& dst, const Tensor& src);
Tensor& fill_(Tensor& t, const Scalar& value);

}  // namespace microflex
