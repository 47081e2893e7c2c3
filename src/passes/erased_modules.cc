// What a decomposition erased: see findings_internal.h.
//
// In the default IR every dropout leaves its op (with train=False in eval); after
// run_decompositions() the eval forms of in-place dropout, Dropout1d/2d/3d and AlphaDropout
// are nothing at all, and from torch 2.14 on every eval dropout is (2.13 leaves a clone of
// aten.dropout). What is left is the module call graph, which lists every module that ran:
// one there with no node and no state under its path is reported, since the graph cannot
// tell an nn.Identity from a dropout it erased. A dropout inside a module with other nodes
// (functional dropout in attention or a dense layer) leaves nothing at all, so a decomposed
// eval program going to train is also warned about as a whole. Neither is said of a program
// exmode itself switched from train: it remembers what it changed (each such node holds
// an `exmode_` key in its custom metadata), and torch's train decomposition erases no
// dropout.
// A module whose chain a switch to eval removed and recorded (drop_path.cc) is not
// reported either: its record is its node.
#include <absl/container/flat_hash_set.h>

#include <algorithm>
#include <string>

#include "passes/drop_path_record.h"
#include "passes/findings_internal.h"
#include "passes/remembered.h"

namespace exmode::passes {

namespace {

bool decomposed(const Program& program) {
  return program.topMember("verifiers").find("\"ATEN\"") != std::string_view::npos;
}

bool isErasureFinding(const Finding& f) {
  return f.kind == Finding::Kind::kUnrecorded && f.node.empty();
}

}  // namespace

void erasedModuleFindings(const Program& program, std::vector<Finding>& out) {
  if (!decomposed(program)) return;
  const Graph& graph = program.graph();
  {
    Finding f{.kind = Finding::Kind::kUnrecorded, .when = Finding::When::kToTrain};
    f.reason =
        "this is a decomposed program (run_decompositions()) that exmode did not switch from "
        "train: a dropout that does nothing in eval leaves no node there (torch 2.14 erases "
        "every eval dropout, 2.13 all but aten.dropout's clone), so dropout the model applies "
        "in training may be missing from the switched program";
    out.push_back(std::move(f));
  }
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

void forgetErasuresIfSwitched(std::span<const Site> sites, std::vector<Finding>& findings) {
  const bool switched = std::any_of(sites.begin(), sites.end(), [](const Site& site) {
    return site.node->metadataFieldJson("custom").find("exmode_") != std::string_view::npos;
  });
  if (switched) std::erase_if(findings, isErasureFinding);
}

}  // namespace exmode::passes
