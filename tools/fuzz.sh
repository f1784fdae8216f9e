#!/usr/bin/env bash
# Builds the libFuzzer targets (clang, ASan + UBSan + coverage) into build-fuzz/ and runs
# each for a number of executions from its committed seed corpus.
#   bash tools/fuzz.sh [RUNS] [TARGET...]     RUNS defaults to 100000; targets to all
#   MICROFLEX_FUZZ_TIMEOUT   seconds one input may take before it counts as a hang (10)
# New inputs go to build-fuzz/corpus/<target>, crashes to build-fuzz/artifacts/<target>/;
# the committed corpora under tests/fuzz/ are only read.
set -euo pipefail
cd "$(dirname "$0")/.."

runs=${1:-100000}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] ||
  targets=(fuzz_safetensors fuzz_npy fuzz_json fuzz_train_flags fuzz_inspect_args)

# libFuzzer ships in clang's runtime package (libclang_rt.fuzzer-x86_64.a).
pkgs=(clang libclang-rt-14-dev)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "fuzz: installing ${missing[*]}"
  sudo_cmd=""
  [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${missing[@]}"
fi

build_dir=build-fuzz
CC=clang CXX=clang++ cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DMICROFLEX_CUDA=OFF -DMICROFLEX_BUILD_TESTS=OFF -DMICROFLEX_BUILD_BENCH=OFF \
  -DMICROFLEX_BUILD_EXAMPLES=OFF -DMICROFLEX_FUZZ=ON -DMICROFLEX_SANITIZE=address,undefined \
  >/dev/null
cmake --build "$build_dir" -j "${MICROFLEX_JOBS:-$(nproc)}" --target "${targets[@]}"

export ASAN_OPTIONS=detect_leaks=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
status=0
for t in "${targets[@]}"; do
  case "$t" in
    fuzz_safetensors) max_len=4096 ;;   # a header with a few tensors plus their data
    fuzz_npy) max_len=1024 ;;           # the 128-byte-aligned header plus a small array
    fuzz_json) max_len=4096 ;;
    fuzz_train_flags) max_len=1024 ;;   # a config file plus a command line
    fuzz_inspect_args) max_len=1024 ;;  # a command line
    *) echo "fuzz: unknown target $t" >&2; exit 2 ;;
  esac
  work="$build_dir/corpus/$t"
  art="$build_dir/artifacts/$t/"
  mkdir -p "$work" "$art"
  log="$build_dir/$t.log"
  start=$(date +%s)
  rc=0
  "$build_dir/tests/fuzz/$t" -runs="$runs" -max_len="$max_len" \
    -timeout="${MICROFLEX_FUZZ_TIMEOUT:-10}" -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$art" "$work" "tests/fuzz/corpus_$t" >"$log" 2>&1 || rc=$?
  secs=$(($(date +%s) - start))
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  if [ "$rc" -ne 0 ]; then
    echo "$t: FAILED (exit $rc) after ${secs}s; see $log and $art" >&2
    grep -m5 -E "ERROR|runtime error|Test unit written" "$log" >&2 || true
    status=1
  else
    echo "$t: ${execs:-?} executions in ${secs}s (${rate:-?} exec/s), max_len $max_len," \
      "$(ls "$work" | wc -l) new corpus inputs"
  fi
done
exit $status
