// Glue between FlexArgs and the fused kernel's launcher (kernels/cuda/flex_fused.h):
// eligibility, code generation of the mods, contiguous operands, outputs.
#include "ops/flex_attention/fused.h"

#include "autograd/grad_mode.h"
#include "ops/flex_attention/codegen.h"
#ifdef MICROFLEX_WITH_CUDA
#include "kernels/cuda/flex_fused.h"
#endif

namespace microflex {

namespace {

// Why the fused kernel cannot run, or "" when it can (generation errors come later).
std::string unsupported_reason(const FlexArgs& a) {
#ifndef MICROFLEX_WITH_CUDA
  return "this build has no CUDA backend";
#else
  const DType dt = a.q.dtype();
  if (!a.q.device().is_cuda()) return "inputs are not on a CUDA device";
  if (dt != DType::Float32 && dt != DType::Float16 && dt != DType::BFloat16)
    return "dtype " + std::string(dtype_name(dt)) + " is not float32, float16 or bfloat16";
  const int64_t D = a.q.size(3), Dv = a.v.size(3);
  if (D > 128 || Dv > 128 || D % 8 || Dv % 8)
    return "head dims D = " + std::to_string(D) + ", Dv = " + std::to_string(Dv) +
           " (need multiples of 8 up to 128)";
  if (!a.block_mask.empty() && (a.q_block != 128 || a.kv_block != 128))
    return "BlockMask block sizes other than 128";
  if (a.q.numel() > (int64_t{1} << 31) || a.k.numel() > (int64_t{1} << 31))
    return "tensors too large";
  if (is_grad_enabled()) {
    bool needs = a.q.requires_grad() || a.k.requires_grad() || a.v.requires_grad();
    for (const Tensor& t : a.score_captured) needs = needs || t.requires_grad();
    if (needs) return "a gradient is recorded (the backward is dense)";
  }
  return "";
#endif
}

}  // namespace

std::optional<TensorList> flex_try_fused_forward(const FlexArgs& a, FlexKernel kernel) {
  if (kernel == FlexKernel::Dense) return std::nullopt;
  const std::string why = unsupported_reason(a);
  if (!why.empty()) {
    MF_CHECK(kernel != FlexKernel::Fused, "flex_attention: the fused kernel cannot run: ", why);
    return std::nullopt;
  }
#ifndef MICROFLEX_WITH_CUDA
  return std::nullopt;
#else
  const FlexGraphFn* sg = a.score_fn ? a.score_fn.target<FlexGraphFn>() : nullptr;
  const FlexGraphFn* mg = a.mask_fn.target<FlexGraphFn>();
  cuda::FlexFusedArgs f;
  try {
    MF_CHECK(!a.score_fn || sg,
             "flex_attention: cannot generate GPU code for a score_mod "
             "that is not a traced graph; use the dense path");
    f.score_mod_src = sg ? flex_codegen::generate_score_mod(*sg->graph)
                         : "__device__ __forceinline__ float score_mod(float score, int, int, "
                           "int, int, const FlexCaptured&) { return score; }\n";
    f.mask_mod_src = mg ? flex_codegen::generate_mask_mod(*mg->graph)
                        : "__device__ __forceinline__ bool mask_mod(int, int, int, int, "
                          "const FlexCaptured&) { return true; }\n";
  } catch (const Error&) {
    if (kernel == FlexKernel::Fused) throw;
    return std::nullopt;
  }
  const Device dev = a.q.device();
  const Tensor q = a.q.contiguous(), k = a.k.contiguous(), v = a.v.contiguous();
  const int64_t B = q.size(0), Hq = q.size(1), M = q.size(2), Dv = v.size(3);
  Tensor out = empty({B, Hq, M, Dv}, {.dtype = q.dtype(), .device = dev});
  Tensor lse = empty({B, Hq, M}, {.dtype = DType::Float32, .device = dev});
  f.device = dev.index;
  f.in_dtype = q.dtype() == DType::Float32 ? 0 : q.dtype() == DType::Float16 ? 1 : 2;
  f.q = q.raw_data();
  f.k = k.raw_data();
  f.v = v.raw_data();
  f.out = out.raw_data();
  f.lse = static_cast<float*>(lse.raw_data());
  f.B = static_cast<int>(B);
  f.Hq = static_cast<int>(Hq);
  f.Hkv = static_cast<int>(k.size(1));
  f.M = static_cast<int>(M);
  f.N = static_cast<int>(k.size(2));
  f.D = static_cast<int>(q.size(3));
  f.Dv = static_cast<int>(Dv);
  f.scale = static_cast<float>(a.scale);
  TensorList mask;  // kept alive until the launch is queued
  if (!a.block_mask.empty()) {
    for (int i = 0; i < 4; ++i) mask.push_back(a.block_mask[i].contiguous());
    f.kv_num = static_cast<const int*>(mask[0].raw_data());
    f.kv_idx = static_cast<const int*>(mask[1].raw_data());
    f.full_num = static_cast<const int*>(mask[2].raw_data());
    f.full_idx = static_cast<const int*>(mask[3].raw_data());
    f.mask_b = static_cast<int>(mask[0].size(0));
    f.mask_h = static_cast<int>(mask[0].size(1));
    f.Mb = static_cast<int>(mask[0].size(2));
    f.Nb = static_cast<int>(mask[1].size(3));
  }
  auto refs = [](const TensorList& ts) {
    std::vector<cuda::FlexCapturedTensor> r;
    for (const Tensor& t : ts) r.push_back({t.raw_data(), t.sizes(), t.strides()});
    return r;
  };
  f.score_captured = refs(a.score_captured);
  f.mask_captured = refs(a.mask_captured);
  f.check_faults =
      (sg && flex_codegen::uses_index(*sg->graph)) || (mg && flex_codegen::uses_index(*mg->graph));
  Tensor fault = zeros({6}, {.dtype = DType::Int64, .device = dev});
  f.fault = fault.raw_data();
  cuda::flex_fused_forward(f);
  return TensorList{out, lse};
#endif
}

}  // namespace microflex
