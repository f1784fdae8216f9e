// CPU kernels of cross_entropy, layer_norm, rms_norm and dropout (see kernels/cpu/nn.h):
// one row at a time, every sum in the acc type or wider.
#include "kernels/cpu/nn.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/cpu/philox.h"

namespace microflex::cpu {

namespace {

template <typename T>
int64_t first_bad_target_t(const T* t, int64_t n, int64_t c, int64_t ignore_index) {
  for (int64_t i = 0; i < n; ++i) {
    const int64_t v = static_cast<int64_t>(t[i]);
    if (v != ignore_index && (v < 0 || v >= c)) return i;
  }
  return -1;
}

// Calls f with the target pointer typed as int32_t or int64_t.
template <typename F>
void with_target(DType target_type, const void* target, F f) {
  MF_DISPATCH_INTEGRAL(target_type, "cross_entropy",
                       [&] { f(static_cast<const scalar_t*>(target)); });
}

}  // namespace

int64_t first_bad_target(const void* target, DType target_type, int64_t n, int64_t c,
                         int64_t ignore_index, int64_t* value) {
  int64_t bad = -1;
  with_target(target_type, target, [&](const auto* t) {
    bad = first_bad_target_t(t, n, c, ignore_index);
    if (bad >= 0) *value = static_cast<int64_t>(t[bad]);
  });
  return bad;
}

void cross_entropy_forward(DType type, const void* logits, DType target_type, const void* target,
                           int64_t n, int64_t c, int64_t ignore_index, double label_smoothing,
                           LossReduction reduction, void* loss, void* lse) {
  MF_DISPATCH_FLOATING(type, "cross_entropy", [&] {
    using T = scalar_t;
    using A = acc_t<T>;
    const T* x = static_cast<const T*>(logits);
    T* out = static_cast<T*>(loss);
    A* lse_out = static_cast<A*>(lse);
    const A eps = static_cast<A>(label_smoothing);
    const A cls = static_cast<A>(c);
    with_target(target_type, target, [&](const auto* tgt) {
      double total = 0.0;  // over rows, in double whatever the dtype
      int64_t count = 0;
      for (int64_t i = 0; i < n; ++i) {
        const T* row = x + i * c;  // (C)
        A mx = static_cast<A>(row[0]);
        for (int64_t j = 1; j < c; ++j) mx = std::max(mx, static_cast<A>(row[j]));
        A s = 0;
        for (int64_t j = 0; j < c; ++j) s += std::exp(static_cast<A>(row[j]) - mx);
        const A l = mx + std::log(s);
        lse_out[i] = l;
        const int64_t t = static_cast<int64_t>(tgt[i]);
        A row_loss = 0;
        if (t != ignore_index) {
          row_loss = (1 - eps) * (l - static_cast<A>(row[t]));
          if (eps != 0) {
            // -sum_j log_softmax_j as a sum of non-negative terms: no cancellation even
            // for logits of magnitude 1e4.
            A smooth = 0;
            for (int64_t j = 0; j < c; ++j) smooth += l - static_cast<A>(row[j]);
            row_loss += eps / cls * smooth;
          }
          ++count;
        }
        if (reduction == LossReduction::None) {
          out[i] = static_cast<T>(row_loss);
        } else {
          total += static_cast<double>(row_loss);
        }
      }
      // Mean over zero rows is 0 / 0 = NaN, as in PyTorch.
      if (reduction == LossReduction::Mean) total /= static_cast<double>(count);
      if (reduction != LossReduction::None) out[0] = static_cast<T>(static_cast<A>(total));
    });
  });
}

void cross_entropy_backward(DType type, const void* grad, const void* logits, DType target_type,
                            const void* target, const void* lse, int64_t n, int64_t c,
                            int64_t ignore_index, double label_smoothing, LossReduction reduction,
                            void* dlogits) {
  MF_DISPATCH_FLOATING(type, "cross_entropy_backward", [&] {
    using T = scalar_t;
    using A = acc_t<T>;
    const T* x = static_cast<const T*>(logits);
    const T* g = static_cast<const T*>(grad);
    const A* lse_in = static_cast<const A*>(lse);
    T* dx = static_cast<T*>(dlogits);
    const A eps = static_cast<A>(label_smoothing);
    const A off_target = eps / static_cast<A>(c);  // smoothed one-hot away from the target
    const A on_target = 1 - eps + off_target;
    with_target(target_type, target, [&](const auto* tgt) {
      A scale = 0;
      if (reduction != LossReduction::None) {
        int64_t count = 0;
        for (int64_t i = 0; i < n; ++i) count += static_cast<int64_t>(tgt[i]) != ignore_index;
        scale = static_cast<A>(g[0]);
        if (reduction == LossReduction::Mean) scale /= static_cast<A>(count);
      }
      for (int64_t i = 0; i < n; ++i) {
        const T* row = x + i * c;  // (C)
        T* drow = dx + i * c;      // (C)
        const int64_t t = static_cast<int64_t>(tgt[i]);
        if (t == ignore_index) {
          for (int64_t j = 0; j < c; ++j) drow[j] = static_cast<T>(A(0));
          continue;
        }
        const A gi = reduction == LossReduction::None ? static_cast<A>(g[i]) : scale;
        for (int64_t j = 0; j < c; ++j) {
          const A p = std::exp(static_cast<A>(row[j]) - lse_in[i]);
          drow[j] = static_cast<T>((p - (j == t ? on_target : off_target)) * gi);
        }
      }
    });
  });
}

void layer_norm_forward(DType type, const void* x, const void* weight, const void* bias, int64_t m,
                        int64_t d, double eps, void* out, void* mean, void* rstd) {
  MF_DISPATCH_FLOATING(type, "layer_norm", [&] {
    using T = scalar_t;
    using A = acc_t<T>;
    const T* xp = static_cast<const T*>(x);
    const A* w = static_cast<const A*>(weight);
    const A* b = static_cast<const A*>(bias);
    T* o = static_cast<T*>(out);
    A* mean_out = static_cast<A*>(mean);
    A* rstd_out = static_cast<A*>(rstd);
    for (int64_t i = 0; i < m; ++i) {
      const T* row = xp + i * d;  // (D)
      T* orow = o + i * d;        // (D)
      // Two passes (mean, then the mean of squared deviations): no cancellation when the
      // mean is large compared to the spread.
      A s = 0;
      for (int64_t j = 0; j < d; ++j) s += static_cast<A>(row[j]);
      const A mu = s / static_cast<A>(d);
      A ss = 0;
      for (int64_t j = 0; j < d; ++j) {
        const A dev = static_cast<A>(row[j]) - mu;
        ss += dev * dev;
      }
      const A r = A(1) / std::sqrt(ss / static_cast<A>(d) + static_cast<A>(eps));
      mean_out[i] = mu;
      rstd_out[i] = r;
      for (int64_t j = 0; j < d; ++j) {
        A y = (static_cast<A>(row[j]) - mu) * r;
        if (w) y *= w[j];
        if (b) y += b[j];
        orow[j] = static_cast<T>(y);
      }
    }
  });
}

// Note [Norm backward]
// With xhat = (x - mean) * rstd (layer_norm) or x * rstd (rms_norm) and g = dout * weight,
// per row of D features:
//   layer_norm: dx = rstd * (g - mean(g) - xhat * mean(g * xhat))
//   rms_norm:   dx = rstd * (g - xhat * mean(g * xhat))
// dweight = sum over rows of dout * xhat, dbias = sum over rows of dout, accumulated in
// double so long batches lose nothing.
void layer_norm_backward(DType type, const void* dout, const void* x, const void* mean,
                         const void* rstd, const void* weight, int64_t m, int64_t d, void* dx,
                         void* dweight, void* dbias) {
  MF_DISPATCH_FLOATING(type, "layer_norm_backward", [&] {
    using T = scalar_t;
    using A = acc_t<T>;
    const T* gp = static_cast<const T*>(dout);
    const T* xp = static_cast<const T*>(x);
    const A* mu = static_cast<const A*>(mean);
    const A* rs = static_cast<const A*>(rstd);
    const A* w = static_cast<const A*>(weight);
    T* dxp = static_cast<T*>(dx);
    std::vector<double> dw(static_cast<size_t>(d), 0.0), db(static_cast<size_t>(d), 0.0);
    for (int64_t i = 0; i < m; ++i) {
      const T* grow = gp + i * d;  // (D)
      const T* xrow = xp + i * d;  // (D)
      T* dxrow = dxp + i * d;      // (D)
      A sum_g = 0, sum_gx = 0;
      for (int64_t j = 0; j < d; ++j) {
        const A go = static_cast<A>(grow[j]);
        const A xhat = (static_cast<A>(xrow[j]) - mu[i]) * rs[i];
        const A g = w ? go * w[j] : go;
        sum_g += g;
        sum_gx += g * xhat;
        dw[j] += static_cast<double>(go * xhat);
        db[j] += static_cast<double>(go);
      }
      const A mean_g = sum_g / static_cast<A>(d), mean_gx = sum_gx / static_cast<A>(d);
      for (int64_t j = 0; j < d; ++j) {
        const A xhat = (static_cast<A>(xrow[j]) - mu[i]) * rs[i];
        const A g = w ? static_cast<A>(grow[j]) * w[j] : static_cast<A>(grow[j]);
        dxrow[j] = static_cast<T>(rs[i] * (g - mean_g - xhat * mean_gx));
      }
    }
    A* dwp = static_cast<A*>(dweight);
    A* dbp = static_cast<A*>(dbias);
    for (int64_t j = 0; j < d; ++j) {
      dwp[j] = static_cast<A>(dw[j]);
      dbp[j] = static_cast<A>(db[j]);
    }
  });
}

void rms_norm_forward(DType type, const void* x, const void* weight, int64_t m, int64_t d,
                      double eps, void* out, void* rstd) {
  MF_DISPATCH_FLOATING(type, "rms_norm", [&] {
    using T = scalar_t;
    using A = acc_t<T>;
    const T* xp = static_cast<const T*>(x);
    const A* w = static_cast<const A*>(weight);
    T* o = static_cast<T*>(out);
    A* rstd_out = static_cast<A*>(rstd);
    for (int64_t i = 0; i < m; ++i) {
      const T* row = xp + i * d;  // (D)
      T* orow = o + i * d;        // (D)
      A ss = 0;
      for (int64_t j = 0; j < d; ++j) {
        const A v = static_cast<A>(row[j]);
        ss += v * v;
      }
      const A r = A(1) / std::sqrt(ss / static_cast<A>(d) + static_cast<A>(eps));
      rstd_out[i] = r;
      for (int64_t j = 0; j < d; ++j) {
        A y = static_cast<A>(row[j]) * r;
        if (w) y *= w[j];
        orow[j] = static_cast<T>(y);
      }
    }
  });
}

void rms_norm_backward(DType type, const void* dout, const void* x, const void* rstd,
                       const void* weight, int64_t m, int64_t d, void* dx, void* dweight) {
  MF_DISPATCH_FLOATING(type, "rms_norm_backward", [&] {
    using T = scalar_t;
    using A = acc_t<T>;
    const T* gp = static_cast<const T*>(dout);
    const T* xp = static_cast<const T*>(x);
    const A* rs = static_cast<const A*>(rstd);
    const A* w = static_cast<const A*>(weight);
    T* dxp = static_cast<T*>(dx);
    std::vector<double> dw(static_cast<size_t>(d), 0.0);
    for (int64_t i = 0; i < m; ++i) {
      const T* grow = gp + i * d;  // (D)
      const T* xrow = xp + i * d;  // (D)
      T* dxrow = dxp + i * d;      // (D)
      A sum_gx = 0;
      for (int64_t j = 0; j < d; ++j) {
        const A go = static_cast<A>(grow[j]);
        const A xhat = static_cast<A>(xrow[j]) * rs[i];
        const A g = w ? go * w[j] : go;
        sum_gx += g * xhat;
        dw[j] += static_cast<double>(go * xhat);
      }
      const A mean_gx = sum_gx / static_cast<A>(d);
      for (int64_t j = 0; j < d; ++j) {
        const A xhat = static_cast<A>(xrow[j]) * rs[i];
        const A g = w ? static_cast<A>(grow[j]) * w[j] : static_cast<A>(grow[j]);
        dxrow[j] = static_cast<T>(rs[i] * (g - xhat * mean_gx));
      }
    }
    A* dwp = static_cast<A*>(dweight);
    for (int64_t j = 0; j < d; ++j) dwp[j] = static_cast<A>(dw[j]);
  });
}

void dropout_apply(DType type, const void* x, int64_t n, double p, uint64_t seed, uint64_t offset,
                   void* out) {
  MF_DISPATCH_FLOATING(type, "dropout", [&] {
    using T = scalar_t;
    using A = acc_t<T>;
    const T* xp = static_cast<const T*>(x);
    T* o = static_cast<T*>(out);
    // p = 1 keeps nothing; the scale is then never used (and would be inf).
    const A scale = p < 1.0 ? static_cast<A>(1.0 / (1.0 - p)) : A(0);
    for (int64_t i = 0; i < n; ++i) {
      const bool keep = philox::dropout_keep(seed, offset, static_cast<uint64_t>(i), p);
      o[i] = static_cast<T>(keep ? static_cast<A>(xp[i]) * scale : A(0));
    }
  });
}

}  // namespace microflex::cpu
