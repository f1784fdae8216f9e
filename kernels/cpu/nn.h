// Fused CPU kernels of the nn ops: cross_entropy, layer_norm, rms_norm and dropout, each
// forward with its backward. Inputs are contiguous and already checked by the op glue.
// N = rows (batch), C = classes, M = rows normalised, D = features per row.
// "acc" below is float for float32/float16/bfloat16 data and double for float64 data.
#pragma once
#include <cstdint>

#include "core/dtype.h"

namespace microflex::cpu {

enum class LossReduction : uint8_t { None, Mean, Sum };

// The first row whose target is neither ignore_index nor in [0, C) (its value in
// *value), or -1 if none.
int64_t first_bad_target(const void* target, DType target_type, int64_t n, int64_t c,
                         int64_t ignore_index, int64_t* value);

// logits (N, C) of `type`, target (N) int32/int64. loss: (N) for None, one element
// otherwise, of `type`; lse (N) acc: log-sum-exp of each row, kept for the backward.
// Mean divides by the number of non-ignored rows (NaN when all rows are ignored).
void cross_entropy_forward(DType type, const void* logits, DType target_type, const void* target,
                           int64_t n, int64_t c, int64_t ignore_index, double label_smoothing,
                           LossReduction reduction, void* loss, void* lse);

// grad: (N) for None, one element otherwise, of `type`; dlogits (N, C) of `type`:
// (softmax - smoothed one-hot) * grad / count, zero on ignored rows.
void cross_entropy_backward(DType type, const void* grad, const void* logits, DType target_type,
                            const void* target, const void* lse, int64_t n, int64_t c,
                            int64_t ignore_index, double label_smoothing, LossReduction reduction,
                            void* dlogits);

// x, out (M, D) of `type`; weight, bias (D) acc or null; mean, rstd (M) acc.
void layer_norm_forward(DType type, const void* x, const void* weight, const void* bias, int64_t m,
                        int64_t d, double eps, void* out, void* mean, void* rstd);

// dout, x, dx (M, D) of `type`; mean, rstd (M) acc; weight (D) acc or null;
// dweight, dbias (D) acc.
void layer_norm_backward(DType type, const void* dout, const void* x, const void* mean,
                         const void* rstd, const void* weight, int64_t m, int64_t d, void* dx,
                         void* dweight, void* dbias);

// x, out (M, D) of `type`; weight (D) acc or null; rstd (M) acc.
void rms_norm_forward(DType type, const void* x, const void* weight, int64_t m, int64_t d,
                      double eps, void* out, void* rstd);

// dout, x, dx (M, D) of `type`; rstd (M) acc; weight (D) acc or null; dweight (D) acc.
void rms_norm_backward(DType type, const void* dout, const void* x, const void* rstd,
                       const void* weight, int64_t m, int64_t d, void* dx, void* dweight);

// out[i] = keep(i) ? x[i] / (1 - p) : 0 over n elements, keep from the Philox stream
// (seed, offset) (philox::dropout_keep). Forward and backward are the same map.
void dropout_apply(DType type, const void* x, int64_t n, double p, uint64_t seed, uint64_t offset,
                   void* out);

}  // namespace microflex::cpu
