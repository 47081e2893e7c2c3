// Each mode pass of exmode::modePasses(): collectSites on a parsed graph, and apply towards
// each mode on a fresh program every iteration (parsed, and for the switch to train first
// moved to eval, and its sites collected, with the timer paused). Also switchMode as a
// whole, the same way.
//
// Fresh programs make each iteration a real switch, but parsing dominates the wall time of
// these benchmarks, so their iteration count is fixed from the program size instead of
// being grown to --benchmark_min_time: about 64 MB of program JSON parsed per benchmark,
// between 2 and 200 iterations. EXMODE_BENCH_APPLY_ITERATIONS overrides it.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdlib>
#include <memory>

#include "exmode/passes.h"
#include "exmode/program.h"
#include "exmode/rewrite.h"
#include "inputs.h"

namespace exmode::bench {

namespace {

benchmark::IterationCount applyIterations(const Input& input) {
  if (const char* fixed = std::getenv("EXMODE_BENCH_APPLY_ITERATIONS")) {
    const long n = std::strtol(fixed, nullptr, 10);
    if (n > 0) return n;
  }
  const std::size_t budget = std::size_t{64} << 20;
  return static_cast<benchmark::IterationCount>(
      std::clamp<std::size_t>(budget / std::max<std::size_t>(input.json.size(), 1), 2, 200));
}

// A program parsed from `input`, moved to the opposite of `target` so that the timed call
// has something to do.
std::unique_ptr<Program> freshProgram(const Input& input, Mode target) {
  auto program = Program::parse(input.json, input.name);
  switchMode(*program, target == Mode::kEval ? Mode::kTrain : Mode::kEval);
  return program;
}

}  // namespace

void registerPassBenchmarks(const Input& input) {
  const Input* in = &input;
  for (const ModePass* pass : modePasses()) {
    const std::string pass_name(pass->name());
    benchmark::RegisterBenchmark(("sites/" + pass_name + "/" + input.name).c_str(),
                                 [in, pass](benchmark::State& state) {
                                   const auto program = Program::parse(in->json, in->name);
                                   std::vector<Site> sites;
                                   for (auto _ : state) {
                                     sites.clear();
                                     pass->collectSites(program->graph(), sites,
                                                        exmode::SiteDetail::kFull);
                                     benchmark::DoNotOptimize(sites.data());
                                   }
                                   state.counters["sites"] = static_cast<double>(sites.size());
                                 })
        ->Unit(benchmark::kMicrosecond);

    for (const Mode target : {Mode::kEval, Mode::kTrain}) {
      benchmark::RegisterBenchmark(
          ("apply/" + pass_name + "/" + std::string(modeName(target)) + "/" + input.name).c_str(),
          [in, pass, target](benchmark::State& state) {
            std::unique_ptr<Program> program;
            std::vector<Site> sites;
            std::size_t changes = 0;
            for (auto _ : state) {
              state.PauseTiming();
              program = freshProgram(*in, target);
              sites.clear();
              pass->collectSites(program->graph(), sites, SiteDetail::kState);
              state.ResumeTiming();
              rewrite::Rewriter rewriter(*program);
              SwitchReport report;
              pass->apply(rewriter, target, sites, report);
              changes = report.changes.size();
              benchmark::DoNotOptimize(report.changes.data());
            }
            state.counters["changes"] = static_cast<double>(changes);
          })
          ->Iterations(applyIterations(input))
          ->Unit(benchmark::kMicrosecond);
    }
  }

  for (const Mode target : {Mode::kEval, Mode::kTrain}) {
    benchmark::RegisterBenchmark(
        ("switchMode/" + std::string(modeName(target)) + "/" + input.name).c_str(),
        [in, target](benchmark::State& state) {
          std::unique_ptr<Program> program;
          std::size_t changes = 0;
          for (auto _ : state) {
            state.PauseTiming();
            program = freshProgram(*in, target);
            state.ResumeTiming();
            SwitchReport report = switchMode(*program, target);
            changes = report.changes.size();
            benchmark::DoNotOptimize(report.changes.data());
          }
          state.counters["changes"] = static_cast<double>(changes);
        })
        ->Iterations(applyIterations(input))
        ->Unit(benchmark::kMicrosecond);
  }
}

}  // namespace exmode::bench
