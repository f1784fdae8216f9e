#include "models/data.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/error.h"

namespace microflex {

std::vector<int64_t> ByteTokenizer::encode(const std::string& text) const {
  std::vector<int64_t> out(text.size());
  for (size_t i = 0; i < text.size(); ++i) out[i] = static_cast<unsigned char>(text[i]);
  return out;
}

std::string ByteTokenizer::decode(const std::vector<int64_t>& tokens) const {
  std::string s;
  s.reserve(tokens.size());
  for (int64_t t : tokens) s.push_back(t >= 0 && t < kVocabSize ? static_cast<char>(t) : '?');
  return s;
}

namespace {

bool is_closing(const std::string& w) {
  static const char* closing[] = {".", ",", ";", ":", "?", "!", ")", "'s", "n't", "'"};
  for (const char* c : closing)
    if (w == c) return true;
  return false;
}

}  // namespace

std::string strip_brown_tags(const std::string& tagged) {
  std::string out;
  std::istringstream lines(tagged);
  std::string line;
  bool open_quote = false;
  while (std::getline(lines, line)) {
    std::istringstream words(line);
    std::string tok, para;
    bool attach_next = false;
    while (words >> tok) {
      const size_t slash = tok.rfind('/');
      std::string w = slash == std::string::npos || slash == 0 ? tok : tok.substr(0, slash);
      if (w == "``") {
        w = "\"";
        open_quote = true;
      } else if (w == "''") {
        w = "\"";
        open_quote = false;
      }
      const bool closing = is_closing(w) || (w == "\"" && !open_quote);
      if (!para.empty() && !closing && !attach_next) para.push_back(' ');
      para += w;
      attach_next = w == "\"" && open_quote;
      if (w == "(") attach_next = true;
    }
    if (!para.empty()) out += para + "\n";
  }
  return out;
}

std::vector<std::string> load_brown_corpus(const std::string& dir) {
  namespace fs = std::filesystem;
  MF_CHECK(fs::is_directory(dir), "load_brown_corpus: '", dir,
           "' is not a directory (run tools/setup.sh to fetch the corpus)");
  std::vector<std::string> files;
  for (const auto& e : fs::directory_iterator(dir)) {
    const std::string name = e.path().filename().string();
    // Corpus files are named by category letter and number: ca01 ... cr09.
    if (e.is_regular_file() && name.size() == 4 && name[0] == 'c' && std::isalpha(name[1]) &&
        std::isdigit(name[2]) && std::isdigit(name[3]))
      files.push_back(e.path().string());
  }
  MF_CHECK(!files.empty(), "load_brown_corpus: no corpus files (ca01 ... cr09) in '", dir, "'");
  std::sort(files.begin(), files.end());
  std::vector<std::string> docs;
  for (const auto& f : files) {
    std::ifstream in(f, std::ios::binary);
    MF_CHECK(in.good(), "load_brown_corpus: cannot read '", f, "'");
    std::stringstream ss;
    ss << in.rdbuf();
    docs.push_back(strip_brown_tags(ss.str()));
  }
  return docs;
}

std::vector<std::string> tiny_corpus() {
  return {
      "The quick brown fox jumps over the lazy dog.\nThe dog sleeps in the sun.\n",
      "A stitch in time saves nine.\nActions speak louder than words.\n",
      "To be or not to be, that is the question.\nAll the world's a stage.\n",
      "It was the best of times, it was the worst of times.\n",
      "Call me Ishmael.\nSome years ago, never mind how long precisely.\n",
      "In the beginning the Universe was created.\nThis has made a lot of people angry.\n",
  };
}

TokenStream TokenStream::from_documents(const std::vector<std::string>& docs,
                                        const ByteTokenizer& tok) {
  TokenStream s;
  for (size_t d = 0; d < docs.size(); ++d) {
    const std::vector<int64_t> t = tok.encode(docs[d]);
    s.tokens.insert(s.tokens.end(), t.begin(), t.end());
    s.doc_ids.insert(s.doc_ids.end(), t.size(), static_cast<int32_t>(d));
  }
  return s;
}

void split_train_val(const std::vector<std::string>& docs, std::vector<std::string>* train,
                     std::vector<std::string>* val) {
  train->clear();
  val->clear();
  for (size_t i = 0; i < docs.size(); ++i) (i % 10 == 9 ? val : train)->push_back(docs[i]);
}

namespace {

Batch make_batch(const TokenStream& s, int64_t B, int64_t T, const std::vector<int64_t>& starts,
                 Device device) {
  std::vector<int64_t> x(B * T), y(B * T);
  std::vector<int32_t> d(B * T);
  for (int64_t b = 0; b < B; ++b) {
    const int64_t o = starts[b];
    const int32_t first = s.doc_ids[o];
    for (int64_t t = 0; t < T; ++t) {
      x[b * T + t] = s.tokens[o + t];
      y[b * T + t] = s.tokens[o + t + 1];
      d[b * T + t] = s.doc_ids[o + t] - first;
    }
  }
  Batch batch{from_vector(x, {B, T}), from_vector(y, {B, T}), from_vector(d, {B, T})};
  if (!device.is_cpu()) {
    batch.x = batch.x.to(device);
    batch.y = batch.y.to(device);
    batch.doc_ids = batch.doc_ids.to(device);
  }
  return batch;
}

void check_sizes(const TokenStream& s, int64_t B, int64_t T, const char* op) {
  MF_CHECK(B >= 1 && T >= 1, op, ": B and T must be >= 1, got ", B, " and ", T);
  MF_CHECK(s.size() > T, op, ": the token stream has ", s.size(),
           " tokens, fewer than a window of T + 1 = ", T + 1);
}

}  // namespace

Batch sample_batch(const TokenStream& s, int64_t B, int64_t T, std::mt19937_64& rng,
                   Device device) {
  check_sizes(s, B, T, "sample_batch");
  std::uniform_int_distribution<int64_t> pick(0, s.size() - T - 1);
  std::vector<int64_t> starts(B);
  for (auto& o : starts) o = pick(rng);
  return make_batch(s, B, T, starts, device);
}

int64_t num_windows(const TokenStream& s, int64_t B, int64_t T) {
  return (s.size() - 1) / (B * T);
}

Batch window_batch(const TokenStream& s, int64_t B, int64_t T, int64_t index, Device device) {
  check_sizes(s, B, T, "window_batch");
  MF_CHECK(index >= 0 && index < num_windows(s, B, T), "window_batch: index ", index,
           " out of range [0, ", num_windows(s, B, T), ")");
  std::vector<int64_t> starts(B);
  for (int64_t b = 0; b < B; ++b) starts[b] = (index * B + b) * T;
  return make_batch(s, B, T, starts, device);
}

}  // namespace microflex
