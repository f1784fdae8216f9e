// matmul, bmm and linear: the matmul shape rule for every rank case, its backward, the
// CPU glue that hands strided operands to kernels/cpu/matmul (no copies of transposed or
// broadcast inputs) and the CUDA glue for cuBLAS (Note [CUDA matmul operands]). bmm and
// linear check their own shapes, then use matmul.
#include "ops/linalg.h"

#include <algorithm>

#include "core/dispatch.h"
#include "kernels/cpu/matmul.h"
#include "ops/elementwise.h"
#include "ops/op_utils.h"

#ifdef MICROFLEX_WITH_CUDA
#include "core/cuda_backend.h"
#include "kernels/cuda/matmul.h"
#endif

namespace microflex {

// Note [matmul ranks]
// A 1-D left operand [K] is promoted to a matrix [1, K] and a 1-D right operand [K] to
// [K, 1]; the product of the promoted operands is [batch..., M, N] with batch the
// broadcast of both operands' leading dims, and the promoted dims are removed from the
// result. The backward promotes the same way, so every rank case is one formula:
//   grad_a = sum_to(g @ b^T, a), grad_b = sum_to(a^T @ g, b)
// with sum_to undoing the batch broadcast.

namespace {

struct MatmulShapes {
  Shape batch;  // broadcast batch dims
  int64_t M = 1, K = 1, N = 1;
  Shape out;         // the result's shape, promoted dims removed
  Shape out_matrix;  // batch + [M, N]
};

Shape promote_left(const Shape& a) {
  return a.size() == 1 ? Shape{1, a[0]} : a;
}
Shape promote_right(const Shape& b) {
  return b.size() == 1 ? Shape{b[0], 1} : b;
}

MatmulShapes matmul_shapes(const Shape& a, const Shape& b) {
  MF_CHECK(!a.empty() && !b.empty(), "matmul: both arguments need at least 1 dim, got shapes ",
           shape_str(a), " and ", shape_str(b));
  const Shape a2 = promote_left(a), b2 = promote_right(b);
  MatmulShapes s;
  s.M = a2[a2.size() - 2];
  s.K = a2.back();
  s.N = b2.back();
  const int64_t kb = b2[b2.size() - 2];
  MF_CHECK(s.K == kb, "matmul: shapes ", shape_str(a), " and ", shape_str(b),
           " cannot be multiplied (", s.K, " != ", kb, ")");
  const size_t na = a2.size() - 2, nb = b2.size() - 2, n = std::max(na, nb);
  s.batch.resize(n);
  for (size_t i = 0; i < n; ++i) {
    const int64_t da = i < n - na ? 1 : a2[i - (n - na)];
    const int64_t db = i < n - nb ? 1 : b2[i - (n - nb)];
    MF_CHECK(da == db || da == 1 || db == 1, "matmul: batch dims of shapes ", shape_str(a), " and ",
             shape_str(b), " cannot be broadcast (", da, " vs ", db, ")");
    s.batch[i] = da == 1 ? db : da;
  }
  s.out = s.batch;
  if (a.size() > 1) s.out.push_back(s.M);
  if (b.size() > 1) s.out.push_back(s.N);
  s.out_matrix = s.batch;
  s.out_matrix.push_back(s.M);
  s.out_matrix.push_back(s.N);
  return s;
}

// Element offset of each batch entry (row-major over `batch`) of an operand whose
// leading dims (`sizes`, `strides`) broadcast to `batch`.
std::vector<int64_t> batch_offsets(const Shape& sizes, const Shape& strides, const Shape& batch) {
  const size_t nb = batch.size(), lead = nb - sizes.size();
  const int64_t total = shape_numel(batch);
  std::vector<int64_t> offs(static_cast<size_t>(total), 0);
  Shape idx(nb, 0);
  for (int64_t i = 0; i < total; ++i) {
    int64_t o = 0;
    for (size_t d = lead; d < nb; ++d)
      if (sizes[d - lead] != 1) o += idx[d] * strides[d - lead];
    offs[static_cast<size_t>(i)] = o;
    for (int64_t d = static_cast<int64_t>(nb) - 1; d >= 0; --d) {
      if (++idx[d] < batch[d]) break;
      idx[d] = 0;
    }
  }
  return offs;
}

void matmul_cpu(const Tensor& a, const Tensor& b, const Tensor& out) {
  const MatmulShapes s = matmul_shapes(a.sizes(), b.sizes());
  // The promoted operands' sizes and strides; the stride of a promoted size-1 dim is
  // never read.
  Shape as = a.sizes(), ast = a.strides(), bs = b.sizes(), bst = b.strides();
  if (a.dim() == 1) {
    as = {1, a.sizes()[0]};
    ast = {0, a.strides()[0]};
  }
  if (b.dim() == 1) {
    bs = {b.sizes()[0], 1};
    bst = {b.strides()[0], 0};
  }
  const size_t na = as.size() - 2, nb = bs.size() - 2;
  const std::vector<int64_t> offa = batch_offsets(Shape(as.begin(), as.begin() + na),
                                                  Shape(ast.begin(), ast.begin() + na), s.batch);
  const std::vector<int64_t> offb = batch_offsets(Shape(bs.begin(), bs.begin() + nb),
                                                  Shape(bst.begin(), bst.begin() + nb), s.batch);
  const cpu::MatrixOperand ma{a.raw_data(), offa.data(), ast[na], ast[na + 1]};
  const cpu::MatrixOperand mb{b.raw_data(), offb.data(), bst[nb], bst[nb + 1]};
  MF_INTERNAL_ASSERT(out.is_contiguous());
  cpu::matmul(a.dtype(), shape_numel(s.batch), s.M, s.N, s.K, ma, mb, out.raw_data());
}

#ifdef MICROFLEX_WITH_CUDA
// Note [CUDA matmul operands]
// cuBLAS reads a batch of matrices at one pointer plus i * batch_stride, each row-major
// (strides (ld, 1)) or transposed (strides (1, ld)). An operand that already has that
// form (contiguous, transposed views, row slices, a batch broadcast as stride 0) is read
// in place. Otherwise it is made contiguous, and if its batch dims still cannot be one
// stride (e.g. [2, 1, M, K] against batch [2, 3]) it is expanded to the full batch first.

// The stride S with batch entry i (row-major over `batch`) of an operand at i * S, if
// one exists; `sizes`/`strides` are the operand's leading dims, aligned right to `batch`.
bool single_batch_stride(const Shape& sizes, const Shape& strides, const Shape& batch, int64_t* S) {
  const size_t nb = batch.size(), lead = nb - sizes.size();
  int64_t inner = 1;  // entries per step of dim d
  bool found = false;
  for (size_t d = nb; d-- > 0;) {
    if (batch[d] != 1) {
      const int64_t st = d < lead || sizes[d - lead] == 1 ? 0 : strides[d - lead];
      if (!found) {
        *S = st;  // inner is 1 here: every later dim has size 1
        found = true;
      } else if (st != *S * inner) {
        return false;
      }
    }
    inner *= batch[d];
  }
  if (!found) *S = 0;
  return true;
}

struct GpuOperand {
  Tensor keep;  // the tensor the pointer reads (a copy when one was needed)
  cuda::MatrixBatch m;
};

// A promoted operand [*X, R, C] as a cuBLAS batch over `batch` (Note [CUDA matmul
// operands]); the integer kernel reads any strides, so only its batch may need a copy.
GpuOperand gpu_operand(const Tensor& x, const Shape& batch, bool floating) {
  auto try_map = [&](const Tensor& t, GpuOperand* o) {
    const Shape& sz = t.sizes();
    const Shape& st = t.strides();
    const size_t n = sz.size();
    const int64_t R = sz[n - 2], C = sz[n - 1], rs = st[n - 2], cs = st[n - 1];
    if (floating && !cuda::gemm_layout_ok(R, C, rs, cs)) return false;
    int64_t S = 0;
    if (!single_batch_stride(Shape(sz.begin(), sz.end() - 2), Shape(st.begin(), st.end() - 2),
                             batch, &S))
      return false;
    o->keep = t;
    o->m = cuda::MatrixBatch{t.raw_data(), S, rs, cs};
    return true;
  };
  GpuOperand o;
  if (try_map(x, &o) || try_map(x.contiguous(), &o)) return o;
  Shape full = batch;
  full.push_back(x.sizes()[x.dim() - 2]);
  full.push_back(x.sizes()[x.dim() - 1]);
  const bool ok = try_map(x.expand(full).contiguous(), &o);
  MF_INTERNAL_ASSERT(ok, "matmul: operand of shape ", shape_str(x.sizes()), " strides ",
                     shape_str(x.strides()), " has no cuBLAS layout");
  return o;
}

void matmul_cuda(const Tensor& a, const Tensor& b, const Tensor& out) {
  const MatmulShapes s = matmul_shapes(a.sizes(), b.sizes());
  MF_INTERNAL_ASSERT(out.is_contiguous());
  const int dev = out.device().index;
  const int64_t batch = shape_numel(s.batch);
  if (out.numel() == 0) return;
  if (s.K == 0) {
    cuda::matmul(dev, a.dtype(), batch, s.M, s.N, 0, {}, {}, out.raw_data(), false);
    return;
  }
  const bool floating = is_floating(a.dtype());
  const GpuOperand ga = gpu_operand(a.dim() == 1 ? a.unsqueeze(0) : a, s.batch, floating);
  const GpuOperand gb = gpu_operand(b.dim() == 1 ? b.unsqueeze(1) : b, s.batch, floating);
  cuda::matmul(dev, a.dtype(), batch, s.M, s.N, s.K, ga.m, gb.m, out.raw_data(),
               cuda::allow_tf32());
}
#endif

}  // namespace

void register_linalg_ops(Dispatcher& d) {
  d.def("matmul")
      .set_meta([](const TensorList& in, const Attrs&) {
        const Tensor& a = in[0];
        const Tensor& b = in[1];
        MF_CHECK(a.dtype() == b.dtype(),
                 "matmul: expected both inputs to have the same dtype, got ", a.dtype(), " and ",
                 b.dtype(), " (shapes ", shape_str(a.sizes()), " and ", shape_str(b.sizes()), ")");
        MF_CHECK(a.dtype() != DType::Bool, "matmul: bool inputs are not supported (shapes ",
                 shape_str(a.sizes()), " and ", shape_str(b.sizes()), ")");
        const Device dev = common_device(in, "matmul");
        TensorMeta m;
        m.sizes = matmul_shapes(a.sizes(), b.sizes()).out;
        m.dtype = a.dtype();
        m.device = dev;
        return std::vector<TensorMeta>{m};
      })
      .set_cpu([](const TensorList& in, const TensorList& out, const Attrs&) {
        matmul_cpu(in[0], in[1], out[0]);
      })
#ifdef MICROFLEX_WITH_CUDA
      .set_cuda([](const TensorList& in, const TensorList& out, const Attrs&) {
        matmul_cuda(in[0], in[1], out[0]);
      })
#endif
      .save(0b11, 0)
      .set_backward([](const BackwardContext& ctx) {
        // Note [matmul ranks]: promote 1-D operands, then one formula for every case.
        const Tensor& a = ctx.inputs[0];
        const Tensor& b = ctx.inputs[1];
        const Tensor am = a.dim() == 1 ? a.unsqueeze(0) : a;  // [*A, M, K]
        const Tensor bm = b.dim() == 1 ? b.unsqueeze(1) : b;  // [*B, K, N]
        const MatmulShapes s = matmul_shapes(a.sizes(), b.sizes());
        const Tensor g = ctx.grad_output(0).reshape(s.out_matrix);  // [batch, M, N]
        TensorList r(2);
        if (ctx.needs(0))
          r[0] = sum_to(matmul(g, bm.transpose(-1, -2)), am.sizes()).reshape(a.sizes());
        if (ctx.needs(1) && b.dim() <= 2) {
          // A shared [K, N] operand: the batch folds into the contraction, [K, batch*M] @
          // [batch*M, N], instead of a batch of products summed afterwards. A transposed B
          // (linear's w.t()) gets (g^T a)^T, so the gradient reaches w contiguous.
          const int64_t K = am.sizes().back(), N = g.sizes().back();
          const int64_t rows = shape_numel(Shape(am.sizes().begin(), am.sizes().end() - 1));
          const Tensor a2 = am.reshape({rows, K});  // [batch*M, K]
          const Tensor g2 = g.reshape({rows, N});   // [batch*M, N]
          const bool b_transposed = b.dim() == 2 && b.sizes()[0] > 1 && b.sizes()[1] > 1 &&
                                    b.strides()[0] == 1 && b.strides()[1] >= b.sizes()[0];
          const Tensor gb = b_transposed ? matmul(g2.transpose(0, 1), a2).transpose(0, 1)
                                         : matmul(a2.transpose(0, 1), g2);
          r[1] = gb.reshape(b.sizes());
        } else if (ctx.needs(1)) {
          r[1] = sum_to(matmul(am.transpose(-1, -2), g), bm.sizes()).reshape(b.sizes());
        }
        return r;
      });
}

Tensor matmul(const Tensor& a, const Tensor& b) {
  static const OpDef& op = op_named("matmul");
  return call_op1(op, {a, b});
}

Tensor bmm(const Tensor& a, const Tensor& b) {
  MF_CHECK(a.defined() && b.defined(), "bmm: input ", a.defined() ? 1 : 0,
           " is an undefined tensor");
  MF_CHECK(a.dim() == 3 && b.dim() == 3, "bmm: expected 3-D tensors, got shapes ",
           shape_str(a.sizes()), " and ", shape_str(b.sizes()));
  MF_CHECK(a.sizes()[0] == b.sizes()[0], "bmm: batch sizes of shapes ", shape_str(a.sizes()),
           " and ", shape_str(b.sizes()), " differ (", a.sizes()[0], " != ", b.sizes()[0], ")");
  MF_CHECK(a.sizes()[2] == b.sizes()[1], "bmm: shapes ", shape_str(a.sizes()), " and ",
           shape_str(b.sizes()), " cannot be multiplied (", a.sizes()[2], " != ", b.sizes()[1],
           ")");
  common_device({a, b}, "bmm");
  return matmul(a, b);
}

Tensor linear(const Tensor& x, const Tensor& w, const Tensor& bias) {
  MF_CHECK(x.defined() && w.defined(), "linear: ", x.defined() ? "weight" : "input",
           " is an undefined tensor");
  MF_CHECK(w.dim() == 2, "linear: weight must be 2-D [out_features, in_features], got shape ",
           shape_str(w.sizes()));
  MF_CHECK(x.dim() >= 1 && x.sizes().back() == w.sizes()[1], "linear: input of shape ",
           shape_str(x.sizes()), " does not match weight of shape ", shape_str(w.sizes()),
           " (expected the input's last dim to be ", w.sizes()[1], ")");
  if (bias.defined()) {
    MF_CHECK(bias.dim() == 1 && bias.sizes()[0] == w.sizes()[0], "linear: bias of shape ",
             shape_str(bias.sizes()), " does not match weight of shape ", shape_str(w.sizes()),
             " (expected [", w.sizes()[0], "])");
  }
  common_device({x, w, bias}, "linear");
  MF_CHECK(x.dtype() == w.dtype(), "linear: input (", describe(x), ") and weight (", describe(w),
           ") must have the same dtype");
  const Tensor y = matmul(x, w.t());  // [*, out]
  return bias.defined() ? y + bias : y;
}

}  // namespace microflex
