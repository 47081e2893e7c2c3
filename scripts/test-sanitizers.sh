#!/usr/bin/env bash
# Builds exmode with AddressSanitizer (leak checks on) and UndefinedBehaviorSanitizer in
# build-asan/, runs every C++ unit test there, then runs the bad-input and hostile-file CLI
# tests (tests/python/test_bad_input.py, test_hostile_files.py) against the sanitized
# exmode binary. Any sanitizer report fails the run: the build stops at the first report
# (-fno-sanitize-recover=all).
# The normal build in build/ is not touched. Exits non-zero if anything fails.
set -uo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh > /dev/null || { echo "setup failed: run ./scripts/setup.sh" >&2; exit 1; }

# -O1: the tests run about as fast as at -O2 under the sanitizers, and it compiles faster.
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DCMAKE_CXX_FLAGS_DEBUG="-g -O1" \
  -DEXMODE_SANITIZE=ON -DEXMODE_BUILD_BENCHMARKS=OFF > build-asan-configure.log 2>&1 ||
  { cat build-asan-configure.log; exit 1; }
cmake --build build-asan -j "$(nproc)" || exit 1

export ASAN_OPTIONS="detect_leaks=1:strict_string_checks=1:detect_stack_use_after_return=1:check_initialization_order=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
status=0
echo "== unit tests under AddressSanitizer and UndefinedBehaviorSanitizer"
ctest --test-dir build-asan --output-on-failure -j "$(nproc)" || status=1
echo "== bad-input and hostile-file CLI tests against the sanitized exmode"
EXMODE_BIN="$PWD/build-asan/exmode" python3 -m pytest tests/python/test_bad_input.py \
  tests/python/test_hostile_files.py -q -n "$(nproc)" -p no:cacheprovider || status=1
exit $status
