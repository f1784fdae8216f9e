#!/usr/bin/env bash
# Idempotent set-up: installs the Debian packages microflex needs (only those missing),
# then configures and builds into build/. Shared by the README's two commands.
set -euo pipefail
cd "$(dirname "$0")/.."

pkgs=(cmake ninja-build g++ libeigen3-dev libspdlog-dev libfmt-dev libgtest-dev libgmock-dev
      libbenchmark-dev)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  sudo_cmd=""
  [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${missing[@]}"
fi

build_type=${MICROFLEX_BUILD_TYPE:-Release}
jobs=${MICROFLEX_JOBS:-$(nproc)}
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE="$build_type" ${MICROFLEX_CMAKE_ARGS:-} >/dev/null
cmake --build build -j "$jobs"
