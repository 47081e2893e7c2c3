// The pattern matcher (exmode/pattern.h) over one program's graph: the anchor patterns of
// each mode pass (their targets), a pattern with argument constraints, a three-node chain
// (dropout of relu of batch norm), and the same constrained pattern tried on every node
// with matchNode (no by-target index) for comparison.
#include <benchmark/benchmark.h>

#include <memory>

#include "exmode/passes.h"
#include "exmode/pattern.h"
#include "exmode/program.h"
#include "inputs.h"

namespace exmode::bench {

namespace {

using rewrite::Pattern;

std::vector<std::string> shortTargets(const std::vector<std::string>& targets) {
  std::vector<std::string> out;
  for (const std::string& t : targets) out.emplace_back(shortTarget(t));
  return out;
}

std::shared_ptr<const Pattern> batchNormWithArgs() {
  auto p = std::make_shared<Pattern>(std::vector<std::string>{"aten.batch_norm.default"});
  p->arg("input", rewrite::tensor(), "input")
      .arg("running_mean", rewrite::notNone(), "running_mean")
      .arg("training", rewrite::boolArg(), "training")
      .arg("momentum", rewrite::floatArg(), "momentum")
      .as("bn");
  return p;
}

std::shared_ptr<const Pattern> dropoutReluBatchNorm() {
  static const Pattern bn = *batchNormWithArgs();
  static const Pattern relu = Pattern({"aten.relu.default"}).arg("self", rewrite::producedBy(bn));
  auto p = std::make_shared<Pattern>(std::vector<std::string>{"aten.dropout.default"});
  p->arg("input", rewrite::producedBy(relu)).arg("train", rewrite::boolArg(), "train");
  return p;
}

void registerMatch(const std::string& name, const Input& input,
                   std::shared_ptr<const Pattern> pattern) {
  const Input* in = &input;
  benchmark::RegisterBenchmark(name.c_str(), [in, pattern](benchmark::State& state) {
    const auto program = Program::parse(in->json, in->name);
    std::size_t matches = 0;
    for (auto _ : state) {
      auto found = rewrite::matchAll(program->graph(), *pattern);
      matches = found.size();
      benchmark::DoNotOptimize(found.data());
    }
    state.counters["matches"] = static_cast<double>(matches);
    state.counters["nodes"] = static_cast<double>(program->graph().nodes().size());
  })->Unit(benchmark::kMicrosecond);
}

}  // namespace

void registerMatchBenchmarks(const Input& input) {
  for (const ModePass* pass : modePasses()) {
    registerMatch("match/" + std::string(pass->name()) + "/" + input.name, input,
                  std::make_shared<Pattern>(shortTargets(pass->targets())));
  }
  registerMatch("match/batch_norm_args/" + input.name, input, batchNormWithArgs());
  registerMatch("match/dropout_relu_batch_norm/" + input.name, input, dropoutReluBatchNorm());

  const Input* in = &input;
  const std::shared_ptr<const Pattern> pattern = batchNormWithArgs();
  benchmark::RegisterBenchmark(("match_every_node/batch_norm_args/" + input.name).c_str(),
                               [in, pattern](benchmark::State& state) {
                                 const auto program = Program::parse(in->json, in->name);
                                 std::size_t matches = 0;
                                 for (auto _ : state) {
                                   matches = 0;
                                   for (const auto& node : program->graph().nodes()) {
                                     matches +=
                                         rewrite::matchNode(*node, *pattern).has_value() ? 1 : 0;
                                   }
                                   benchmark::DoNotOptimize(matches);
                                 }
                                 state.counters["matches"] = static_cast<double>(matches);
                               })
      ->Unit(benchmark::kMicrosecond);
}

}  // namespace exmode::bench
