// The built programs end to end: microflex-train's flag and config errors (exit code 2),
// a 20-step smoke run on the tiny corpus (loss.csv, loss.svg, checkpoint), a resumed run
// matching an uninterrupted one, Ctrl-C saving a checkpoint (exit code 130), the
// reference dump, and microflex-sample on the result.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "models/checkpoint.h"
#include "test_util.h"

namespace mf = microflex;
namespace fs = std::filesystem;

#ifdef MICROFLEX_PROGRAMS_DIR

namespace {

const std::string kTrain = std::string(MICROFLEX_PROGRAMS_DIR) + "/microflex-train";
const std::string kSample = std::string(MICROFLEX_PROGRAMS_DIR) + "/microflex-sample";
// A model small enough that a Debug build runs a step in milliseconds.
const std::string kTiny =
    " --data=tiny --n_layer=1 --n_head=2 --n_embd=16 --block_size=16 --batch_size=2"
    " --warmup=2 --lr=3e-3 --eval_batches=2";

fs::path test_dir(const std::string& name) {
  const fs::path d = fs::temp_directory_path() / "microflex_train_program_test" / name;
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

std::string read(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

struct Result {
  int code;
  std::string out, err;
};

// Runs `cmd` through the shell with stdout and stderr captured in `dir`.
Result run(const std::string& cmd, const fs::path& dir) {
  const fs::path out = dir / "stdout.txt", err = dir / "stderr.txt";
  const int status = std::system((cmd + " >" + out.string() + " 2>" + err.string()).c_str());
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, read(out), read(err)};
}

std::vector<std::string> lines(const std::string& s) {
  std::vector<std::string> v;
  std::stringstream ss(s);
  std::string l;
  while (std::getline(ss, l)) v.push_back(l);
  return v;
}

// The train_loss column of a loss.csv.
std::vector<std::string> train_losses(const fs::path& csv) {
  std::vector<std::string> v;
  const auto ls = lines(read(csv));
  for (size_t i = 1; i < ls.size(); ++i) {
    const size_t a = ls[i].find(','), b = ls[i].find(',', a + 1);
    v.push_back(ls[i].substr(a + 1, b - a - 1));
  }
  return v;
}

}  // namespace

TEST(TrainProgram, BadFlagsExitWithCode2AndSayWhy) {
  const fs::path d = test_dir("flags");
  struct Bad {
    std::string args, message;
  };
  { std::ofstream(d / "bad.conf") << "n_layer = 2\n# comment\nlearning_rate = 3\n"; }
  { std::ofstream(d / "noeq.conf") << "n_layer 2\n"; }
  const std::vector<Bad> bad = {
      {"--nlayer=2", "unknown option 'nlayer'"},
      {"--n_layer=abc", "--n_layer expects an integer, got 'abc'"},
      {"--n_layer=0", "--n_layer must be >= 1, got 0"},
      {"--lr=fast", "--lr expects a finite number, got 'fast'"},
      {"--lr=-1", "--lr must be >= 0, got -1"},
      {"--attention=softcap:0", "--attention softcap must be > 0, got 0"},
      {"--config=", "--config needs a value"},
      {"--n_embd=30 --n_head=4", "--n_embd (30) must be a multiple of --n_head (4)"},
      {"--attention=sliding", "'sliding' needs a value"},
      {"--attention=causal+flash", "unknown pattern 'flash'"},
      {"--data=wiki", "--data must be brown or tiny, got 'wiki'"},
      {"--device=tpu", "--device must be cpu or cuda"},
      {"--resume=maybe", "--resume expects true or false"},
      {"--config " + (d / "bad.conf").string(), "unknown option 'learning_rate' in"},
      {"--config " + (d / "bad.conf").string(), "bad.conf line 3"},
      {"--config " + (d / "noeq.conf").string(), "expected 'key = value'"},
      {"--config " + (d / "missing.conf").string(), "cannot read config file"},
      {"--config " + d.string(), "cannot read config file"},
      {"positional", "unexpected argument 'positional'"},
      {"--steps", "--steps needs a value"},
      {"--data=tiny --block_size=4000 --out_dir=" + (d / "o").string(),
       "--block_size 4000 is too long for the tiny corpus"},
  };
  for (const Bad& b : bad) {
    const Result r = run(kTrain + " " + b.args, d);
    EXPECT_EQ(r.code, 2) << b.args << "\n" << r.err;
    EXPECT_NE(r.err.find(b.message), std::string::npos) << b.args << "\nstderr: " << r.err;
    EXPECT_EQ(r.err.find("error: "), std::string::npos) << "usage errors are not crashes";
  }
  const Result help = run(kTrain + " --help", d);
  EXPECT_EQ(help.code, 0);
  EXPECT_NE(help.out.find("usage: microflex-train"), std::string::npos);
  // Command-line values override the config file, whatever their order.
  { std::ofstream(d / "ok.conf") << "n_embd = 30\nn_head = 4\n"; }
  const Result over = run(kTrain + " --n_head=3 --config " + (d / "ok.conf").string() +
                              " --save_init_only --data=tiny --out_dir=" + (d / "init").string(),
                          d);
  EXPECT_EQ(over.code, 0) << over.err;
  EXPECT_EQ(mf::read_checkpoint_config((d / "init" / "init.safetensors").string()).n_head, 3);
}

TEST(TrainProgram, SmokeRunWritesLogPlotAndCheckpointThenSamples) {
  const fs::path d = test_dir("smoke");
  const Result r =
      run(kTrain + kTiny + " --steps=20 --eval_every=10 --out_dir=" + (d / "out").string(), d);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.err.find("step 20/20"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("tok/s"), std::string::npos);

  const auto csv = lines(read(d / "out" / "loss.csv"));
  ASSERT_EQ(csv.size(), 21u);
  EXPECT_EQ(csv[0], "step,train_loss,val_loss,lr,tokens_per_s");
  EXPECT_EQ(csv[1].rfind("1,", 0), 0u);
  EXPECT_NE(csv[9].find(",,"), std::string::npos);   // no validation at step 9
  EXPECT_EQ(csv[10].find(",,"), std::string::npos);  // validation at step 10
  const auto losses = train_losses(d / "out" / "loss.csv");
  EXPECT_LT(std::stod(losses.back()), std::stod(losses.front()) - 0.3);

  const std::string svg = read(d / "out" / "loss.svg");
  EXPECT_EQ(svg.rfind("<svg", 0), 0u);
  EXPECT_NE(svg.find("<polyline"), std::string::npos);
  EXPECT_NE(svg.find(">validation<"), std::string::npos);
  EXPECT_NE(svg.find("</svg>"), std::string::npos);
  EXPECT_FALSE(fs::exists(d / "out" / "loss.svg.tmp"));

  const std::string ckpt = (d / "out" / "ckpt.safetensors").string();
  std::map<std::string, std::string> meta;
  mf::load_safetensors(ckpt, &meta);
  EXPECT_EQ(meta.at("step"), "20");
  EXPECT_NE(meta.at("train_config").find("data = tiny"), std::string::npos);

  const Result s = run(kSample + " --checkpoint " + ckpt + " --prompt 'The ' --tokens 40", d);
  ASSERT_EQ(s.code, 0) << s.err;
  EXPECT_EQ(s.out.rfind("The ", 0), 0u);
  EXPECT_EQ(s.out.size(), 4u + 40u + 1u);  // prompt, 40 bytes, newline
  const Result again = run(kSample + " --checkpoint " + ckpt + " --prompt 'The ' --tokens 40", d);
  EXPECT_EQ(again.out, s.out);  // seed 0 by default: the same text
  EXPECT_EQ(run(kSample + " --tokens 5", d).code, 2);
  EXPECT_EQ(run(kSample + " --checkpoint " + ckpt + " --top_k=-1", d).code, 2);
  EXPECT_EQ(run(kSample + " --checkpoint " + (d / "none").string(), d).code, 1);
}

TEST(TrainProgram, ResumedRunMatchesUninterruptedRun) {
  const fs::path d = test_dir("resume");
  const std::string a = (d / "a").string(), b = (d / "b").string();
  const std::string common = kTiny + " --dropout=0.1 --eval_every=2";
  ASSERT_EQ(run(kTrain + common + " --steps=6 --out_dir=" + a, d).code, 0);
  ASSERT_EQ(run(kTrain + common + " --steps=3 --out_dir=" + b, d).code, 0);
  const Result r = run(kTrain + common + " --steps=6 --resume --out_dir=" + b, d);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.err.find("resumed from"), std::string::npos);
  const auto la = train_losses(fs::path(a) / "loss.csv");
  const auto lb = train_losses(fs::path(b) / "loss.csv");
  ASSERT_EQ(la.size(), 6u);
  EXPECT_EQ(la, lb);  // printed with 9 significant digits: float32 losses bitwise
  EXPECT_EQ(run(kTrain + common + " --resume --out_dir=" + (d / "none").string(), d).code, 2);
}

TEST(TrainProgram, CtrlCSavesACheckpointAndExitsWith130) {
  const fs::path d = test_dir("sigint");
  const std::string out = (d / "out").string();
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    const std::string log = (d / "stderr.txt").string();
    if (!std::freopen(log.c_str(), "w", stderr)) _exit(99);
    const std::string out_flag = "--out_dir=" + out;
    execl(kTrain.c_str(), kTrain.c_str(), "--data=tiny", "--n_layer=1", "--n_head=2", "--n_embd=16",
          "--block_size=16", "--batch_size=2", "--steps=1000000", "--eval_every=0",
          out_flag.c_str(), static_cast<char*>(nullptr));
    _exit(98);
  }
  // Wait until a few steps are logged, then interrupt.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (lines(read(fs::path(out) / "loss.csv")).size() < 4 &&
         std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  kill(pid, SIGINT);
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 130) << read(d / "stderr.txt");
  const std::string ckpt = out + "/ckpt.safetensors";
  ASSERT_TRUE(fs::exists(ckpt));
  std::map<std::string, std::string> meta;
  mf::load_safetensors(ckpt, &meta);
  const int64_t rows = static_cast<int64_t>(train_losses(fs::path(out) / "loss.csv").size());
  EXPECT_EQ(std::stoll(meta.at("step")), rows);
  EXPECT_GE(rows, 3);
  EXPECT_TRUE(fs::exists(fs::path(out) / "loss.svg"));
  EXPECT_NE(read(d / "stderr.txt").find("interrupted: saved"), std::string::npos);
}

TEST(TrainProgram, DumpReferenceWritesInitWeightsBatchesAndLosses) {
  const fs::path d = test_dir("ref");
  const fs::path out = d / "ref";
  const Result r =
      run(kTrain + kTiny + " --steps=3 --accum_steps=2 --dump_reference=" + out.string(), d);
  ASSERT_EQ(r.code, 0) << r.err;
  std::map<std::string, std::string> meta;
  const mf::NamedTensors init = mf::load_safetensors((out / "init.safetensors").string(), &meta);
  EXPECT_NE(meta.at("train_config").find("accum_steps = 2"), std::string::npos);
  EXPECT_EQ(init.size(), 17u);  // wte, wpe, ln_f (2), lm_head and one block's 12
  const mf::NamedTensors batches = mf::load_safetensors((out / "batches.safetensors").string());
  ASSERT_EQ(batches.size(), 12u);  // 3 steps x 2 micro-batches x (x, y)
  EXPECT_EQ(batches[0].first, "x.000000");
  EXPECT_EQ(batches[0].second.sizes(), (mf::Shape{2, 16}));
  EXPECT_EQ(train_losses(out / "loss.csv").size(), 3u);
}

#endif  // MICROFLEX_PROGRAMS_DIR
