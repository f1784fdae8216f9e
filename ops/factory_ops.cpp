// Factories: empty, full (zeros/ones), arange, linspace, scalar_tensor. They take no
// tensor inputs: the dispatcher picks the backend from the `device` attribute, and the
// mode state makes them fake under fake mode and graph nodes under tracing.
#include <cmath>

#include "core/dispatch.h"
#include "kernels/cpu/copy.h"
#include "ops/op_utils.h"

namespace microflex {

void cuda_fill(const Tensor& t, const Scalar& v);  // ops/copy_ops.cpp

namespace {

// Factories on the GPU whose values are computed on the host: fill a host tensor with the
// CPU kernel, then copy it over.
void via_host(const ComputeFn& cpu, const TensorList& in, const Tensor& out, const Attrs& a) {
  Tensor host = Tensor::make(out.sizes(), out.dtype(), Device::cpu(), false);
  cpu(in, {host}, a);
  Tensor o = out;
  o.copy_(host);
}

Attrs factory_attrs(const Shape& shape, const TensorOptions& o) {
  return Attrs{{"shape", shape}, {"dtype", o.dtype}, {"device", o.device}};
}

std::vector<TensorMeta> factory_meta(const TensorList&, const Attrs& a) {
  return {{a.ints("shape"), a.dtype("dtype"), a.device("device"),
           a.has("strides") ? a.ints("strides") : Shape{}}};
}

// Rejects negative sizes and element counts past Tensor::make's cap, naming the factory
// the user called (zeros and ones share the "full" op).
void check_shape(const Shape& shape, const char* op) {
  int64_t numel = 1;
  for (int64_t d : shape) {
    MF_CHECK(d >= 0, op, ": negative size ", d, " in shape ", shape_str(shape));
    MF_CHECK(d == 0 || numel <= (int64_t(1) << 56) / d, op, ": shape ", shape_str(shape),
             " has too many elements");
    numel *= d;
  }
}

// Converting a double outside an integer type's range is undefined behaviour: refuse
// values that do not fit, like PyTorch ("value cannot be converted ... without overflow").
void check_fits(double v, DType dt, const char* op, const char* what) {
  if (!is_integral(dt)) return;
  const double lo = dt == DType::Int32 ? -2147483648.0 : -9223372036854775808.0;
  MF_CHECK(std::isfinite(v) && v >= lo && v < -lo, op, ": ", what, " ", v,
           " cannot be converted to ", dt, " without overflow");
}

Tensor finish(Tensor t, const TensorOptions& o) {
  if (o.requires_grad) t.requires_grad_();
  return t;
}

int64_t arange_length(double start, double end, double step) {
  MF_CHECK(step != 0, "arange: step must be nonzero");
  MF_CHECK(std::isfinite(start) && std::isfinite(end), "arange: bounds must be finite, got ", start,
           " and ", end);
  MF_CHECK((end - start) / step >= 0 || start == end, "arange: bounds [", start, ", ", end,
           ") are inconsistent with step ", step);
  const double n = std::ceil((end - start) / step);
  MF_CHECK(n < 9.0e15, "arange: ", n, " elements is too many");
  return std::max<int64_t>(0, static_cast<int64_t>(n));
}

template <typename F>
void fill_linear(const Tensor& out, F value_at) {
  MF_DISPATCH_ALL(out.dtype(), "arange", [&] {
    scalar_t* p = out.data_ptr<scalar_t>();
    for (int64_t i = 0; i < out.numel(); ++i) {
      if constexpr (std::is_same_v<scalar_t, bool>) {
        p[i] = value_at(i) != 0;
      } else {
        p[i] = static_cast<scalar_t>(static_cast<acc_t<scalar_t>>(value_at(i)));
      }
    }
  });
}

}  // namespace

void register_factory_ops(Dispatcher& d) {
  d.def("empty")
      .set_meta(factory_meta)
      .non_differentiable()
      .set_cpu([](const TensorList&, const TensorList&, const Attrs&) {})
      .set_cuda([](const TensorList&, const TensorList&, const Attrs&) {});

  d.def("full")
      .set_meta([](const TensorList& in, const Attrs& a) {
        const Scalar v = a.scalar("value");
        if (v.is_floating()) check_fits(v.to_double(), a.dtype("dtype"), "full", "value");
        return factory_meta(in, a);
      })
      .non_differentiable()
      .set_cpu([](const TensorList&, const TensorList& out, const Attrs& a) {
        const Scalar v = a.scalar("value");
        cpu::fill(out[0].raw_data(), out[0].dtype(), out[0].strides(), out[0].sizes(),
                  v.to_double(), v.to_int(), v.is_floating());
      })
      .set_cuda([](const TensorList&, const TensorList& out, const Attrs& a) {
        cuda_fill(out[0], a.scalar("value"));
      });

  d.def("scalar_tensor")
      .set_meta([](const TensorList&, const Attrs& a) {
        return std::vector<TensorMeta>{
            {{}, a.dtype("dtype"), a.device("device"), {}, a.b("wrapped")}};
      })
      .non_differentiable()
      .set_cpu([](const TensorList&, const TensorList& out, const Attrs& a) {
        const Scalar v = a.scalar("value");
        cpu::fill(out[0].raw_data(), out[0].dtype(), {}, {}, v.to_double(), v.to_int(),
                  v.is_floating());
      })
      .set_cuda([](const TensorList&, const TensorList& out, const Attrs& a) {
        cuda_fill(out[0], a.scalar("value"));
      });

  OpDef& arange_op = d.def("arange");
  arange_op
      .set_meta([](const TensorList&, const Attrs& a) {
        const int64_t n = arange_length(a.f("start"), a.f("end"), a.f("step"));
        if (n > 0) {
          const double last = a.f("start") + a.f("step") * static_cast<double>(n - 1);
          check_fits(a.f("start"), a.dtype("dtype"), "arange", "start");
          check_fits(last, a.dtype("dtype"), "arange", "last value");
        }
        return std::vector<TensorMeta>{{{n}, a.dtype("dtype"), a.device("device")}};
      })
      .non_differentiable()
      .set_cpu([](const TensorList&, const TensorList& out, const Attrs& a) {
        const double start = a.f("start"), step = a.f("step");
        fill_linear(out[0], [&](int64_t i) { return start + step * static_cast<double>(i); });
      });

  OpDef& linspace_op = d.def("linspace");
  linspace_op
      .set_meta([](const TensorList&, const Attrs& a) {
        MF_CHECK(a.i("steps") >= 0, "linspace: steps must be non-negative, got ", a.i("steps"));
        return std::vector<TensorMeta>{{{a.i("steps")}, a.dtype("dtype"), a.device("device")}};
      })
      .non_differentiable()
      .set_cpu([](const TensorList&, const TensorList& out, const Attrs& a) {
        const double start = a.f("start"), end = a.f("end");
        const int64_t n = a.i("steps");
        const double step = n > 1 ? (end - start) / static_cast<double>(n - 1) : 0.0;
        // Fill from both ends so the last value is exactly `end`, as PyTorch does.
        fill_linear(out[0], [&](int64_t i) {
          return i < n / 2 ? start + step * static_cast<double>(i)
                           : end - step * static_cast<double>(n - 1 - i);
        });
      });
  for (OpDef* op : {&arange_op, &linspace_op})
    op->set_cuda([op](const TensorList& in, const TensorList& out, const Attrs& a) {
      via_host(op->compute[0], in, out[0], a);
    });
}

Tensor empty(const Shape& shape, const TensorOptions& opts) {
  static const OpDef& op = op_named("empty");
  check_shape(shape, "empty");
  return finish(call_op1(op, {}, factory_attrs(shape, opts)), opts);
}

Tensor empty_strided(const Shape& shape, const Shape& strides, const TensorOptions& opts) {
  static const OpDef& op = op_named("empty");
  check_shape(shape, "empty_strided");
  return finish(call_op1(op, {}, factory_attrs(shape, opts).set("strides", strides)), opts);
}

Tensor full(const Shape& shape, const Scalar& value, const TensorOptions& opts) {
  static const OpDef& op = op_named("full");
  check_shape(shape, "full");
  return finish(call_op1(op, {}, factory_attrs(shape, opts).set_scalar("value", value)), opts);
}

Tensor zeros(const Shape& shape, const TensorOptions& opts) {
  check_shape(shape, "zeros");
  return full(shape, 0, opts);
}
Tensor ones(const Shape& shape, const TensorOptions& opts) {
  check_shape(shape, "ones");
  return full(shape, 1, opts);
}

Tensor empty_like(const Tensor& t) {
  return empty(t.sizes(), {.dtype = t.dtype(), .device = t.device()});
}
Tensor zeros_like(const Tensor& t) {
  return zeros(t.sizes(), {.dtype = t.dtype(), .device = t.device()});
}
Tensor ones_like(const Tensor& t) {
  return ones(t.sizes(), {.dtype = t.dtype(), .device = t.device()});
}
Tensor full_like(const Tensor& t, const Scalar& value) {
  return full(t.sizes(), value, {.dtype = t.dtype(), .device = t.device()});
}

Tensor arange(const Scalar& end, const TensorOptions& opts) {
  return arange(0, end, 1, opts);
}

Tensor arange(const Scalar& start, const Scalar& end, const Scalar& step,
              const TensorOptions& opts) {
  static const OpDef& op = op_named("arange");
  TensorOptions o = opts;
  // A floating bound with the default integer dtype makes a float32 range, as in PyTorch.
  if ((start.is_floating() || end.is_floating() || step.is_floating()) && o.dtype == DType::Int64)
    o.dtype = DType::Float32;
  Attrs a{{"dtype", o.dtype}, {"device", o.device}};
  a.set_scalar("start", start).set_scalar("end", end).set_scalar("step", step);
  return finish(call_op1(op, {}, a), o);
}

Tensor linspace(double start, double end, int64_t steps, const TensorOptions& opts) {
  static const OpDef& op = op_named("linspace");
  return finish(call_op1(op, {},
                         Attrs{{"start", start},
                               {"end", end},
                               {"steps", steps},
                               {"dtype", opts.dtype},
                               {"device", opts.device}}),
                opts);
}

Tensor scalar_tensor(const Scalar& s, const TensorOptions& opts, bool wrapped) {
  static const OpDef& op = op_named("scalar_tensor");
  Attrs a{{"dtype", opts.dtype}, {"device", opts.device}, {"wrapped", wrapped}};
  a.set_scalar("value", s);
  return finish(call_op1(op, {}, a), opts);
}

Tensor wrapped_scalar(const Scalar& s, Device device) {
  const DType dt = s.is_floating() ? DType::Float64 : s.is_bool() ? DType::Bool : DType::Int64;
  return scalar_tensor(s, {.dtype = dt, .device = device}, true);
}

}  // namespace microflex
