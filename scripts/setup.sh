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

# The Python package (`pip install .`: the C++ core as exmode._core, and the exmode command).
# Built without pip's build isolation, which would fetch the build requirements on every
# run, and only when its sources changed since the last install (a stamp of their hashes).
python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore -r requirements-build.txt
stamp_file=build-py/installed.stamp
stamp=$( { python3 -c 'import sys; print(sys.executable, sys.version)'
           find CMakeLists.txt pyproject.toml requirements-build.txt cmake data include src python \
                -type f -not -path '*/__pycache__/*' -print0 | sort -z | xargs -0 sha256sum; } | sha256sum)
if [ "$(cat "$stamp_file" 2>/dev/null)" != "$stamp" ] || ! python3 -c 'import exmode._core' 2>/dev/null; then
  CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore \
    --no-build-isolation . > build-py.log 2>&1 || { cat build-py.log; exit 1; }
  mkdir -p build-py && echo "$stamp" > "$stamp_file"
fi
