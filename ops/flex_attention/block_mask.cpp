// Building and describing BlockMasks (Note [Block mask layout] in block_mask.h).
#include "ops/flex_attention/block_mask.h"

#include <sstream>

#include "autograd/grad_mode.h"
#include "core/dispatch.h"
#include "core/fake.h"
#include "ops/elementwise.h"
#include "ops/op_utils.h"

namespace microflex {

namespace {

int64_t ceil_div(int64_t a, int64_t b) {
  return (a + b - 1) / b;
}

// Host-side block lists for one (B, H) grid, before they become tensors.
struct Lists {
  int64_t B, H, Mb, Nb;
  std::vector<int32_t> kv_num, kv_idx, full_num, full_idx;
  Lists(int64_t b, int64_t h, int64_t mb, int64_t nb)
      : B(b),
        H(h),
        Mb(mb),
        Nb(nb),
        kv_num(b * h * mb, 0),
        kv_idx(b * h * mb * nb, -1),
        full_num(b * h * mb, 0),
        full_idx(b * h * mb * nb, -1) {}
  void add(int64_t b, int64_t h, int64_t mb, int64_t nb, bool full) {
    const int64_t row = (b * H + h) * Mb + mb;
    auto& num = full ? full_num : kv_num;
    auto& idx = full ? full_idx : kv_idx;
    idx[row * Nb + num[row]++] = static_cast<int32_t>(nb);
  }
};

// The transpose: per kv block, the q blocks that list it.
void transpose(const std::vector<int32_t>& num, const std::vector<int32_t>& idx, int64_t B,
               int64_t H, int64_t Mb, int64_t Nb, std::vector<int32_t>* tnum,
               std::vector<int32_t>* tidx) {
  tnum->assign(B * H * Nb, 0);
  tidx->assign(B * H * Nb * Mb, -1);
  for (int64_t bh = 0; bh < B * H; ++bh)
    for (int64_t m = 0; m < Mb; ++m) {
      const int64_t row = bh * Mb + m;
      for (int32_t j = 0; j < num[row]; ++j) {
        const int64_t n = idx[row * Nb + j];
        const int64_t trow = bh * Nb + n;
        (*tidx)[trow * Mb + (*tnum)[trow]++] = static_cast<int32_t>(m);
      }
    }
}

Tensor i32(const std::vector<int32_t>& v, const Shape& s) {
  return from_vector(v, s);
}

BlockMask from_lists(const Lists& l, int64_t bs, int64_t M, int64_t N, MaskMod mm) {
  BlockMask bm;
  bm.kv_num_blocks = i32(l.kv_num, {l.B, l.H, l.Mb});
  bm.kv_indices = i32(l.kv_idx, {l.B, l.H, l.Mb, l.Nb});
  bm.full_kv_num_blocks = i32(l.full_num, {l.B, l.H, l.Mb});
  bm.full_kv_indices = i32(l.full_idx, {l.B, l.H, l.Mb, l.Nb});
  std::vector<int32_t> qn, qi, fqn, fqi;
  transpose(l.kv_num, l.kv_idx, l.B, l.H, l.Mb, l.Nb, &qn, &qi);
  transpose(l.full_num, l.full_idx, l.B, l.H, l.Mb, l.Nb, &fqn, &fqi);
  bm.q_num_blocks = i32(qn, {l.B, l.H, l.Nb});
  bm.q_indices = i32(qi, {l.B, l.H, l.Nb, l.Mb});
  bm.full_q_num_blocks = i32(fqn, {l.B, l.H, l.Nb});
  bm.full_q_indices = i32(fqi, {l.B, l.H, l.Nb, l.Mb});
  bm.q_block_size = bs;
  bm.kv_block_size = bs;
  bm.q_len = M;
  bm.kv_len = N;
  bm.mask_mod = std::move(mm);
  return bm;
}

// Block masks are built from real host tensors whatever mode is active.
struct RealHostScope {
  NoGradGuard no_grad;
  ExcludeKeyGuard no_modes{DispatchKeySet{DispatchKey::Tracing, DispatchKey::Fake}};
};

Tensor index_grid(int64_t n, int64_t dim, Device device, int64_t start = 0) {
  Shape s{1, 1, 1, 1};
  s[dim] = n;
  return arange(start, start + n, 1, {.dtype = DType::Int32, .device = device}).view(s);
}

// mask_mod's answer for rows [m0, m0 + bm) as a contiguous host bool [B, H, bm, N]. The
// indices live on `device`, where the tensors mask_mod captures must be too (as in PyTorch,
// create_block_mask evaluates mask_mod on its device).
Tensor mask_rows(const MaskMod& mm, int64_t B, int64_t H, int64_t m0, int64_t bm, int64_t N,
                 Device device, const char* op) {
  Tensor r = mm(index_grid(B, 0, device), index_grid(H, 1, device), index_grid(bm, 2, device, m0),
                index_grid(N, 3, device));
  MF_CHECK(r.defined() && r.dtype() == DType::Bool, op,
           ": mask_mod must return a bool tensor, got ",
           r.defined() ? describe(r) : std::string("an undefined tensor"));
  const Shape want{B, H, bm, N};
  Shape b;
  try {
    b = broadcast_shapes(r.sizes(), want, op);
  } catch (const Error&) {
    b.clear();
  }
  MF_CHECK(b == want, op, ": mask_mod returned shape ", shape_str(r.sizes()),
           ", which does not broadcast to [B, H, M, N] = ", shape_str(want));
  return r.expand(want).contiguous().to(Device::cpu());
}

}  // namespace

BlockMask create_block_mask(const MaskMod& mask_mod, int64_t B, int64_t H, int64_t M, int64_t N,
                            Device device, int64_t block_size) {
  MF_CHECK(mask_mod != nullptr, "create_block_mask: mask_mod is empty");
  MF_CHECK(B >= 1 && H >= 1 && M >= 1 && N >= 1, "create_block_mask: B, H, M, N must be >= 1, got ",
           B, ", ", H, ", ", M, ", ", N);
  MF_CHECK(block_size >= 1, "create_block_mask: block_size must be >= 1, got ", block_size);
  RealHostScope scope;
  const int64_t Mb = ceil_div(M, block_size), Nb = ceil_div(N, block_size);
  Lists l(B, H, Mb, Nb);
  for (int64_t mb = 0; mb < Mb; ++mb) {
    const int64_t m0 = mb * block_size, rows = std::min(block_size, M - m0);
    const Tensor r = mask_rows(mask_mod, B, H, m0, rows, N, device, "create_block_mask");
    const bool* p = r.data_ptr<bool>();
    for (int64_t b = 0; b < B; ++b)
      for (int64_t h = 0; h < H; ++h)
        for (int64_t nb = 0; nb < Nb; ++nb) {
          const int64_t n0 = nb * block_size, cols = std::min(block_size, N - n0);
          bool any = false, all = true;
          for (int64_t i = 0; i < rows && (all || !any); ++i) {
            const bool* row = p + ((b * H + h) * rows + i) * N + n0;
            for (int64_t j = 0; j < cols; ++j) {
              any |= row[j];
              all &= row[j];
            }
          }
          if (any) l.add(b, h, mb, nb, all);
        }
  }
  BlockMask bm = from_lists(l, block_size, M, N, mask_mod);
  bm = device.is_cpu() ? bm : bm.to(device);
  // Under fake mode every tensor made is fake, block masks too (shapes and memory only).
  if (fake_mode_active())
    for (Tensor* t :
         {&bm.kv_num_blocks, &bm.kv_indices, &bm.full_kv_num_blocks, &bm.full_kv_indices,
          &bm.q_num_blocks, &bm.q_indices, &bm.full_q_num_blocks, &bm.full_q_indices})
      *t = to_fake(*t);
  return bm;
}

Tensor create_mask(const MaskMod& mask_mod, int64_t B, int64_t H, int64_t M, int64_t N,
                   Device device) {
  MF_CHECK(mask_mod != nullptr, "create_mask: mask_mod is empty");
  MF_CHECK(B >= 1 && H >= 1 && M >= 1 && N >= 1, "create_mask: B, H, M, N must be >= 1, got ", B,
           ", ", H, ", ", M, ", ", N);
  Tensor r;
  {
    RealHostScope scope;
    r = mask_rows(mask_mod, B, H, 0, M, N, device, "create_mask");
  }
  return r.to(device);
}

MaskMod and_masks(const MaskMod& a, const MaskMod& b) {
  return [a, b](const Tensor& bi, const Tensor& h, const Tensor& q, const Tensor& kv) {
    return logical_and(a(bi, h, q, kv), b(bi, h, q, kv));
  };
}

MaskMod or_masks(const MaskMod& a, const MaskMod& b) {
  return [a, b](const Tensor& bi, const Tensor& h, const Tensor& q, const Tensor& kv) {
    return logical_or(a(bi, h, q, kv), b(bi, h, q, kv));
  };
}

MaskMod noop_mask() {
  return [](const Tensor& b, const Tensor&, const Tensor&, const Tensor&) {
    return full({}, true, {.dtype = DType::Bool, .device = b.device()});
  };
}

Tensor BlockMask::to_dense() const {
  const int64_t B = batch(), H = heads(), Mb = num_q_blocks(), Nb = num_kv_blocks();
  std::vector<int32_t> d(B * H * Mb * Nb, 0);
  const auto kn = kv_num_blocks.to_vector<int32_t>(), ki = kv_indices.to_vector<int32_t>();
  const auto fn = full_kv_num_blocks.to_vector<int32_t>(),
             fi = full_kv_indices.to_vector<int32_t>();
  for (int64_t row = 0; row < B * H * Mb; ++row) {
    for (int32_t j = 0; j < kn[row]; ++j) d[row * Nb + ki[row * Nb + j]] = 1;
    for (int32_t j = 0; j < fn[row]; ++j) d[row * Nb + fi[row * Nb + j]] = 2;
  }
  return from_vector(d, {B, H, Mb, Nb});
}

double BlockMask::sparsity() const {
  const auto kn = kv_num_blocks.to_vector<int32_t>(), fn = full_kv_num_blocks.to_vector<int32_t>();
  int64_t used = 0;
  for (size_t i = 0; i < kn.size(); ++i) used += kn[i] + fn[i];
  const double total = static_cast<double>(batch() * heads() * num_q_blocks() * num_kv_blocks());
  return 100.0 * (1.0 - static_cast<double>(used) / total);
}

std::string BlockMask::to_string(int64_t max_rows) const {
  std::ostringstream os;
  os.setf(std::ios::fixed);
  os.precision(2);
  os << "BlockMask(shape=(" << batch() << ", " << heads() << ", " << q_len << ", " << kv_len
     << "), block_size=" << q_block_size << ", sparsity=" << sparsity() << "%)\n";
  const Tensor d = to_dense();
  const auto v = d.to_vector<int32_t>();
  const int64_t Mb = num_q_blocks(), Nb = num_kv_blocks();
  for (int64_t bh = 0; bh < batch() * heads(); ++bh) {
    os << "(" << bh / heads() << ", " << bh % heads() << ")\n";
    for (int64_t m = 0; m < std::min(Mb, max_rows); ++m) {
      for (int64_t n = 0; n < std::min(Nb, max_rows); ++n) {
        const int32_t c = v[(bh * Mb + m) * Nb + n];
        os << (c == 2 ? "██" : c == 1 ? "░░" : "  ");
      }
      os << (Nb > max_rows ? " ...\n" : "\n");
    }
    if (Mb > max_rows) os << "...\n";
  }
  return os.str();
}

BlockMask BlockMask::adjust(int64_t new_q_len, int64_t new_kv_len) const {
  MF_CHECK(new_q_len >= 1 && new_kv_len >= 1 && new_q_len <= q_len && new_kv_len <= kv_len,
           "BlockMask::adjust: new lengths ", new_q_len, "x", new_kv_len,
           " must be between 1 and the built lengths ", q_len, "x", kv_len);
  const int64_t B = batch(), H = heads(), Mb0 = num_q_blocks(), Nb0 = num_kv_blocks();
  const int64_t Mb = ceil_div(new_q_len, q_block_size), Nb = ceil_div(new_kv_len, kv_block_size);
  Lists l(B, H, Mb, Nb);
  const auto kn = kv_num_blocks.to_vector<int32_t>(), ki = kv_indices.to_vector<int32_t>();
  const auto fn = full_kv_num_blocks.to_vector<int32_t>(),
             fi = full_kv_indices.to_vector<int32_t>();
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t m = 0; m < Mb; ++m) {
        const int64_t row = (b * H + h) * Mb0 + m;
        for (int32_t j = 0; j < kn[row]; ++j)
          if (ki[row * Nb0 + j] < Nb) l.add(b, h, m, ki[row * Nb0 + j], false);
        for (int32_t j = 0; j < fn[row]; ++j)
          if (fi[row * Nb0 + j] < Nb) l.add(b, h, m, fi[row * Nb0 + j], true);
      }
  BlockMask out = from_lists(l, q_block_size, new_q_len, new_kv_len, mask_mod);
  return kv_num_blocks.is_cpu() ? out : out.to(kv_num_blocks.device());
}

namespace {

// The rows of `src` for batches [b0, b0 + nb), heads [h0, h0 + nh) and query blocks
// [m0, m1), all kv blocks; the q_* lists are the transpose of the kept rows.
BlockMask keep_rows(const BlockMask& src, int64_t b0, int64_t nb, int64_t h0, int64_t nh,
                    int64_t m0, int64_t m1, int64_t q_len, MaskMod mm) {
  const int64_t H0 = src.heads(), Mb0 = src.num_q_blocks(), Nb = src.num_kv_blocks();
  Lists l(nb, nh, m1 - m0, Nb);
  const auto kn = src.kv_num_blocks.to_vector<int32_t>(), ki = src.kv_indices.to_vector<int32_t>();
  const auto fn = src.full_kv_num_blocks.to_vector<int32_t>(),
             fi = src.full_kv_indices.to_vector<int32_t>();
  for (int64_t b = 0; b < nb; ++b)
    for (int64_t h = 0; h < nh; ++h)
      for (int64_t m = m0; m < m1; ++m) {
        const int64_t row = ((b0 + b) * H0 + h0 + h) * Mb0 + m;
        for (int32_t j = 0; j < kn[row]; ++j) l.add(b, h, m - m0, ki[row * Nb + j], false);
        for (int32_t j = 0; j < fn[row]; ++j) l.add(b, h, m - m0, fi[row * Nb + j], true);
      }
  BlockMask out = from_lists(l, src.q_block_size, q_len, src.kv_len, std::move(mm));
  out.kv_block_size = src.kv_block_size;
  return src.kv_num_blocks.is_cpu() ? out : out.to(src.kv_num_blocks.device());
}

// A Python-style index into a dimension of n.
int64_t wrap_index(int64_t i, int64_t n, const char* op, const char* what, const char* dim) {
  MF_CHECK(i >= -n && i < n, op, ": ", what, " index ", i, " is out of range for ", dim, " = ", n);
  return i < 0 ? i + n : i;
}

}  // namespace

BlockMask BlockMask::select_batch(int64_t b) const {
  const int64_t B = batch(), i = wrap_index(b, B, "BlockMask::select_batch", "batch", "B");
  if (B == 1) return *this;
  MaskMod mm;
  if (mask_mod)
    mm = [inner = mask_mod, i](const Tensor& bi, const Tensor& h, const Tensor& q,
                               const Tensor& kv) { return inner(bi * 0 + i, h, q, kv); };
  return keep_rows(*this, i, 1, 0, heads(), 0, num_q_blocks(), q_len, std::move(mm));
}

BlockMask BlockMask::select_head(int64_t h) const {
  const int64_t H = heads(), i = wrap_index(h, H, "BlockMask::select_head", "head", "H");
  if (H == 1) return *this;
  MaskMod mm;
  if (mask_mod)
    mm = [inner = mask_mod, i](const Tensor& b, const Tensor& hi, const Tensor& q,
                               const Tensor& kv) { return inner(b, hi * 0 + i, q, kv); };
  return keep_rows(*this, 0, batch(), i, 1, 0, num_q_blocks(), q_len, std::move(mm));
}

BlockMask BlockMask::slice_q_blocks(int64_t start, std::optional<int64_t> end) const {
  const int64_t Mb = num_q_blocks();
  const int64_t s = start < 0 ? start + Mb : start;
  const int64_t e = !end ? Mb : *end < 0 ? *end + Mb : *end;
  MF_CHECK(s >= 0 && e <= Mb && s < e, "BlockMask::slice_q_blocks: query blocks [", start, ", ",
           end ? std::to_string(*end) : std::string("end"), ") select no valid non-empty range of ",
           Mb, " query blocks (q_len ", q_len, ", block size ", q_block_size, ")");
  const int64_t offset = s * q_block_size;
  const int64_t new_q_len = std::min(e * q_block_size, q_len) - offset;
  MaskMod mm = mask_mod;
  if (mask_mod && offset != 0)
    mm = [inner = mask_mod, offset](const Tensor& b, const Tensor& h, const Tensor& q,
                                    const Tensor& kv) { return inner(b, h, q + offset, kv); };
  return keep_rows(*this, 0, batch(), 0, heads(), s, e, new_q_len, std::move(mm));
}

BlockMask BlockMask::to(Device device) const {
  BlockMask bm = *this;
  for (Tensor* t : {&bm.kv_num_blocks, &bm.kv_indices, &bm.full_kv_num_blocks, &bm.full_kv_indices,
                    &bm.q_num_blocks, &bm.q_indices, &bm.full_q_num_blocks, &bm.full_q_indices})
    *t = t->to(device);
  return bm;
}

}  // namespace microflex
