// exmode_micro_benchmarks: Google Benchmark micro-benchmarks of exmode's layers.
//
//   exmode_micro_benchmarks [--benchmark_...] [PROGRAM.pt2|PROGRAM.json ...]
//
// Inputs: the paths given (after Google Benchmark has taken its own flags), else the
// colon-separated paths of EXMODE_BENCH_INPUTS, else the shipped example archive. Each
// input gets every benchmark, named FAMILY/[PASS/[MODE/]]INPUT.
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <exception>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "inputs.h"

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  std::vector<std::string> paths(argv + 1, argv + argc);
  if (paths.empty()) {
    if (const char* env = std::getenv("EXMODE_BENCH_INPUTS"); env != nullptr && *env != '\0') {
      std::istringstream list(env);
      for (std::string p; std::getline(list, p, ':');) {
        if (!p.empty()) paths.push_back(p);
      }
    } else {
      paths.push_back(EXMODE_SOURCE_DIR "/examples/resnetish_train.pt2");
    }
  }
  for (const std::string& p : paths) {
    if (!p.empty() && p[0] == '-') {
      std::cerr << "exmode_micro_benchmarks: unknown flag " << p << "\n";
      return 2;
    }
  }
  try {
    // Inputs live until the end: the benchmarks keep pointers to them.
    static const std::vector<exmode::bench::Input> inputs = exmode::bench::loadInputs(paths);
    for (const auto& input : inputs) {
      exmode::bench::registerJsonBenchmarks(input);
      exmode::bench::registerMatchBenchmarks(input);
      exmode::bench::registerPassBenchmarks(input);
    }
  } catch (const std::exception& e) {
    std::cerr << "exmode_micro_benchmarks: " << e.what() << "\n";
    return 1;
  }
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
