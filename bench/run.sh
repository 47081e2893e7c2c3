#!/usr/bin/env bash
# Runs exmode's benchmarks (not part of the test suite): sets up what they need (Debian
# packages and the project's Python packages through scripts/setup.sh, which also builds
# Release into build/; then bench/requirements.txt), then bench/bench.py with the
# arguments given. Generated data is cached in bench/.data (see --cache-dir).
#
#   bench/run.sh [--quick] [--only SECTION] [--repeat N] [--timeout S] [--markdown FILE] ...
#   bench/run.sh --help
set -euo pipefail
cd "$(dirname "$0")/.."

for arg in "$@"; do
  case "$arg" in -h|--help) exec python3 bench/bench.py --help ;; esac
done

# Set-up and build output goes to stderr: stdout is the tables.
./scripts/setup.sh >&2
python3 -m pip install -q --disable-pip-version-check -r bench/requirements.txt >&2
# Benchmark binaries on, Release, whatever an earlier configure of build/ chose.
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DEXMODE_BUILD_BENCHMARKS=ON \
  > build-configure.log 2>&1 || { cat build-configure.log >&2; exit 1; }
cmake --build build -j "$(nproc)" --target exmode exmode_bench_switch exmode_bench_floor \
  exmode_micro_benchmarks >&2
export EXMODE_BENCH_COMMAND=bench/run.sh  # names the command in the markdown output
exec python3 bench/bench.py --build-dir=build "$@"
