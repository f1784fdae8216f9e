// Shape-only estimates of a GPT training step: the model is built and run forward,
// backward and through one AdamW step in fake mode (core/fake.h), so any size and any
// device (CUDA with no GPU) is measured in milliseconds with no data. Reports per-module
// output shapes, parameters, FLOPs and activation memory, and the step's memory breakdown
// and peak. Note [Training step estimate] says what is counted and what is assumed.
#pragma once
#include <cstdint>
#include <iosfwd>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/graph.h"
#include "models/gpt.h"

namespace microflex {

// Note [Training step estimate]
// FLOPs (forward) count matrix products only: a product of [M, K] and [K, N] is 2*M*N*K,
// and attention counts Q K^T and P V as 2*B*H*M*N*D each times the fraction of (q, kv)
// pairs the mask keeps (exact, from the BlockMask: full blocks count whole, partial ones
// are evaluated with mask_mod; causal keeps (T+1)/(2T)). Norms, activations, softmax,
// score_mod and elementwise ops are not counted. Training FLOPs are 3x forward.
// T is cfg.block_size (full-context sequences).
//
// Memory is the fake allocator's count on the device (Note [Fake memory]) at these
// points of one step, relative to before the model was built:
//   after_build    = weights (+ the bf16 compute copy under bf16)
//   after_forward  = + the inputs, block mask and every tensor kept for backward
//   after_backward = weights + gradients + inputs (the tape is freed)
//   after_step     = + optimizer state (AdamW exp_avg and exp_avg_sq, created lazily)
// `peak` is the highest count over forward, backward and the step, the first step of a
// training run. From the second step on the optimizer state is alive during forward and
// backward: `steady_peak` = max(peak during forward and backward + optimizer state,
// peak during the optimizer step). Scratch memory inside kernels is not seen, and the
// attention is assumed fused (no [M, N] score matrix is materialized).
//
// DTypePolicy::BF16 (mixed precision with float32 master weights) assumes: float32 master
// parameters, AdamW state and gradients for the update; a persistent bf16 copy of the
// model that runs forward and backward (bf16 activations and bf16 gradients; layer-norm
// statistics, attention log-sum-exp and the loss stay float32, logits are cast to float32
// for the cross entropy as autocast does); after backward the bf16 gradients are cast into
// float32 master gradients and freed, AdamW updates the masters and they are copied back
// into the bf16 copy in place.
enum class DTypePolicy { FP32, BF16 };
const char* dtype_policy_name(DTypePolicy p);  // "fp32", "bf16"

// One row of the table: a module's forward in the order it runs. activation_bytes is the
// growth of the device's allocated bytes over the call (what the forward leaves alive:
// tensors saved for backward and the output that later modules keep), so rows add up to
// after_forward - after_build. Rows of the transformer blocks are "h.N.ln_1", "h.N.attn"
// (with its residual add), "h.N.ln_2", "h.N.mlp" (with its residual add).
struct ModuleEstimate {
  std::string name;
  Shape output_shape;
  DType output_dtype = DType::Float32;
  int64_t parameters = 0;  // owned by this module (the tied head counts 0)
  int64_t flops = 0;       // forward
  int64_t activation_bytes = 0;
};

struct MemoryEstimate {
  int64_t weights = 0;          // after_build
  int64_t activations = 0;      // after_forward - after_build
  int64_t grads = 0;            // gradients alive after backward (bf16 ones under bf16)
  int64_t optimizer_state = 0;  // AdamW exp_avg and exp_avg_sq
  int64_t after_build = 0, after_forward = 0, after_backward = 0, after_step = 0;
  int64_t peak = 0;  // over the first step
  int64_t peak_forward_backward = 0;
  int64_t peak_step = 0;    // during the optimizer step (with grads converted under bf16)
  int64_t steady_peak = 0;  // a later step (optimizer state alive throughout)
};

struct ModelEstimate {
  GPTConfig config;
  int64_t batch = 0, seq_len = 0;
  Device device;
  DTypePolicy dtype = DTypePolicy::FP32;

  std::vector<ModuleEstimate> modules;
  int64_t parameters = 0;  // each shared tensor once
  int64_t forward_flops = 0;
  double forward_flops_per_token = 0, training_flops_per_token = 0;
  int64_t attention_flops_per_layer = 0;  // Q K^T and P V of one layer
  double unmasked_fraction = 1.0;         // of (q, kv) pairs the mask keeps
  double block_sparsity = 0.0;            // percent of empty (skipped) mask blocks
  MemoryEstimate memory;

  // A table for people: h.0's rows, the other layers folded into one row when they match
  // h.0 (all of them, with `all_layers`), then the totals and the memory breakdown.
  std::string to_table(bool all_layers = false) const;
  std::string to_json() const;
};

// Builds cfg's GPT in fake mode on `device`, runs a forward with loss on [batch, T] ids,
// backward and one AdamW step, and measures as Note [Training step estimate] says. Throws
// microflex::Error for a bad config or batch < 1. The attention pattern may not mask
// documents (that needs document ids).
ModelEstimate estimate_training_step(const GPTConfig& cfg, int64_t batch, Device device,
                                     DTypePolicy dtype = DTypePolicy::FP32);
// The same step run on real tensors (allocating for real on `device`), with the memory
// figures read from the device's allocator: what estimate_training_step is checked against.
ModelEstimate measure_training_step(const GPTConfig& cfg, int64_t batch, Device device,
                                    DTypePolicy dtype = DTypePolicy::FP32);

// 2*B*H*M*N*D for Q K^T plus 2*B*H*M*N*Dv for P V, times the kept fraction of pairs.
int64_t attention_flops(int64_t B, int64_t H, int64_t M, int64_t N, int64_t D, int64_t Dv,
                        double unmasked_fraction);
// The fraction of (q, kv) pairs of a [M, N] BlockMask (batch and heads of 1) that its
// mask_mod keeps; 1 without a mask. Evaluates mask_mod on the host in partial blocks only.
double unmasked_fraction(const BlockMask& mask);

// The traced forward of one transformer block of cfg on a [batch, T, C] input in fake mode:
// layer norms, projections, the flex_attention node with its score_mod / mask_mod
// subgraphs, the MLP. Parameters and the block mask are lifted graph inputs.
graph::GraphModule trace_block(const GPTConfig& cfg, int64_t batch, Device device,
                               DTypePolicy dtype = DTypePolicy::FP32);

// The microflex-inspect command line, parsed.
struct InspectArgs {
  GPTConfig cfg;
  int64_t batch = 1;
  Device device = Device::cpu();
  DTypePolicy dtype = DTypePolicy::FP32;
  bool json = false, trace = false, all_layers = false, help = false;
  std::string dot;  // --dot FILE
};

// A bad microflex-inspect flag or config: the message says which and why.
class InspectUsageError : public std::runtime_error {
 public:
  explicit InspectUsageError(const std::string& msg) : std::runtime_error(msg) {}
};

// Parses the microflex-inspect flags (args without the program name) into a checked
// config; throws InspectUsageError and nothing else. The estimate itself can still
// reject the config (microflex::Error).
InspectArgs parse_inspect_args(const std::vector<std::string>& args);

// The microflex-inspect command line (args without the program name). Returns the exit
// status: 0, 2 for a bad flag or config (with a message on `err`), 1 for other errors.
int inspect_main(const std::vector<std::string>& args, std::ostream& out, std::ostream& err);

}  // namespace microflex
