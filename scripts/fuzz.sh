#!/usr/bin/env bash
# Builds the libFuzzer targets (tests/fuzz/) with clang++-14 in build-fuzz/, replays their
# seed corpora and past findings, then fuzzes each target for a bounded time, all targets
# at once (one process each). Exits non-zero on any finding: a crash, a sanitizer report,
# a leak, an exception other than exmode::Error, a time-out (a hang) or a failed check.
#
#   scripts/fuzz.sh                        60 s per target (what CI runs)
#   scripts/fuzz.sh --time 3600            an hour per target
#   scripts/fuzz.sh --time 28800 --keep-going program
#                                          8 hours of the program target, going on after
#                                          findings (each is saved; see below)
#
# Inputs found to reach new code are kept in build-fuzz/corpus/<target>/ and reused by the
# next run; findings are saved in build-fuzz/findings/<target>/ (reproduce one with
# build-fuzz/tests/fuzz/exmode_fuzz_<target> FILE), the log in build-fuzz/logs/<target>.log.
set -uo pipefail
cd "$(dirname "$0")/.."

seconds=60
keep_going=0
targets=()
while [ $# -gt 0 ]; do
  case "$1" in
    --time) seconds="$2"; shift 2 ;;
    --keep-going) keep_going=1; shift ;;
    -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
    archive|program) targets+=("$1"); shift ;;
    *) echo "fuzz.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
[ ${#targets[@]} -gt 0 ] || targets=(archive program)

./scripts/setup.sh > /dev/null || { echo "setup failed: run ./scripts/setup.sh" >&2; exit 1; }
cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_COMPILER=clang++-14 \
  -DEXMODE_BUILD_FUZZERS=ON -DEXMODE_BUILD_TESTS=OFF -DEXMODE_BUILD_BENCHMARKS=OFF \
  > build-fuzz-configure.log 2>&1 || { cat build-fuzz-configure.log; exit 1; }
cmake --build build-fuzz -j "$(nproc)" --target exmode_fuzz_archive exmode_fuzz_program || exit 1

echo "== fuzz targets on their seeds and past findings"
ctest --test-dir build-fuzz --output-on-failure || exit 1

# The archive target writes its outputs to a scratch directory per input: keep it in memory.
if [ -d /dev/shm ] && [ -w /dev/shm ]; then export TMPDIR=/dev/shm; fi
export ASAN_OPTIONS="detect_leaks=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
mkdir -p build-fuzz/logs
touch build-fuzz/logs/.start  # findings newer than this are this run's
pids=()
for target in "${targets[@]}"; do
  mkdir -p "build-fuzz/corpus/$target" "build-fuzz/findings/$target"
  options=(-max_total_time="$seconds" -max_len=200000 -timeout=20 -rss_limit_mb=2048
           -dict="tests/fuzz/$target.dict" -artifact_prefix="build-fuzz/findings/$target/"
           -print_final_stats=1)
  if [ $keep_going -eq 1 ]; then
    options+=(-fork=1 -ignore_crashes=1 -ignore_timeouts=1 -ignore_ooms=1)
  fi
  echo "== fuzzing $target for ${seconds} s (log: build-fuzz/logs/$target.log)"
  "build-fuzz/tests/fuzz/exmode_fuzz_$target" "${options[@]}" "build-fuzz/corpus/$target" \
    "tests/fuzz/corpus/$target" > "build-fuzz/logs/$target.log" 2>&1 &
  pids+=($!)
done

status=0
for i in "${!targets[@]}"; do
  target=${targets[$i]}
  wait "${pids[$i]}"
  code=$?
  log="build-fuzz/logs/$target.log"
  runs=$(grep -Eo 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -Eo '[0-9]+$' | tail -n 1)
  findings=$(find "build-fuzz/findings/$target" -type f -newer build-fuzz/logs/.start 2>/dev/null | wc -l)
  if [ "$code" -ne 0 ] || [ "$findings" -ne 0 ]; then
    status=1
    echo "fuzz $target: FINDING (exit $code); the end of $log:"
    grep -v -E '^(#[0-9]+|  NEW_FUNC|INFO:)' "$log" | tail -n 60
    echo "inputs: $(find "build-fuzz/findings/$target" -type f -newer build-fuzz/logs/.start | tr '\n' ' ')"
  else
    echo "fuzz $target: ${runs:-?} inputs in ${seconds} s, no finding"
  fi
done
exit $status
