// to(dtype), to(device), clone, contiguous, copy_ and fill_: schema, shape rule, backward
// and kernels, registered in register_copy_ops.
#include "ops/copy_ops.h"

#include "core/dispatch.h"
#include "core/fake.h"
#include "kernels/cpu/copy.h"
#include "ops/op_utils.h"
#ifdef MICROFLEX_WITH_CUDA
#include "kernels/cuda/copy.h"
#endif

namespace microflex {

// Moves bytes between devices; set by the CUDA backend when built in (core/cuda_backend.cpp).
void (*g_cross_device_copy)(const Tensor& dst, const Tensor& src) = nullptr;

namespace {

void cpu_copy(const Tensor& dst, const Tensor& src) {
  cpu::copy_convert(dst.raw_data(), dst.dtype(), dst.strides(), src.raw_data(), src.dtype(),
                    broadcast_strides(src, dst.sizes()), dst.sizes());
}

// Same-device copy on the GPU (src broadcasts to dst's shape), or across devices.
void cuda_copy(const Tensor& dst, const Tensor& src) {
#ifdef MICROFLEX_WITH_CUDA
  if (src.device() != dst.device()) return g_cross_device_copy(dst, src);
  cuda::copy_convert(dst.device().index, dst.raw_data(), dst.dtype(),
                     cuda::make_geometry(dst.sizes(), dst.strides(), "copy"), src.raw_data(),
                     src.dtype(),
                     cuda::make_geometry(dst.sizes(), broadcast_strides(src, dst.sizes()), "copy"));
#else
  MF_CHECK(false, "copy: microflex was built without CUDA (", dst.device(), ")");
#endif
}

}  // namespace

void cuda_fill(const Tensor& t, const Scalar& v) {
#ifdef MICROFLEX_WITH_CUDA
  cuda::fill(t.device().index, t.raw_data(), t.dtype(),
             cuda::make_geometry(t.sizes(), t.strides(), "fill_"), v.to_double(), v.to_int(),
             v.is_floating());
#else
  MF_CHECK(false, "fill_: microflex was built without CUDA (", t.device(), ")");
#endif
}

namespace {}  // namespace

void register_copy_ops(Dispatcher& d) {
  d.def("to_dtype")
      .set_meta([](const TensorList& in, const Attrs& a) {
        return std::vector<TensorMeta>{{in[0].sizes(), a.dtype("dtype"), in[0].device()}};
      })
      .set_cpu([](const TensorList& in, const TensorList& out, const Attrs&) {
        cpu_copy(out[0], in[0]);
      })
      .set_cuda([](const TensorList& in, const TensorList& out, const Attrs&) {
        cuda_copy(out[0], in[0]);
      })
      .save(0, 0)
      .set_backward([](const BackwardContext& ctx) {
        return TensorList{as_dtype(ctx.grad_output(0), ctx.input_metas[0].dtype)};
      });

  d.def("to_device")
      .set_meta([](const TensorList& in, const Attrs& a) {
        return std::vector<TensorMeta>{{in[0].sizes(), in[0].dtype(), a.device("device")}};
      })
      .set_cpu([](const TensorList& in, const TensorList& out, const Attrs&) {
        // Dispatched on the source's device: the destination may be a GPU.
        if (out[0].is_cpu()) return cpu_copy(out[0], in[0]);
        MF_CHECK(g_cross_device_copy != nullptr, "to: copying to ", out[0].device(),
                 " needs the CUDA backend");
        g_cross_device_copy(out[0], in[0]);
      })
      .set_cuda([](const TensorList& in, const TensorList& out, const Attrs&) {
        MF_CHECK(g_cross_device_copy != nullptr, "to: copying to ", out[0].device(),
                 " needs the CUDA backend");
        g_cross_device_copy(out[0], in[0]);
      })
      .save(0, 0)
      .set_backward([](const BackwardContext& ctx) {
        return TensorList{to_device(ctx.grad_output(0), ctx.input_metas[0].device)};
      });

  d.def("clone")
      .set_meta([](const TensorList& in, const Attrs&) {
        return std::vector<TensorMeta>{{in[0].sizes(), in[0].dtype(), in[0].device()}};
      })
      .set_cpu([](const TensorList& in, const TensorList& out, const Attrs&) {
        cpu_copy(out[0], in[0]);
      })
      .set_cuda([](const TensorList& in, const TensorList& out, const Attrs&) {
        cuda_copy(out[0], in[0]);
      })
      .save(0, 0)
      .set_backward([](const BackwardContext& ctx) { return TensorList{ctx.grad_output(0)}; });

  d.def("copy_")
      .set_kind(OpKind::InPlace)
      .set_meta([](const TensorList& in, const Attrs&) {
        const Shape b = broadcast_shapes(in[0].sizes(), in[1].sizes(), "copy_");
        MF_CHECK(b == in[0].sizes(), "copy_: source of shape ", shape_str(in[1].sizes()),
                 " does not broadcast to the destination's shape ", shape_str(in[0].sizes()));
        MF_CHECK(in[0].device() == in[1].device() || !in[1].is_fake(), "copy_: destination on ",
                 in[0].device(), ", source on ", in[1].device());
        return std::vector<TensorMeta>{meta_of(in[0])};
      })
      .set_cpu([](const TensorList& in, const TensorList&, const Attrs&) {
        if (in[1].is_cpu()) return cpu_copy(in[0], in[1]);
        MF_CHECK(g_cross_device_copy != nullptr, "copy_: source on ", in[1].device(),
                 " needs the CUDA backend");
        g_cross_device_copy(in[0], in[1]);
      })
      .set_cuda(
          [](const TensorList& in, const TensorList&, const Attrs&) { cuda_copy(in[0], in[1]); })
      .save(0, 0)
      .set_backward([](const BackwardContext& ctx) {
        TensorList g(2);
        if (ctx.needs(1)) {
          g[1] = as_dtype(sum_to(ctx.grad_output(0), ctx.input_metas[1].sizes),
                          ctx.input_metas[1].dtype);
        }
        return g;  // the old value of the destination does not reach the output
      });

  d.def("fill_")
      .set_kind(OpKind::InPlace)
      .set_meta([](const TensorList& in, const Attrs&) {
        return std::vector<TensorMeta>{meta_of(in[0])};
      })
      .set_cpu([](const TensorList& in, const TensorList&, const Attrs& a) {
        const Scalar v = a.scalar("value");
        cpu::fill(in[0].raw_data(), in[0].dtype(), in[0].strides(), in[0].sizes(), v.to_double(),
                  v.to_int(), v.is_floating());
      })
      .set_cuda([](const TensorList& in, const TensorList&, const Attrs& a) {
        cuda_fill(in[0], a.scalar("value"));
      })
      .save(0, 0)
      .set_backward([](const BackwardContext&) { return TensorList(1); });
}

Tensor to_dtype(const Tensor& t, DType dtype) {
  if (t.dtype() == dtype) return t;
  static const OpDef& op = op_named("to_dtype");
  return call_op1(op, {t}, {{"dtype", dtype}});
}

Tensor to_device(const Tensor& t, Device device) {
  if (t.device() == device) return t;
  // Without this the allocator's error would not say which op asked for the device.
  MF_CHECK(
      !device.is_cuda() || t.is_fake() || fake_mode_active() || device.index < cuda_device_count(),
      "to: cannot copy ", describe(t), " to ", device, ": ", cuda_device_count(),
      " CUDA devices are present (fake mode makes CUDA tensors without a GPU)");
  static const OpDef& op = op_named("to_device");
  return call_op1(op, {t}, {{"device", device}});
}

Tensor clone(const Tensor& t) {
  static const OpDef& op = op_named("clone");
  return call_op1(op, {t});
}

Tensor contiguous(const Tensor& t) {
  return t.is_contiguous() ? t : clone(t);
}

Tensor& copy_(Tensor& dst, const Tensor& src) {
  static const OpDef& op = op_named("copy_");
  call_op(op, {dst, src});
  return dst;
}

Tensor& fill_(Tensor& t, const Scalar& value) {
  static const OpDef& op = op_named("fill_");
  call_op(op, {t}, Attrs().set_scalar("value", value));
  return t;
}

// Tensor methods that are conversions.
Tensor Tensor::to(DType dtype) const {
  return to_dtype(*this, dtype);
}
Tensor Tensor::to(Device device) const {
  return to_device(*this, device);
}
Tensor Tensor::clone() const {
  return microflex::clone(*this);
}
Tensor Tensor::contiguous() const {
  return microflex::contiguous(*this);
}
Tensor& Tensor::fill_(const Scalar& v) {
  microflex::fill_(*this, v);
  return *this;
}
Tensor& Tensor::copy_(const Tensor& src) {
  microflex::copy_(*this, src);
  return *this;
}

}  // namespace microflex
