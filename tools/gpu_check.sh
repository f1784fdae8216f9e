#!/usr/bin/env bash
# On the GPU machine (see ../shared/device/README.md): build with CUDA for the card,
# run the whole test suite with the GPU tests on, optionally compute-sanitizer and the
# benchmarks next to PyTorch. Logs go to $OUT (or out/gpu). Usage:
#   bash tools/gpu_check.sh [tests] [sanitize] [bench] [flexbench] [train] [trainref]
# MICROFLEX_TEST_FILTER narrows `tests`; MICROFLEX_SANITIZE_FILTER narrows `sanitize`;
# MICROFLEX_BUILD_TARGETS (e.g. "microflex_tests train_bench") builds only those targets.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-out/gpu}
mkdir -p "$out"
[ -f .deps/unpack-deps.sh ] && bash .deps/unpack-deps.sh >/dev/null 2>&1
arch=${MICROFLEX_CUDA_ARCH:-90a}
if ! cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DMICROFLEX_CUDA=ON \
    -DCMAKE_CUDA_ARCHITECTURES="$arch" >"$out/configure.log" 2>&1; then
  tail -30 "$out/configure.log"; exit 1
fi
targets=()
for t in ${MICROFLEX_BUILD_TARGETS:-}; do targets+=(--target "$t"); done
if ! cmake --build build-gpu -j"$(nproc)" "${targets[@]}" >"$out/build.log" 2>&1; then
  grep -E "error" -A5 "$out/build.log" | head -80; exit 1
fi
echo "build ok"
for step in "$@"; do
  case $step in
    train)
      # Training throughput with the op profile of three steps (bench/train_bench.cpp).
      for model in small gpt2; do ./build-gpu/bench/train_bench "$model" --profile; done ;;
    trainref)
      # PyTorch eager and torch.compile on the same models, same card, same call.
      for model in small gpt2; do python3 tools/torch_train_bench.py "$model"; done ;;
    tests)
      # Line-buffered, so a run cut short by a time limit still leaves its log.
      stdbuf -oL -eL ./build-gpu/tests/microflex_tests --gtest_brief=1 --gtest_filter="${MICROFLEX_TEST_FILTER:-*}" >"$out/tests.log" 2>&1
      echo "tests rc=$?"
      grep -E "^\[  (FAILED|PASSED|SKIPPED) |Failure|error" "$out/tests.log" | head -60 ;;
    sanitize)
      for tool in memcheck racecheck synccheck; do
        timeout "${MICROFLEX_SANITIZE_TIMEOUT:-900}" compute-sanitizer --tool $tool --error-exitcode 9 \
          ./build-gpu/tests/microflex_tests --gtest_brief=1 --gtest_filter="${MICROFLEX_SANITIZE_FILTER:-Cuda*:*Cuda*}" \
          >"$out/sanitize_$tool.log" 2>&1
        echo "compute-sanitizer $tool rc=$?"; grep -E "ERROR SUMMARY|PASSED|FAILED" "$out/sanitize_$tool.log" | tail -3
      done ;;
    bench)
      ./build-gpu/bench/cuda_ops_bench | tee "$out/bench_microflex.jsonl"
      python3 tools/torch_ops_bench.py | tee "$out/bench_torch.jsonl"
      # The ratio per op: PyTorch time / microflex time (above 1: microflex faster).
      python3 - "$out/bench_microflex.jsonl" "$out/bench_torch.jsonl" <<'PY'
import json, sys
mf = {r["op"]: r["ms"] for r in map(json.loads, open(sys.argv[1]))}
for r in map(json.loads, open(sys.argv[2])):
    op = r["op"].replace("_fused", "").replace("_foreach", "")
    if op in mf:
        print(f"ratio {r['op']:40s} torch {r['ms']:8.4f} ms / microflex {mf[op]:8.4f} ms = {r['ms'] / mf[op]:.2f}")
PY
      ;;
    flexbench)
      # Fused flex_attention vs PyTorch FlexAttention (compiled) on the same card.
      ./build-gpu/bench/flex_gpu_bench | tee "$out/flex_microflex.jsonl"
      python3 tools/torch_flex_bench.py > "$out/flex_torch.jsonl" 2>"$out/flex_torch.err"
      python3 tools/flex_bench_compare.py "$out/flex_microflex.jsonl" "$out/flex_torch.jsonl" ;;
  esac
done
