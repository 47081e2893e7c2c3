// JSON parse (Program::parse, which also verifies), emit (Program::toJson, which verifies
// first) and verify alone, on one program text.
#include <benchmark/benchmark.h>

#include <memory>

#include "exmode/program.h"
#include "inputs.h"

namespace exmode::bench {

void registerJsonBenchmarks(const Input& input) {
  const Input* in = &input;
  benchmark::RegisterBenchmark(("parse/" + input.name).c_str(), [in](benchmark::State& state) {
    std::unique_ptr<Program> program;
    for (auto _ : state) {
      state.PauseTiming();
      program.reset();  // freeing the previous program is not parsing
      state.ResumeTiming();
      program = Program::parse(in->json, in->name);
      benchmark::DoNotOptimize(program.get());
    }
    state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * in->json.size()));
    state.counters["nodes"] = static_cast<double>(program->graph().nodes().size());
  })->Unit(benchmark::kMillisecond);

  benchmark::RegisterBenchmark(("emit/" + input.name).c_str(), [in](benchmark::State& state) {
    const auto program = Program::parse(in->json, in->name);
    std::size_t bytes = 0;
    for (auto _ : state) {
      std::string text = program->toJson();
      bytes = text.size();
      benchmark::DoNotOptimize(text.data());
    }
    state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * bytes));
  })->Unit(benchmark::kMillisecond);

  benchmark::RegisterBenchmark(("verify/" + input.name).c_str(), [in](benchmark::State& state) {
    const auto program = Program::parse(in->json, in->name);
    for (auto _ : state) program->verify();
    state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * in->json.size()));
  })->Unit(benchmark::kMillisecond);
}

}  // namespace exmode::bench
