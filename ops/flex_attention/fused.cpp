// Glue between FlexArgs and the fused kernels' launchers (kernels/cuda/flex_fused.h):
// eligibility, code generation of the mods, contiguous operands, outputs, and the
// captured-tensor gradient buffers of the backward.
#include "ops/flex_attention/fused.h"

#include "ops/elementwise.h"
#include "ops/flex_attention/codegen.h"
#include "ops/op_utils.h"
#ifdef MICROFLEX_WITH_CUDA
#include "kernels/cuda/flex_fused.h"
#endif

namespace microflex {

namespace {

#ifdef MICROFLEX_WITH_CUDA
int dtype_code(DType dt) {
  return dt == DType::Float32 ? 0 : dt == DType::Float16 ? 1 : 2;
}

#endif

// Why the fused kernels cannot run, or "" when they can (generation errors come later).
std::string unsupported_reason(const FlexArgs& a, bool backward) {
#ifndef MICROFLEX_WITH_CUDA
  (void)a;
  (void)backward;
  return "this build has no CUDA backend";
#else
  const DType dt = a.q.dtype();
  if (!a.q.device().is_cuda()) return "inputs are not on a CUDA device";
  if (dt != DType::Float32 && dt != DType::Float16 && dt != DType::BFloat16)
    return "dtype " + std::string(dtype_name(dt)) + " is not float32, float16 or bfloat16";
  const int64_t D = a.q.size(3), Dv = a.v.size(3);
  const int code = dtype_code(dt);
  const bool ok = D <= 256 && Dv <= 256 &&
                  (backward ? cuda::flex_fused_backward_supported(code, int(D), int(Dv))
                            : cuda::flex_fused_forward_supported(code, int(D), int(Dv)));
  if (!ok)
    return std::string(backward ? "the backward" : "the forward") + " with dtype " +
           dtype_name(dt) + " and head dims D = " + std::to_string(D) +
           ", Dv = " + std::to_string(Dv) +
           " (needs multiples of 8 up to 256 for bfloat16 / float16, 128 for float32)";
  if (!a.block_mask.empty() && (a.q_block != 128 || a.kv_block != 128))
    return "BlockMask block sizes other than 128";
  if (a.q.numel() > (int64_t{1} << 31) || a.k.numel() > (int64_t{1} << 31) ||
      a.v.numel() > (int64_t{1} << 31))
    return "tensors too large";
  return "";
#endif
}

#ifdef MICROFLEX_WITH_CUDA
// The traced graphs of the mods, or a generation error (Fused) / nothing (Auto).
bool graphs(const FlexArgs& a, FlexKernel kernel, const FlexGraphFn*& sg, const FlexGraphFn*& mg) {
  sg = a.score_fn ? a.score_fn.target<FlexGraphFn>() : nullptr;
  mg = a.mask_fn.target<FlexGraphFn>();
  if (!a.score_fn || sg) return true;
  MF_CHECK(kernel != FlexKernel::Fused,
           "flex_attention: cannot generate GPU code for a score_mod that is not a traced "
           "graph; use the dense path");
  return false;
}

// A contiguous tensor whose data is 16-byte aligned (the kernels load 16 bytes at a time).
Tensor aligned(const Tensor& t) {
  Tensor c = t.contiguous();
  if (reinterpret_cast<uintptr_t>(c.raw_data()) % 16 != 0) c = c.clone();
  return c;
}

// The launcher arguments shared by the forward and the backward; `keep` holds the
// tensors the pointers refer to until the launches are queued. The backward wants score_mod's
// captured tensors contiguous, so that the forward's element offsets also address their
// contiguous gradient buffers.
cuda::FlexFusedArgs prepare(const FlexArgs& a, const FlexGraphFn* sg, const FlexGraphFn* mg,
                            TensorList& keep, bool contiguous_score_captured = false) {
  cuda::FlexFusedArgs f;
  f.score_mod_src = sg ? flex_codegen::generate_score_mod(*sg->graph)
                       : "__device__ __forceinline__ float score_mod(float score, int, int, "
                         "int, int, const FlexCaptured&) { return score; }\n";
  f.mask_mod_src = mg ? flex_codegen::generate_mask_mod(*mg->graph) +
                            flex_codegen::generate_mask_mod_split(*mg->graph)
                      : flex_codegen::no_mask_mod();
  const Device dev = a.q.device();
  const Tensor q = aligned(a.q), k = aligned(a.k), v = aligned(a.v);
  keep.insert(keep.end(), {q, k, v});
  f.device = dev.index;
  f.in_dtype = dtype_code(q.dtype());
  f.q = q.raw_data();
  f.k = k.raw_data();
  f.v = v.raw_data();
  f.B = static_cast<int>(q.size(0));
  f.Hq = static_cast<int>(q.size(1));
  f.Hkv = static_cast<int>(k.size(1));
  f.M = static_cast<int>(q.size(2));
  f.N = static_cast<int>(k.size(2));
  f.D = static_cast<int>(q.size(3));
  f.Dv = static_cast<int>(v.size(3));
  f.scale = static_cast<float>(a.scale);
  f.dropout_p = a.dropout_p;
  f.dropout_seed = a.dropout_seed;
  f.dropout_offset = a.dropout_offset;
  if (!a.block_mask.empty()) {
    TensorList m;
    for (const Tensor& t : a.block_mask) m.push_back(t.contiguous());
    keep.insert(keep.end(), m.begin(), m.end());
    auto ptr = [&](int i) { return static_cast<const int*>(m[i].raw_data()); };
    f.kv = {ptr(0), ptr(1), ptr(2), ptr(3)};
    f.q_of_kv = {ptr(4), ptr(5), ptr(6), ptr(7)};
    f.mask_b = static_cast<int>(m[0].size(0));
    f.mask_h = static_cast<int>(m[0].size(1));
    f.Mb = static_cast<int>(m[0].size(2));
    f.Nb = static_cast<int>(m[1].size(3));
  }
  auto refs = [&](const TensorList& ts) {
    std::vector<cuda::FlexCapturedTensor> r;
    for (const Tensor& t : ts) r.push_back({t.raw_data(), t.sizes(), t.strides()});
    return r;
  };
  TensorList score_caps = a.score_captured;
  if (contiguous_score_captured)
    for (Tensor& t : score_caps) t = t.contiguous();
  keep.insert(keep.end(), score_caps.begin(), score_caps.end());
  f.score_captured = refs(score_caps);
  f.mask_captured = refs(a.mask_captured);
  // Reads proven in range need no fault read-back (a stream sync per call).
  const std::vector<int64_t> extents{f.B, f.Hq, f.M, f.N};
  auto may_fault = [&](const FlexGraphFn* fn, size_t first_arg) {
    return fn && flex_codegen::uses_index(*fn->graph) &&
           !flex_codegen::indices_in_range(*fn->graph, first_arg, extents);
  };
  f.check_faults = may_fault(sg, 1) || may_fault(mg, 0);
  Tensor fault = zeros({6}, {.dtype = DType::Int64, .device = dev});
  keep.push_back(fault);
  f.fault = fault.raw_data();
  return f;
}
#endif

}  // namespace

std::optional<TensorList> flex_try_fused_forward(const FlexArgs& a, FlexKernel kernel) {
  if (kernel == FlexKernel::Dense) return std::nullopt;
  const std::string why = unsupported_reason(a, false);
  if (!why.empty()) {
    MF_CHECK(kernel != FlexKernel::Fused, "flex_attention: the fused kernel cannot run: ", why);
    return std::nullopt;
  }
#ifndef MICROFLEX_WITH_CUDA
  return std::nullopt;
#else
  const FlexGraphFn *sg, *mg;
  if (!graphs(a, kernel, sg, mg)) return std::nullopt;
  TensorList keep;
  cuda::FlexFusedArgs f;
  try {
    f = prepare(a, sg, mg, keep);
  } catch (const Error&) {
    if (kernel == FlexKernel::Fused) throw;
    return std::nullopt;
  }
  const Device dev = a.q.device();
  Tensor out = empty({f.B, f.Hq, f.M, f.Dv}, {.dtype = a.q.dtype(), .device = dev});
  Tensor lse = empty({f.B, f.Hq, f.M}, {.dtype = DType::Float32, .device = dev});
  f.out = out.raw_data();
  f.lse = static_cast<float*>(lse.raw_data());
  cuda::flex_fused_forward(f);
  return TensorList{out, lse};
#endif
}

std::optional<TensorList> flex_try_fused_backward(const FlexArgs& a, const Tensor& out,
                                                  const Tensor& lse, const Tensor& grad_out,
                                                  const FlexBackwardOptions& o) {
  if (o.kernel == FlexKernel::Dense) return std::nullopt;
  const std::string why = unsupported_reason(a, true);
  if (!why.empty()) {
    MF_CHECK(o.kernel != FlexKernel::Fused,
             "flex_attention: the fused backward kernel cannot run: ", why);
    return std::nullopt;
  }
#ifndef MICROFLEX_WITH_CUDA
  (void)out;
  (void)lse;
  (void)grad_out;
  return std::nullopt;
#else
  const FlexGraphFn *sg, *mg;
  if (!graphs(a, o.kernel, sg, mg)) return std::nullopt;
  // Which captured tensors get a gradient: those the caller marks (all floating ones
  // when unmarked, like the dense path).
  std::vector<bool> needs;
  for (size_t i = 0; i < a.score_captured.size(); ++i)
    needs.push_back(is_floating(a.score_captured[i].dtype()) &&
                    (o.captured_needs_grad.empty() || o.captured_needs_grad.at(i)));
  TensorList keep;
  cuda::FlexFusedArgs f;
  try {
    f = prepare(a, sg, mg, keep, true);
    f.score_mod_backward_src =
        sg ? flex_codegen::generate_score_mod_backward(*sg->graph, needs)
           : "__device__ __forceinline__ float score_mod_backward(float, int, int, int, int, "
             "const FlexCaptured&, float grad, const FlexCapturedGrad&) { return grad; }\n";
  } catch (const Error&) {
    if (o.kernel == FlexKernel::Fused) throw;
    return std::nullopt;
  }
  const Device dev = a.q.device();
  const Tensor o_c = aligned(as_dtype(out, a.q.dtype()));
  const Tensor go = aligned(as_dtype(grad_out, a.q.dtype()));
  const Tensor lse_c = as_dtype(lse, DType::Float32).contiguous();
  Tensor delta = empty({f.B, f.Hq, f.M}, {.dtype = DType::Float32, .device = dev});
  Tensor dq = empty(a.q.sizes(), {.dtype = a.q.dtype(), .device = dev});
  Tensor dk = empty(a.k.sizes(), {.dtype = a.k.dtype(), .device = dev});
  Tensor dv = empty(a.v.sizes(), {.dtype = a.v.dtype(), .device = dev});
  f.out = const_cast<void*>(o_c.raw_data());
  f.grad_out = go.raw_data();
  f.lse = static_cast<float*>(const_cast<void*>(lse_c.raw_data()));
  f.delta = static_cast<float*>(delta.raw_data());
  f.dq = dq.raw_data();
  f.dk = dk.raw_data();
  f.dv = dv.raw_data();
  f.deterministic = o.deterministic;
  // Gradient buffers (float32, or int64 fixed point) shaped like the contiguous captured
  // tensors prepare() passed, so the forward's element offsets address both.
  TensorList cap_grads;
  for (size_t i = 0; i < a.score_captured.size(); ++i) {
    Tensor g;
    if (needs[i])
      g = zeros(a.score_captured[i].sizes(),
                {.dtype = o.deterministic ? DType::Int64 : DType::Float32, .device = dev});
    cap_grads.push_back(g);
    f.captured_grad.push_back(g.defined() ? g.raw_data() : nullptr);
  }
  cuda::flex_fused_backward(f);
  TensorList res{dq, dk, dv};
  for (size_t i = 0; i < cap_grads.size(); ++i) {
    Tensor g = cap_grads[i];
    if (g.defined() && o.deterministic) g = as_dtype(g, DType::Float64).mul_(1.0 / 4294967296.0);
    res.push_back(g.defined() ? as_dtype(g, a.score_captured[i].dtype()) : Tensor());
  }
  return res;
#endif
}

}  // namespace microflex
