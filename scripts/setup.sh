#!/usr/bin/env bash
# Installs everything exmode needs and builds it. Idempotent: a second run installs
# nothing and only rebuilds what changed.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(build-essential cmake libdeflate-dev libsimdjson-dev libcli11-dev libabsl-dev libgtest-dev libgmock-dev
              clang-format clang-tidy
              clang-14 libclang-rt-14-dev  # fuzz targets (libFuzzer) and sanitizers: scripts/fuzz.sh
              libbenchmark-dev)  # bench/ micro-benchmarks (bench/run.sh)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
fi

# Python side: torch is pinned (an unpinned torch pulls a multi-GB CUDA build).
python3 -m pip install -q --disable-pip-version-check -r requirements-test.txt

cmake -S . -B build -DCMAKE_BUILD_TYPE=Release > build-configure.log 2>&1 || { cat build-configure.log; exit 1; }
cmake --build build -j "$(nproc)"
