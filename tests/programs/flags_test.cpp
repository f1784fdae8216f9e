// The programs' flag parsing in process: programs/flags.h (argv, config text and files,
// numbers), microflex-train's command line (programs/train_flags.h) and microflex-inspect's
// (parse_inspect_args). Includes the inputs the review and fuzzing of these parsers turned
// up (tests/fuzz/fuzz_train_flags.cpp, fuzz_inspect_args.cpp).
#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "models/inspect.h"
#include "programs/flags.h"
#include "programs/train_flags.h"
#include "test_util.h"

namespace mf = microflex;
namespace flags = microflex::flags;
namespace fs = std::filesystem;

namespace {

// Runs `f`, expects an exception of type E whose message contains `part`.
template <typename E, typename F>
void expect_throw(F&& f, const std::string& part) {
  try {
    f();
    ADD_FAILURE() << "expected an error with '" << part << "'";
  } catch (const E& e) {
    EXPECT_NE(std::string(e.what()).find(part), std::string::npos)
        << "message: " << e.what() << "\nmissing: " << part;
  }
}

// microflex-train's command line with `config` as the text of any --config file (without
// it, the file is read from disk).
mf::TrainOptions train_args(std::vector<std::string> args,
                            const std::optional<std::string>& config = std::nullopt,
                            bool* help = nullptr) {
  args.insert(args.begin(), "microflex-train");
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  mf::TrainOptions o;
  std::function<std::string(const std::string&)> read = flags::read_file;
  if (config) read = [&](const std::string&) { return *config; };
  const bool ran =
      mf::parse_train_command_line(static_cast<int>(args.size()), argv.data(), &o, read);
  if (help != nullptr) *help = !ran;
  return o;
}

void expect_train_error(const std::vector<std::string>& args, const std::string& part,
                        const std::optional<std::string>& config = std::nullopt) {
  expect_throw<flags::UsageError>([&] { train_args(args, config); }, part);
}

}  // namespace

TEST(Flags, ConfigTextAndFileAgree) {
  const std::string text = "# a comment line\n  n_layer = 3   # trailing comment\n\nlr=2e-3\r\n";
  const fs::path path = fs::path(::testing::TempDir()) / "flags_test.conf";
  { std::ofstream(path) << text; }
  mf::TrainOptions a, b;
  mf::train_flag_table(&a).apply_text(text, "x.conf");
  mf::train_flag_table(&b).apply_file(path.string());
  EXPECT_EQ(a.n_layer, 3);
  EXPECT_EQ(a.lr, 2e-3);
  EXPECT_EQ(b.n_layer, a.n_layer);
  EXPECT_EQ(b.lr, a.lr);
  fs::remove(path);

  mf::TrainOptions o;
  const flags::Table t = mf::train_flag_table(&o);
  expect_throw<flags::UsageError>([&] { t.apply_text("n_layer = 2\n\nsteps 5\n", "c.conf"); },
                                  "expected 'key = value' in c.conf line 3, got 'steps 5'");
  expect_throw<flags::UsageError>([&] { t.apply_file(path.string()); }, "cannot read config file");
}

TEST(Flags, NumbersMustBeWholeValues) {
  EXPECT_EQ(flags::parse_int("k", "-7", -10), -7);
  EXPECT_EQ(flags::parse_double("k", "0.25", 0.0), 0.25);
  expect_throw<flags::UsageError>([] { flags::parse_int("k", "12x", 0); },
                                  "--k expects an integer, got '12x'");
  expect_throw<flags::UsageError>([] { flags::parse_int("k", "99999999999999999999", 0); },
                                  "--k expects an integer");
  expect_throw<flags::UsageError>([] { flags::parse_double("k", "nan", 0.0); },
                                  "--k expects a finite number, got 'nan'");
  expect_throw<flags::UsageError>([] { flags::parse_double("k", "1e999", 0.0); },
                                  "--k expects a finite number");
  expect_throw<flags::UsageError>([] { flags::parse_bool("k", "maybe"); },
                                  "--k expects true or false, got 'maybe'");
}

// A directory given as the config file opened like a file and read as an empty config.
TEST(Flags, DirectoryIsNotAConfigFile) {
  const std::string dir = fs::temp_directory_path().string();
  expect_throw<flags::UsageError>([&] { flags::read_file(dir); },
                                  "cannot read config file '" + dir + "'");
  expect_train_error({"--config", dir}, "cannot read config file");
  // read_file itself is used: an empty config file is fine.
  const fs::path empty = fs::path(::testing::TempDir()) / "flags_test_empty.conf";
  { std::ofstream f(empty); }
  EXPECT_EQ(flags::read_file(empty.string()), "");
  fs::remove(empty);
}

// A '\0' in a config value ended the C string that strtoll and strtod read, so
// "n_layer = 5<NUL>junk" was taken as 5.
TEST(Flags, NulInsideANumberIsRejected) {
  mf::TrainOptions o;
  const flags::Table t = mf::train_flag_table(&o);
  expect_throw<flags::UsageError>(
      [&] { t.apply_text(std::string("n_layer = 5\0junk\n", 17), "c.conf"); },
      "--n_layer expects an integer");
  expect_throw<flags::UsageError>([&] { t.apply_text(std::string("lr = 0.5\0", 9), "c.conf"); },
                                  "--lr expects a finite number");
  EXPECT_EQ(o.n_layer, 4);
  EXPECT_EQ(o.lr, 1e-3);
}

// Lower bounds of real-valued flags were printed with std::to_string ("must be >= 0.000000").
TEST(Flags, BoundsArePrintedAsNumbers) {
  expect_throw<flags::UsageError>([] { flags::parse_double("lr", "-1", 0.0); },
                                  "--lr must be >= 0, got -1");
  expect_throw<flags::UsageError>([] { flags::parse_double("x", "0.1", 0.5); },
                                  "--x must be >= 0.5, got 0.1");
  expect_throw<flags::UsageError>([] { flags::parse_int("n", "-3", 1); },
                                  "--n must be >= 1, got -3");
}

TEST(TrainFlags, ConfigThenCommandLineThenChecks) {
  const mf::TrainOptions o =
      train_args({"--n_head=3", "--config", "a.conf", "--rotary", "--data", "tiny"},
                 "n_embd = 30\nn_head = 4\nrotary = false\n");
  EXPECT_EQ(o.n_head, 3);  // the command line overrides the file, whatever the order
  EXPECT_EQ(o.n_embd, 30);
  EXPECT_TRUE(o.rotary);
  EXPECT_EQ(o.data, "tiny");

  bool help = false;
  train_args({"--n_layer=oops", "--help"}, std::nullopt, &help);
  EXPECT_TRUE(help);  // --help wins before anything is applied

  const mf::TrainOptions ref = train_args({"--dump_reference=out/ref", "--steps=7"});
  EXPECT_EQ(ref.out_dir, "out/ref");
  EXPECT_EQ(ref.dump_batches, 7);

  expect_train_error({"--config", "b.conf"}, "unknown option 'learning_rate' in b.conf line 2",
                     "n_layer = 2\nlearning_rate = 3\n");
  expect_train_error({"--n_embd=30", "--n_head=4"},
                     "--n_embd (30) must be a multiple of --n_head (4)");
  expect_train_error({"--n_embd=18", "--n_head=2", "--rotary"}, "--rotary needs an even head dim");
  expect_train_error({"--min_lr=1", "--lr=0.5"}, "--min_lr must not exceed --lr");
  expect_train_error({"--beta2=1"}, "--beta1 and --beta2 must be below 1");
  expect_train_error({"--steps"}, "--steps needs a value");
  expect_train_error({"--"}, "unexpected argument '--'");
  expect_train_error({"--data_dir="}, "--data_dir needs a value");
  expect_train_error({"--attention=sliding:4+prefix"}, "'prefix' needs a value");
  expect_train_error({"--attention=alibi:2"}, "'alibi' takes no value, got 'alibi:2'");
}

// "--config=" (or "--config ''") was silently ignored instead of naming the problem.
TEST(TrainFlags, EmptyConfigNameIsAnError) {
  expect_train_error({"--config="}, "--config needs a value");
  expect_train_error({"--config", ""}, "--config needs a value");
}

// A softcap of 0 was rejected with "must be >= 0.000000, got 0" (the bound was 1e-300).
TEST(TrainFlags, SoftcapMustBePositive) {
  expect_train_error({"--attention=softcap:0"}, "--attention softcap must be > 0, got 0");
  expect_train_error({"--attention=causal+softcap:-0"}, "--attention softcap must be > 0, got -0");
  EXPECT_EQ(mf::parse_train_attention("softcap:1e-9+sliding:3").softcap, 1e-9);
}

TEST(InspectArgs, ParsesIntoAConfig) {
  const mf::InspectArgs a = mf::parse_inspect_args(
      {"--preset=gpt2-medium", "--n_layer", "2", "--attention", "sliding:64+alibi", "--rotary",
       "--no-bias", "--batch=3", "--device", "cuda:1", "--dtype", "bf16", "--json"});
  EXPECT_EQ(a.cfg.n_layer, 2);
  EXPECT_EQ(a.cfg.n_embd, 1024);
  EXPECT_EQ(a.cfg.attention.window, 64);
  EXPECT_TRUE(a.cfg.attention.alibi);
  EXPECT_TRUE(a.cfg.rotary);
  EXPECT_FALSE(a.cfg.bias);
  EXPECT_EQ(a.batch, 3);
  EXPECT_EQ(a.device.str(), "cuda:1");
  EXPECT_EQ(a.dtype, mf::DTypePolicy::BF16);
  EXPECT_TRUE(a.json);
  EXPECT_TRUE(mf::parse_inspect_args({"-h"}).help);

  auto bad = [](const std::vector<std::string>& args, const std::string& part) {
    expect_throw<mf::InspectUsageError>([&] { mf::parse_inspect_args(args); }, part);
  };
  bad({"--json=yes"}, "--json takes no value");
  bad({"--n_head", "5"}, "n_embd 768 is not divisible by n_head 5");
  bad({"--attention="}, "--attention expects a pattern, got ''");
  bad({"--attention", "softcap:inf"}, "expects a number, got 'inf'");
  bad({"--dot="}, "--dot expects a file name");
  bad({""}, "unknown flag ''");
}
