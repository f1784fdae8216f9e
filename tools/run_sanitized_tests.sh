#!/usr/bin/env bash
# Builds the CPU test suite and examples with AddressSanitizer + UndefinedBehaviorSanitizer
# into build-asan/ and runs them; any report aborts the run with a non-zero exit.
#   MICROFLEX_SANITIZE_FILTER  gtest filter (default: every test)
#   MICROFLEX_BUILD_TYPE       default RelWithDebInfo (Debug under ASan is several times slower)
#   MICROFLEX_JOBS             build jobs (default: nproc)
set -euo pipefail
cd "$(dirname "$0")/.."

build_dir=build-asan
build_type=${MICROFLEX_BUILD_TYPE:-RelWithDebInfo}
jobs=${MICROFLEX_JOBS:-$(nproc)}
filter=${MICROFLEX_SANITIZE_FILTER:-*}

start=$(date +%s)
cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE="$build_type" -DMICROFLEX_CUDA=OFF \
  -DMICROFLEX_BUILD_BENCH=OFF -DMICROFLEX_BUILD_EXAMPLES=ON -DMICROFLEX_FUZZ=OFF \
  -DMICROFLEX_SANITIZE=address,undefined >/dev/null
cmake --build "$build_dir" -j "$jobs"
built=$(date +%s)
echo "sanitized build: $((built - start)) s"

export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:strict_string_checks=1:detect_stack_use_after_return=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
log="$build_dir/tests.log"
rc=0
"$build_dir/tests/microflex_tests" --gtest_filter="$filter" --gtest_brief=1 2>&1 | tee "$log" ||
  rc=$?
passed=$(sed -n 's/^\[  PASSED  \] \([0-9]*\) test.*/\1/p' "$log" | tail -1)
failed=$(sed -n 's/^\[  FAILED  \] \([0-9]*\) test.*/\1/p' "$log" | tail -1)
examples=0
if [ "$rc" -eq 0 ]; then
  for ex in "$build_dir"/examples/*; do
    [ -x "$ex" ] && [ -f "$ex" ] || continue
    echo "example: $(basename "$ex")"
    "$ex" >/dev/null || { rc=$?; failed=$((${failed:-0} + 1)); break; }
    examples=$((examples + 1))
  done
fi
# A crash (a sanitizer report aborts the binary) leaves no gtest summary: count it as a failure.
if [ "$rc" -ne 0 ] && [ "${failed:-0}" -eq 0 ]; then failed=1; fi
echo "sanitized tests: $(($(date +%s) - built)) s"
echo "sanitized: $((${passed:-0} + examples)) passed, ${failed:-0} failed"
exit "$rc"
