// Float64 references for the model layers, written with plain loops over row-major
// vectors: linear, layer/RMS norm, gelu (tanh), rotary, multi-head attention with scalar
// mask and score functions, the nanoGPT block and GPT, cross entropy.
#pragma once
#include <cmath>
#include <functional>
#include <limits>
#include <random>
#include <vector>

#include "microflex/microflex.h"

namespace mftest {

using Vec = std::vector<double>;

inline Vec values(const microflex::Tensor& t) {
  return t.defined() ? t.to_vector<double>() : Vec();
}

inline Vec normal_values(int64_t n, uint32_t seed, double scale = 1.0) {
  std::mt19937 gen(seed);
  std::normal_distribution<double> dist(0.0, scale);
  Vec v(static_cast<size_t>(n));
  for (double& x : v) x = dist(gen);
  return v;
}

inline microflex::Tensor normal_f64(const microflex::Shape& s, uint32_t seed, double scale = 1.0) {
  return microflex::from_vector(normal_values(microflex::shape_numel(s), seed, scale), s,
                                {.dtype = microflex::DType::Float64});
}

// x [N, in], w [out, in], b [out] or empty -> [N, out]
inline Vec linear_ref(const Vec& x, const Vec& w, const Vec& b, int64_t N, int64_t in,
                      int64_t out) {
  Vec y(static_cast<size_t>(N * out));
  for (int64_t n = 0; n < N; ++n)
    for (int64_t o = 0; o < out; ++o) {
      double s = b.empty() ? 0.0 : b[o];
      for (int64_t i = 0; i < in; ++i) s += x[n * in + i] * w[o * in + i];
      y[n * out + o] = s;
    }
  return y;
}

// Over the last dim C of x [N, C].
inline Vec layer_norm_ref(const Vec& x, const Vec& w, const Vec& b, int64_t N, int64_t C,
                          double eps) {
  Vec y(x.size());
  for (int64_t n = 0; n < N; ++n) {
    double mean = 0, var = 0;
    for (int64_t c = 0; c < C; ++c) mean += x[n * C + c];
    mean /= C;
    for (int64_t c = 0; c < C; ++c) var += (x[n * C + c] - mean) * (x[n * C + c] - mean);
    var /= C;
    for (int64_t c = 0; c < C; ++c)
      y[n * C + c] = (x[n * C + c] - mean) / std::sqrt(var + eps) * w[c] + (b.empty() ? 0.0 : b[c]);
  }
  return y;
}

inline Vec rms_norm_ref(const Vec& x, const Vec& w, int64_t N, int64_t C, double eps) {
  Vec y(x.size());
  for (int64_t n = 0; n < N; ++n) {
    double ms = 0;
    for (int64_t c = 0; c < C; ++c) ms += x[n * C + c] * x[n * C + c];
    ms /= C;
    for (int64_t c = 0; c < C; ++c) y[n * C + c] = x[n * C + c] / std::sqrt(ms + eps) * w[c];
  }
  return y;
}

inline double gelu_tanh(double x) {
  const double k = std::sqrt(2.0 / M_PI);
  return 0.5 * x * (1.0 + std::tanh(k * (x + 0.044715 * x * x * x)));
}

using MaskFn = std::function<bool(int64_t b, int64_t h, int64_t q, int64_t kv)>;
using ScoreFn = std::function<double(double s, int64_t b, int64_t h, int64_t q, int64_t kv)>;

// Rotates pairs (i, i + D/2) of one head vector at position t.
inline void rotate_ref(double* x, int64_t D, int64_t t, double base) {
  for (int64_t i = 0; i < D / 2; ++i) {
    const double a = static_cast<double>(t) * std::pow(base, -2.0 * static_cast<double>(i) / D);
    const double x1 = x[i], x2 = x[i + D / 2];
    x[i] = x1 * std::cos(a) - x2 * std::sin(a);
    x[i + D / 2] = x1 * std::sin(a) + x2 * std::cos(a);
  }
}

// Multi-head attention of x [B, T, C] with the weights of c_attn and c_proj.
struct AttnWeights {
  Vec w_attn, b_attn, w_proj, b_proj;
};

inline Vec attention_ref(const Vec& x, const AttnWeights& wt, int64_t B, int64_t T, int64_t C,
                         int64_t H, const MaskFn& mask, const ScoreFn& score, bool rotary = false,
                         double base = 10000.0) {
  const int64_t D = C / H;
  const Vec qkv = linear_ref(x, wt.w_attn, wt.b_attn, B * T, C, 3 * C);  // [B, T, 3C]
  Vec y(static_cast<size_t>(B * T * C), 0.0);
  std::vector<Vec> q(static_cast<size_t>(T), Vec(D)), k(static_cast<size_t>(T), Vec(D)),
      v(static_cast<size_t>(T), Vec(D));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h) {
      for (int64_t t = 0; t < T; ++t) {
        for (int64_t d = 0; d < D; ++d) {
          const int64_t row = (b * T + t) * 3 * C + h * D + d;
          q[t][d] = qkv[row];
          k[t][d] = qkv[row + C];
          v[t][d] = qkv[row + 2 * C];
        }
        if (rotary) {
          rotate_ref(q[t].data(), D, t, base);
          rotate_ref(k[t].data(), D, t, base);
        }
      }
      for (int64_t i = 0; i < T; ++i) {
        Vec s(static_cast<size_t>(T));
        double mx = -std::numeric_limits<double>::infinity();
        for (int64_t j = 0; j < T; ++j) {
          double dot = 0;
          for (int64_t d = 0; d < D; ++d) dot += q[i][d] * k[j][d];
          double sc = dot / std::sqrt(static_cast<double>(D));
          if (score) sc = score(sc, b, h, i, j);
          if (mask && !mask(b, h, i, j)) sc = -std::numeric_limits<double>::infinity();
          s[j] = sc;
          mx = std::max(mx, sc);
        }
        double l = 0;
        for (int64_t j = 0; j < T; ++j) l += std::exp(s[j] - mx);
        for (int64_t j = 0; j < T; ++j)
          for (int64_t d = 0; d < D; ++d)
            y[(b * T + i) * C + h * D + d] += std::exp(s[j] - mx) / l * v[j][d];
      }
    }
  return linear_ref(y, wt.w_proj, wt.b_proj, B * T, C, C);
}

struct BlockWeights {
  Vec ln1_w, ln1_b, ln2_w, ln2_b;
  AttnWeights attn;
  Vec fc_w, fc_b, proj_w, proj_b;
};

inline Vec mlp_ref(const Vec& x, const Vec& fc_w, const Vec& fc_b, const Vec& proj_w,
                   const Vec& proj_b, int64_t N, int64_t C) {
  Vec h = linear_ref(x, fc_w, fc_b, N, C, 4 * C);
  for (double& e : h) e = gelu_tanh(e);
  return linear_ref(h, proj_w, proj_b, N, 4 * C, C);
}

inline Vec block_ref(const Vec& x, const BlockWeights& w, int64_t B, int64_t T, int64_t C,
                     int64_t H, const MaskFn& mask, const ScoreFn& score, bool rotary) {
  const Vec a = attention_ref(layer_norm_ref(x, w.ln1_w, w.ln1_b, B * T, C, 1e-5), w.attn, B, T, C,
                              H, mask, score, rotary);
  Vec y(x.size());
  for (size_t i = 0; i < x.size(); ++i) y[i] = x[i] + a[i];
  const Vec m = mlp_ref(layer_norm_ref(y, w.ln2_w, w.ln2_b, B * T, C, 1e-5), w.fc_w, w.fc_b,
                        w.proj_w, w.proj_b, B * T, C);
  for (size_t i = 0; i < y.size(); ++i) y[i] += m[i];
  return y;
}

inline BlockWeights block_weights(const microflex::Block& blk) {
  BlockWeights w;
  w.ln1_w = values(blk.ln_1->weight);
  w.ln1_b = values(blk.ln_1->bias);
  w.ln2_w = values(blk.ln_2->weight);
  w.ln2_b = values(blk.ln_2->bias);
  w.attn = {values(blk.attn->c_attn->weight), values(blk.attn->c_attn->bias),
            values(blk.attn->c_proj->weight), values(blk.attn->c_proj->bias)};
  w.fc_w = values(blk.mlp->c_fc->weight);
  w.fc_b = values(blk.mlp->c_fc->bias);
  w.proj_w = values(blk.mlp->c_proj->weight);
  w.proj_b = values(blk.mlp->c_proj->bias);
  return w;
}

// Mean cross entropy of logits [N, V] against targets [N].
inline double cross_entropy_ref(const Vec& logits, const std::vector<int64_t>& t, int64_t N,
                                int64_t V) {
  double total = 0;
  for (int64_t n = 0; n < N; ++n) {
    double mx = -std::numeric_limits<double>::infinity();
    for (int64_t j = 0; j < V; ++j) mx = std::max(mx, logits[n * V + j]);
    double s = 0;
    for (int64_t j = 0; j < V; ++j) s += std::exp(logits[n * V + j] - mx);
    total += mx + std::log(s) - logits[n * V + t[n]];
  }
  return total / static_cast<double>(N);
}

}  // namespace mftest
