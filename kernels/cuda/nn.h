// CUDA launchers of the fused nn kernels: cross_entropy, layer_norm, rms_norm, dropout,
// forward and backward, with the contracts of kernels/cpu/nn.h (contiguous buffers,
// device pointers on cuda:`device`). N = rows, C = classes, M = rows normalised,
// D = features per row; "acc" is float, or double for float64 data.
#pragma once
#include <cstdint>

#include "core/dtype.h"
#include "kernels/cpu/nn.h"

namespace microflex::cuda {

// A target that is neither ignore_index nor in [0, C): its row (-1 if none) and value.
struct BadTarget {
  int64_t row = -1;
  int64_t value = 0;
};

// logits (N, C), target (N) int32/int64; loss (N) for None or one element, lse (N) acc.
// A bad target is clamped into [0, C) for the computation and reported (the launcher
// waits for the stream to read the flag back); the caller raises the error.
BadTarget cross_entropy_forward(int device, DType type, const void* logits, DType target_type,
                                const void* target, int64_t n, int64_t c, int64_t ignore_index,
                                double label_smoothing, cpu::LossReduction reduction, void* loss,
                                void* lse);

// dlogits (N, C) = (softmax - smoothed one-hot) * grad / count, zero on ignored rows.
void cross_entropy_backward(int device, DType type, const void* grad, const void* logits,
                            DType target_type, const void* target, const void* lse, int64_t n,
                            int64_t c, int64_t ignore_index, double label_smoothing,
                            cpu::LossReduction reduction, void* dlogits);

// x, out (M, D); weight, bias (D) acc or null; mean, rstd (M) acc.
void layer_norm_forward(int device, DType type, const void* x, const void* weight, const void* bias,
                        int64_t m, int64_t d, double eps, void* out, void* mean, void* rstd);
// dout, x, dx (M, D); mean, rstd (M) acc; weight (D) acc or null; dweight, dbias (D) acc.
void layer_norm_backward(int device, DType type, const void* dout, const void* x, const void* mean,
                         const void* rstd, const void* weight, int64_t m, int64_t d, void* dx,
                         void* dweight, void* dbias);

// x, out (M, D); weight (D) acc or null; rstd (M) acc.
void rms_norm_forward(int device, DType type, const void* x, const void* weight, int64_t m,
                      int64_t d, double eps, void* out, void* rstd);
// dout, x, dx (M, D); rstd (M) acc; weight (D) acc or null; dweight (D) acc.
void rms_norm_backward(int device, DType type, const void* dout, const void* x, const void* rstd,
                       const void* weight, int64_t m, int64_t d, void* dx, void* dweight);

// out[i] = keep(i) ? x[i] / (1 - p) : 0 over n elements (philox::dropout_keep), the same
// mask as the CPU kernel bit for bit.
// keep[i] = philox::dropout_keep(seed, offset, ids[i], p) over n elements.
void dropout_keep(int device, const int64_t* ids, int64_t n, double p, uint64_t seed,
                  uint64_t offset, bool* keep);
void dropout_apply(int device, DType type, const void* x, int64_t n, double p, uint64_t seed,
                   uint64_t offset, void* out);

}  // namespace microflex::cuda
