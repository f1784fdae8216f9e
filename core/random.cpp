// The default Philox generator and the random factories rand, randn and randint. Like
// the other factories they take no tensor inputs and dispatch on the `device` attribute;
// each call reads (seed, offset) from the generator into its attributes.
#include "core/random.h"

#include <limits>
#include <mutex>

#include "kernels/cpu/philox.h"
#ifdef MICROFLEX_WITH_CUDA
#include "kernels/cuda/random.h"
#endif

namespace microflex {

namespace {

struct DefaultGenerator {
  std::mutex mu;
  PhiloxSeedOffset state{kDefaultSeed, 0};
};

DefaultGenerator& default_generator() {
  static DefaultGenerator g;
  return g;
}

Attrs random_attrs(const Shape& shape, const TensorOptions& o) {
  Attrs a{{"shape", shape}, {"dtype", o.dtype}, {"device", o.device}};
  set_philox_attrs(a, next_philox_seed_offset());
  return a;
}

std::vector<TensorMeta> random_meta(const char* op, const Attrs& a, bool floating) {
  const Shape& shape = a.ints("shape");
  for (int64_t s : shape) MF_CHECK(s >= 0, op, ": negative size in shape ", shape_str(shape));
  const DType dt = a.dtype("dtype");
  if (floating) {
    MF_CHECK(is_floating(dt), op, ": expected a floating dtype, got ", dt);
  } else {
    MF_CHECK(dt == DType::Int32 || dt == DType::Int64, op,
             ": expected an integer dtype (int32 or int64), got ", dt);
  }
  TensorMeta m;
  m.sizes = shape;
  m.dtype = dt;
  m.device = a.device("device");
  return {m};
}

// Random mantissa bits of a uniform sample for each dtype: the 16-bit types get exactly
// as many as they hold, so converting the float sample to them is exact and stays < 1.
template <typename T>
constexpr int uniform_bits() {
  if constexpr (std::is_same_v<T, Half>) return 11;
  if constexpr (std::is_same_v<T, BFloat16>) return 8;
  return 24;
}

Tensor finish(Tensor t, const TensorOptions& o) {
  if (o.requires_grad) t.requires_grad_();
  return t;
}

}  // namespace

PhiloxSeedOffset next_philox_seed_offset() {
  DefaultGenerator& g = default_generator();
  std::lock_guard<std::mutex> lock(g.mu);
  const PhiloxSeedOffset s = g.state;
  ++g.state.offset;
  return s;
}

PhiloxSeedOffset default_generator_state() {
  DefaultGenerator& g = default_generator();
  std::lock_guard<std::mutex> lock(g.mu);
  return g.state;
}

void set_default_generator_state(PhiloxSeedOffset s) {
  DefaultGenerator& g = default_generator();
  std::lock_guard<std::mutex> lock(g.mu);
  g.state = s;
}

void manual_seed(uint64_t seed) {
  set_default_generator_state({seed, 0});
}

void set_philox_attrs(Attrs& a, PhiloxSeedOffset s) {
  a.set("seed", static_cast<int64_t>(s.seed)).set("offset", static_cast<int64_t>(s.offset));
}

PhiloxSeedOffset philox_attrs(const Attrs& a) {
  return {static_cast<uint64_t>(a.i("seed")), static_cast<uint64_t>(a.i("offset"))};
}

void register_random_ops(Dispatcher& d) {
  // Outputs are contiguous, so element i of the buffer is row-major element i.
  OpDef& rand_op = d.def("rand");
  rand_op.set_meta([](const TensorList&, const Attrs& a) { return random_meta("rand", a, true); })
      .non_differentiable()
      .set_cpu([](const TensorList&, const TensorList& out, const Attrs& a) {
        const PhiloxSeedOffset so = philox_attrs(a);
        const int64_t n = out[0].numel();
        MF_DISPATCH_FLOATING(out[0].dtype(), "rand", [&] {
          scalar_t* p = out[0].data_ptr<scalar_t>();
          for (int64_t i = 0; i < n; ++i) {
            const philox::Block b = philox::element_block(so.seed, so.offset, uint64_t(i));
            if constexpr (std::is_same_v<scalar_t, double>) {
              p[i] = philox::uniform_double(b.x[0], b.x[1]);
            } else {
              p[i] = static_cast<scalar_t>(philox::uniform_float(b.x[0], uniform_bits<scalar_t>()));
            }
          }
        });
      });

  OpDef& randn_op = d.def("randn");
  randn_op.set_meta([](const TensorList&, const Attrs& a) { return random_meta("randn", a, true); })
      .non_differentiable()
      .set_cpu([](const TensorList&, const TensorList& out, const Attrs& a) {
        const PhiloxSeedOffset so = philox_attrs(a);
        const int64_t n = out[0].numel();
        MF_DISPATCH_FLOATING(out[0].dtype(), "randn", [&] {
          scalar_t* p = out[0].data_ptr<scalar_t>();
          for (int64_t i = 0; i < n; ++i) {
            const double z =
                philox::normal_double(philox::element_block(so.seed, so.offset, uint64_t(i)));
            p[i] = static_cast<scalar_t>(static_cast<acc_t<scalar_t>>(z));
          }
        });
      });

  OpDef& randint_op = d.def("randint");
  randint_op
      .set_meta([](const TensorList&, const Attrs& a) {
        const int64_t low = a.i("low"), high = a.i("high");
        MF_CHECK(low < high, "randint: expected low < high, got low=", low, " high=", high);
        if (a.dtype("dtype") == DType::Int32) {
          // high is exclusive: the largest value drawn is high - 1.
          MF_CHECK(low >= std::numeric_limits<int32_t>::min() &&
                       high - 1 <= std::numeric_limits<int32_t>::max(),
                   "randint: range [", low, ", ", high, ") does not fit dtype int32");
        }
        return random_meta("randint", a, false);
      })
      .non_differentiable()
      .set_cpu([](const TensorList&, const TensorList& out, const Attrs& a) {
        const PhiloxSeedOffset so = philox_attrs(a);
        const int64_t n = out[0].numel();
        const int64_t low = a.i("low");
        // high - low as unsigned: exact even when it overflows int64.
        const uint64_t range = static_cast<uint64_t>(a.i("high")) - static_cast<uint64_t>(low);
        MF_DISPATCH_INTEGRAL(out[0].dtype(), "randint", [&] {
          scalar_t* p = out[0].data_ptr<scalar_t>();
          for (int64_t i = 0; i < n; ++i) {
            const uint64_t r =
                philox::below(philox::element_block(so.seed, so.offset, uint64_t(i)), range);
            p[i] = static_cast<scalar_t>(static_cast<int64_t>(static_cast<uint64_t>(low) + r));
          }
        });
      });

#ifdef MICROFLEX_WITH_CUDA
  // The same numbers as the CPU kernels above (Note [Random element layout]).
  rand_op.set_cuda([](const TensorList&, const TensorList& out, const Attrs& a) {
    const PhiloxSeedOffset so = philox_attrs(a);
    cuda::rand_fill(out[0].device().index, out[0].raw_data(), out[0].dtype(), out[0].numel(),
                    so.seed, so.offset);
  });
  randn_op.set_cuda([](const TensorList&, const TensorList& out, const Attrs& a) {
    const PhiloxSeedOffset so = philox_attrs(a);
    cuda::randn_fill(out[0].device().index, out[0].raw_data(), out[0].dtype(), out[0].numel(),
                     so.seed, so.offset);
  });
  randint_op.set_cuda([](const TensorList&, const TensorList& out, const Attrs& a) {
    const PhiloxSeedOffset so = philox_attrs(a);
    const int64_t low = a.i("low");
    const uint64_t range = static_cast<uint64_t>(a.i("high")) - static_cast<uint64_t>(low);
    cuda::randint_fill(out[0].device().index, out[0].raw_data(), out[0].dtype(), out[0].numel(),
                       so.seed, so.offset, low, range);
  });
#endif
}

Tensor rand(const Shape& shape, const TensorOptions& opts) {
  static const OpDef& op = op_named("rand");
  return finish(call_op1(op, {}, random_attrs(shape, opts)), opts);
}

Tensor randn(const Shape& shape, const TensorOptions& opts) {
  static const OpDef& op = op_named("randn");
  return finish(call_op1(op, {}, random_attrs(shape, opts)), opts);
}

Tensor randint(int64_t low, int64_t high, const Shape& shape, const TensorOptions& opts) {
  static const OpDef& op = op_named("randint");
  Attrs a = random_attrs(shape, opts);
  a.set("low", low).set("high", high);
  return call_op1(op, {}, a);
}

}  // namespace microflex
