#include <filesystem>
#include <fstream>

#include "models/data.h"
#include "test_util.h"

namespace mf = microflex;

TEST(Data, ByteTokenizerRoundTrips) {
  mf::ByteTokenizer tok;
  const std::string s = "Hello, wörld!\n\t\x01";
  const auto ids = tok.encode(s);
  EXPECT_EQ(ids.size(), s.size());
  for (int64_t id : ids) EXPECT_TRUE(id >= 0 && id < 256);
  EXPECT_EQ(tok.decode(ids), s);
}

TEST(Data, StripsBrownTags) {
  const std::string tagged =
      "\n\n\tThe/at Fulton/np-tl County/nn-tl said/vbd ``/`` no/at evidence/nn ''/'' that/cs "
      "any/dti irregularities/nns took/vbd place/nn ./.\n\n\n\tHe/pps said/vbd ,/, "
      "however/rb ,/, it/pps was/bedz n't/* over/rp ./.\n";
  EXPECT_EQ(mf::strip_brown_tags(tagged),
            "The Fulton County said \"no evidence\" that any irregularities took place.\n"
            "He said, however, it wasn't over.\n");
}

TEST(Data, LoadsACorpusDirectoryInOrder) {
  const auto dir = std::filesystem::temp_directory_path() / "mf_brown_test";
  std::filesystem::create_directories(dir);
  std::ofstream(dir / "cb01") << "Second/ap ./.\n";
  std::ofstream(dir / "ca01") << "First/ap ./.\n";
  std::ofstream(dir / "package.json") << "{}";
  const auto docs = mf::load_brown_corpus(dir.string());
  ASSERT_EQ(docs.size(), 2u);
  EXPECT_EQ(docs[0], "First.\n");
  EXPECT_EQ(docs[1], "Second.\n");
  std::filesystem::remove_all(dir);
  mftest::expect_error([&] { mf::load_brown_corpus(dir.string()); },
                       {"load_brown_corpus", "not a directory", "tools/setup.sh"});
}

TEST(Data, SplitAndPackedBatchesKeepDocumentIds) {
  std::vector<std::string> train, val;
  mf::split_train_val(mf::tiny_corpus(), &train, &val);
  EXPECT_EQ(train.size(), 6u);  // 6 documents: none has index 9
  std::vector<std::string> docs(20, "ab");
  mf::split_train_val(docs, &train, &val);
  EXPECT_EQ(train.size(), 18u);
  EXPECT_EQ(val.size(), 2u);

  const mf::TokenStream s = mf::TokenStream::from_documents({"abc", "de", "fghij"});
  EXPECT_EQ(s.doc_ids, (std::vector<int32_t>{0, 0, 0, 1, 1, 2, 2, 2, 2, 2}));
  const mf::Batch w = mf::window_batch(s, 1, 4, 1);  // tokens 4..8
  EXPECT_EQ(w.x.to_vector<int64_t>(), (std::vector<int64_t>{'e', 'f', 'g', 'h'}));
  EXPECT_EQ(w.y.to_vector<int64_t>(), (std::vector<int64_t>{'f', 'g', 'h', 'i'}));
  EXPECT_EQ(w.doc_ids.to_vector<int32_t>(), (std::vector<int32_t>{0, 1, 1, 1}));
  std::mt19937_64 a(7), b(7);
  const mf::Batch x = mf::sample_batch(s, 3, 4, a), y = mf::sample_batch(s, 3, 4, b);
  EXPECT_EQ(x.x.to_vector<int64_t>(), y.x.to_vector<int64_t>());
  const auto xv = x.x.to_vector<int64_t>(), yv = x.y.to_vector<int64_t>();
  for (int r = 0; r < 3; ++r)
    for (int t = 0; t + 1 < 4; ++t) EXPECT_EQ(yv[r * 4 + t], xv[r * 4 + t + 1]);
  mftest::expect_error([&] { mf::sample_batch(s, 1, 10, a); }, {"sample_batch", "10 tokens", "11"});
}
