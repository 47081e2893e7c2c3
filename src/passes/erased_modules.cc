// Modules a decomposition erased: see findings_internal.h.
//
// In the default IR every dropout leaves its op (with train=False in eval); after
// run_decompositions() the eval forms of in-place dropout, Dropout1d/2d/3d and AlphaDropout
// are nothing at all. What is left is the module call graph, which lists every module that
// ran: one there with no node and no state under its path is reported, since the graph
// cannot tell an nn.Identity from a dropout it erased. A module whose chain a switch to eval
// removed and recorded (drop_path.cc) is not reported: its record is its node.
#include <absl/container/flat_hash_set.h>

#include <string>

#include "passes/drop_path_record.h"
#include "passes/findings_internal.h"
#include "passes/remembered.h"

namespace exmode::passes {

namespace {

bool decomposed(const Program& program) {
  return program.topMember("verifiers").find("\"ATEN\"") != std::string_view::npos;
}

}  // namespace

void erasedModuleFindings(const Program& program, std::vector<Finding>& out) {
  if (!decomposed(program)) return;
  const Graph& graph = program.graph();
  // Every module path that holds a node, with its ancestors.
  absl::flat_hash_set<std::string> occupied;
  for (const auto& node : graph.nodes()) {
    std::string path = node->modulePath();
    while (!path.empty() && occupied.insert(path).second) {
      const std::size_t dot = path.rfind('.');
      path = dot == std::string::npos ? std::string() : path.substr(0, dot);
    }
  }
  for (const auto& node : graph.nodes()) {
    if (node->metadataFieldJson("custom").find(drop_path::kRecordKey) == std::string_view::npos)
      continue;
    const std::optional<std::string> json = remembered::get(*node, drop_path::kRecordKey);
    const auto record = json ? drop_path::parseRecord(*json) : std::nullopt;
    if (!record) continue;
    for (std::string path : drop_path::recordedModules(*record)) {
      while (!path.empty() && occupied.insert(path).second) {
        const std::size_t dot = path.rfind('.');
        path = dot == std::string::npos ? std::string() : path.substr(0, dot);
      }
    }
  }
  for (const SignatureSpec& spec : graph.inputSpecs()) {
    std::string path(spec.target);
    for (std::size_t dot = path.rfind('.'); dot != std::string::npos; dot = path.rfind('.')) {
      path.resize(dot);
      occupied.insert(path);
    }
  }
  for (const std::string_view fqn : program.moduleCallGraphFqns()) {
    if (fqn.empty() || occupied.contains(std::string(fqn))) continue;
    Finding f{.kind = Finding::Kind::kUnrecorded, .when = Finding::When::kToTrain};
    f.module = std::string(fqn);
    f.reason =
        "module ran at export but left no node in this decomposed program: run_decompositions() "
        "erases a dropout that does nothing in eval (in-place dropout, Dropout1d/2d/3d, "
        "AlphaDropout), so its train-mode forward is unknown (an nn.Identity looks the same)";
    out.push_back(std::move(f));
  }
}

}  // namespace exmode::passes
