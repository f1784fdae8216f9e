// Strided N-d loops for CPU kernels: walk the output index space once, handing each
// innermost run (length n, one stride per operand) to a callback. Operands are given as
// element strides; a broadcast dim has stride 0. No Tensor here: shapes and strides in.
#pragma once
#include <array>
#include <cstdint>
#include <vector>

namespace microflex::cpu {

// Calls inner(offsets, n, inner_strides) for each innermost run; offsets[k] is operand
// k's element offset of the run's first element.
template <size_t NT, typename F>
void strided_loop(const std::vector<int64_t>& sizes,
                  const std::array<const std::vector<int64_t>*, NT>& strides, F&& inner) {
  // Coalesce: drop size-1 dims and merge dims that are contiguous for every operand.
  std::vector<int64_t> sz;
  std::array<std::vector<int64_t>, NT> st;
  for (size_t d = 0; d < sizes.size(); ++d) {
    if (sizes[d] == 0) return;
    if (sizes[d] == 1) continue;
    bool merge = !sz.empty();
    for (size_t k = 0; k < NT && merge; ++k) merge = st[k].back() == (*strides[k])[d] * sizes[d];
    if (merge) {
      sz.back() *= sizes[d];
      for (size_t k = 0; k < NT; ++k) st[k].back() = (*strides[k])[d];
    } else {
      sz.push_back(sizes[d]);
      for (size_t k = 0; k < NT; ++k) st[k].push_back((*strides[k])[d]);
    }
  }
  std::array<int64_t, NT> inner_strides{};
  std::array<int64_t, NT> offs{};
  if (sz.empty()) {
    inner(offs.data(), int64_t(1), inner_strides.data());
    return;
  }
  const size_t nd = sz.size();
  for (size_t k = 0; k < NT; ++k) inner_strides[k] = st[k][nd - 1];
  const int64_t n = sz[nd - 1];
  std::vector<int64_t> idx(nd, 0);
  while (true) {
    inner(offs.data(), n, inner_strides.data());
    // Advance the outer index (all dims but the innermost).
    int64_t d = static_cast<int64_t>(nd) - 2;
    for (; d >= 0; --d) {
      ++idx[d];
      for (size_t k = 0; k < NT; ++k) offs[k] += st[k][d];
      if (idx[d] < sz[d]) break;
      for (size_t k = 0; k < NT; ++k) offs[k] -= st[k][d] * sz[d];
      idx[d] = 0;
    }
    if (d < 0) return;
  }
}

// out[i] = f(a[i]) over a strided index space; out and a may have different types.
template <typename Out, typename A, typename F>
void unary_loop(Out* out, const A* a, const std::vector<int64_t>& sizes,
                const std::vector<int64_t>& out_strides, const std::vector<int64_t>& a_strides,
                F f) {
  strided_loop<2>(sizes, {&out_strides, &a_strides},
                  [&](const int64_t* off, int64_t n, const int64_t* s) {
                    Out* o = out + off[0];
                    const A* x = a + off[1];
                    for (int64_t i = 0; i < n; ++i) o[i * s[0]] = f(x[i * s[1]]);
                  });
}

template <typename Out, typename A, typename B, typename F>
void binary_loop(Out* out, const A* a, const B* b, const std::vector<int64_t>& sizes,
                 const std::vector<int64_t>& out_strides, const std::vector<int64_t>& a_strides,
                 const std::vector<int64_t>& b_strides, F f) {
  strided_loop<3>(sizes, {&out_strides, &a_strides, &b_strides},
                  [&](const int64_t* off, int64_t n, const int64_t* s) {
                    Out* o = out + off[0];
                    const A* x = a + off[1];
                    const B* y = b + off[2];
                    if (s[0] == 1 && s[1] == 1 && s[2] == 1) {
                      for (int64_t i = 0; i < n; ++i) o[i] = f(x[i], y[i]);
                    } else {
                      for (int64_t i = 0; i < n; ++i) o[i * s[0]] = f(x[i * s[1]], y[i * s[2]]);
                    }
                  });
}

template <typename Out, typename A, typename B, typename C, typename F>
void ternary_loop(Out* out, const A* a, const B* b, const C* c, const std::vector<int64_t>& sizes,
                  const std::vector<int64_t>& out_strides, const std::vector<int64_t>& a_strides,
                  const std::vector<int64_t>& b_strides, const std::vector<int64_t>& c_strides,
                  F f) {
  strided_loop<4>(sizes, {&out_strides, &a_strides, &b_strides, &c_strides},
                  [&](const int64_t* off, int64_t n, const int64_t* s) {
                    Out* o = out + off[0];
                    const A* x = a + off[1];
                    const B* y = b + off[2];
                    const C* z = c + off[3];
                    for (int64_t i = 0; i < n; ++i)
                      o[i * s[0]] = f(x[i * s[1]], y[i * s[2]], z[i * s[3]]);
                  });
}

}  // namespace microflex::cpu
