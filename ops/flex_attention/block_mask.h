// BlockMask: the block-sparse description of a mask_mod, with PyTorch's fields, built by
// create_block_mask in row chunks (the whole M x N mask is never materialized).
// Note [Block mask layout] says what each field holds.
#pragma once
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "core/tensor.h"

namespace microflex {

// mask_mod(b, h, q_idx, kv_idx) -> bool, written with tensor ops on broadcastable int32
// index tensors (b [B,1,1,1], h [1,H,1,1], q_idx [1,1,M,1], kv_idx [1,1,1,N]).
using MaskMod = std::function<Tensor(const Tensor& b, const Tensor& h, const Tensor& q_idx,
                                     const Tensor& kv_idx)>;

// Note [Block mask layout]
// Rows of blocks are query blocks (BLOCK_SIZE rows each), columns key/value blocks. For
// each (b, h, q block) the kv blocks are split in two lists, each sorted ascending:
//   kv_num_blocks [B, H, Mb] int32, kv_indices [B, H, Mb, Nb] int32:
//       partial blocks, where mask_mod is true somewhere but not everywhere: kernels
//       apply mask_mod inside them;
//   full_kv_num_blocks, full_kv_indices (same shapes): blocks where mask_mod is true at
//       every valid position: kernels skip mask_mod there.
// Blocks in neither list are empty and skipped. q_num_blocks / q_indices (and full_q_*)
// are the transpose (per kv block, the q blocks touching it), [B, H, Nb] and
// [B, H, Nb, Mb], for the backward over keys and values. Entries past the count are -1.
// B or H of 1 broadcast over the inputs' batch and heads. Tail blocks (lengths not a
// multiple of BLOCK_SIZE) are classified over their valid positions only.
struct BlockMask {
  Tensor kv_num_blocks, kv_indices, full_kv_num_blocks, full_kv_indices;
  Tensor q_num_blocks, q_indices, full_q_num_blocks, full_q_indices;
  int64_t q_block_size = 128, kv_block_size = 128;
  int64_t q_len = 0, kv_len = 0;  // the sequence lengths it was built for
  MaskMod mask_mod;               // null: no masking inside partial blocks (none exist)

  int64_t batch() const { return kv_num_blocks.size(0); }
  int64_t heads() const { return kv_num_blocks.size(1); }
  int64_t num_q_blocks() const { return kv_num_blocks.size(2); }
  int64_t num_kv_blocks() const { return kv_indices.size(3); }

  // [B, H, Mb, Nb] int32: 2 for full blocks, 1 for partial, 0 for empty.
  Tensor to_dense() const;
  // A text picture of the blocks per (b, h): "█" full, "░" partial, " " empty.
  std::string to_string(int64_t max_rows = 32) const;
  // Percentage of blocks that are empty (skipped), over all (b, h).
  double sparsity() const;
  // The same mask for shorter sequences (the leading blocks; lengths up to the built ones).
  BlockMask adjust(int64_t new_q_len, int64_t new_kv_len) const;
  // Note [Block mask slicing]
  // PyTorch's block_mask[b, h, q_start:q_end] as three composable steps:
  //   select_batch(b) / select_head(h): batch / head b of B (h of H), kept as a dimension
  //       of size 1 (as PyTorch's integer index does); on a mask with B (H) = 1 the index
  //       must be 0 and the mask is returned unchanged, still broadcasting;
  //   slice_q_blocks(start, end): query blocks [start, end) (end empty: to the last);
  //       q_len becomes the rows those blocks cover (the last one may be a tail), the kv
  //       side is unchanged and the q_* transposed lists are recomputed for the kept rows.
  // Indices may be negative, counting from the end as in Python. Unlike PyTorch, which
  // drops mask_mod, mask_mod is kept and wrapped so that it sees the original indices:
  // q_idx + start * q_block_size, and the selected b (h) where B (H) was > 1. flex_attention
  // with the result on the matching sub-tensors of q (and k, v for a batch or head) gives
  // the matching rows of the full computation.
  BlockMask select_batch(int64_t b) const;
  BlockMask select_head(int64_t h) const;
  BlockMask slice_q_blocks(int64_t start, std::optional<int64_t> end = std::nullopt) const;
  BlockMask to(Device device) const;
};

BlockMask create_block_mask(const MaskMod& mask_mod, int64_t B, int64_t H, int64_t M, int64_t N,
                            Device device = Device::cpu(), int64_t block_size = 128);
// The dense [B, H, M, N] bool mask.
Tensor create_mask(const MaskMod& mask_mod, int64_t B, int64_t H, int64_t M, int64_t N,
                   Device device = Device::cpu());
MaskMod and_masks(const MaskMod& a, const MaskMod& b);
MaskMod or_masks(const MaskMod& a, const MaskMod& b);
MaskMod noop_mask();

}  // namespace microflex
