// See norm_counter.h.
#include "passes/norm_counter.h"

#include <algorithm>
#include <string>

namespace exmode::passes {

namespace {
constexpr std::string_view kRunningMean = "running_mean";
constexpr std::string_view kCounter = "num_batches_tracked";
constexpr std::string_view kDotCounter = ".num_batches_tracked";
}  // namespace

using rewrite::Match;
using rewrite::matchNode;

absl::InlinedVector<Value*, 2> counterCandidates(const Graph& graph, const Node& site,
                                                 const Value& running_mean) {
  absl::InlinedVector<Value*, 2> candidates;
  auto add = [&](Value* counter) {
    if (counter != nullptr &&
        std::find(candidates.begin(), candidates.end(), counter) == candidates.end()) {
      candidates.push_back(counter);
    }
  };
  thread_local std::string unescaped_module;
  std::string_view module = site.modulePathView();
  if (module.data() == nullptr) {
    unescaped_module = site.modulePath();
    module = unescaped_module;
  }
  // "<m>." of running_mean's buffer "<m>.running_mean".
  const SignatureSpec* spec = graph.inputSpecOf(&running_mean);
  const bool beside =
      spec != nullptr && spec->kind == "buffer" && spec->target.ends_with(kRunningMean);
  const std::string_view prefix =
      beside ? spec->target.substr(0, spec->target.size() - kRunningMean.size()) : "";
  // Usually both are the module's own counter, listed right after its running statistics.
  const bool own = beside && !module.empty() && prefix.size() == module.size() + 1 &&
                   prefix.starts_with(module) && prefix.back() == '.';
  if (!module.empty()) add(graph.bufferInput(module, kDotCounter, own ? spec : nullptr));
  if (beside && !own) add(graph.bufferInput(prefix, kCounter, spec));
  return candidates;
}

Node* incrementReading(const Value& value, const rewrite::Pattern& increment) {
  for (Node* user : value.users()) {
    auto m = matchNode(*user, increment);
    // An increment aliases the counter through its single tensor output.
    if (m && m->arg("self").tensor() == &value && user->output() != nullptr) return user;
  }
  return nullptr;
}

Value* counterValueBefore(Value& counter, const Node& node, const rewrite::Pattern& increment) {
  Value* current = &counter;
  while (Node* next = incrementReading(*current, increment)) {
    if (next->order() >= node.order()) break;
    current = next->output();
  }
  return current;
}

Increments incrementsOf(Value& counter, const Node& site, const Node* previous_site,
                        const rewrite::Pattern& increment) {
  Increments found;
  Value* current = &counter;
  while (Node* next = incrementReading(*current, increment)) {
    if (next->order() >= site.order()) break;
    if (previous_site == nullptr || next->order() > previous_site->order()) found.push_back(next);
    current = next->output();
  }
  return found;
}

absl::InlinedVector<std::pair<std::string_view, RawJson>, 2> incrementMetadata(const Node& site) {
  absl::InlinedVector<std::pair<std::string_view, RawJson>, 2> fields;
  for (std::string_view key :
       {std::string_view("stack_trace"), std::string_view("nn_module_stack")}) {
    const RawJson value = site.metadataFieldJson(key);
    if (value.size() < 2 || value.front() != '"' || value == "\"\"") continue;
    fields.emplace_back(key, value);
  }
  return fields;
}

}  // namespace exmode::passes
