// A save killed mid-write (kill -9 in a child process) leaves the previous file intact and
// loadable: tensor files are written to a temporary file and renamed into place.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <thread>

#include "test_util.h"

namespace mf = microflex;

namespace {

// 32 MiB of float32 whose every element is `v`: a loaded file is either all-old or all-new.
mf::NamedTensors payload(float v) {
  return {{"a", mf::full({4, 1024, 1024}, v)}, {"b", mf::full({4, 1024, 1024}, v)}};
}

}  // namespace

TEST(InterruptedSave, KillNineLeavesThePreviousFileLoadable) {
  namespace fs = std::filesystem;
  const fs::path dir = fs::temp_directory_path() / ("mf_kill_save_" + std::to_string(getpid()));
  fs::create_directories(dir);
  const std::string path = (dir / "ckpt.safetensors").string();
  mf::save_safetensors(path, payload(1.0f));
  int new_seen = 0;
  for (int trial = 0; trial < 6; ++trial) {
    const pid_t child = fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
      // Keep overwriting the file with new contents until killed.
      for (int i = 0;; ++i) mf::save_safetensors(path, payload(2.0f + static_cast<float>(i % 3)));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20 + 37 * trial));
    kill(child, SIGKILL);
    int status = 0;
    waitpid(child, &status, 0);
    ASSERT_TRUE(WIFSIGNALED(status));
    // Whatever the kill interrupted, the file at `path` is complete and consistent.
    const mf::NamedTensors t = mf::load_safetensors(path);
    ASSERT_EQ(t.size(), 2u);
    const float first = t[0].second.to_vector<float>()[0];
    for (const auto& [name, x] : t) {
      const auto v = x.to_vector<float>();
      ASSERT_EQ(v.size(), size_t(4) << 20);
      for (size_t i = 0; i < v.size(); i += 4099) ASSERT_EQ(v[i], first) << name;
    }
    new_seen += first != 1.0f;
  }
  RecordProperty("trials_with_new_contents", new_seen);
  fs::remove_all(dir);
}
