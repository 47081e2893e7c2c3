// See batch_norm_forms.h. Output counts and metadata are torch 2.13's (native_functions.yaml
// and the programs torch.export writes for each form, CPU).
#include "passes/batch_norm_forms.h"

#include <algorithm>
#include <array>
#include <stdexcept>
#include <string>

#include "program/json_text.h"

namespace exmode::passes {

namespace {

using State = Site::State;
constexpr NormIr kInPlace = NormIr::kInPlace;
constexpr NormIr kFunctional = NormIr::kFunctional;

constexpr std::string_view kNoTraining =
    "torch.ops.aten._native_batch_norm_legit_no_training.default";
constexpr std::string_view kNoUpdate = "torch.ops.aten._batch_norm_no_update.default";
constexpr std::string_view kFactor = "exponential_average_factor";

constexpr std::array<BatchNormForm, 13> kForms = {{
    // The default IR of torch.export.export: nn.BatchNorm's own form, then the forms a
    // module calling the op writes, and older exports' (pre-dispatch) forms.
    {"torch.ops.aten.batch_norm.default", kInPlace, "training"},
    {"torch.ops.aten._native_batch_norm_legit.default", kInPlace, "training", State::kFixed, "",
     "momentum", 3},
    {"torch.ops.aten._native_batch_norm_legit.no_stats", kInPlace, "", State::kFixed, "",
     "momentum", 3},
    {"torch.ops.aten.native_batch_norm.default", kInPlace, "training", State::kFixed, "",
     "momentum", 3},
    {"torch.ops.aten.cudnn_batch_norm.default", kInPlace, "training", State::kFixed, "", kFactor,
     4},
    {"torch.ops.aten.miopen_batch_norm.default", kInPlace, "training", State::kFixed, "", kFactor,
     3},
    {"torch.ops.aten._batch_norm_with_update.default", kInPlace, "", State::kTrain, kNoUpdate,
     "momentum", 4},
    {kNoUpdate, kInPlace, "", State::kEval, "torch.ops.aten._batch_norm_with_update.default",
     "momentum", 4},
    {kNoTraining, kInPlace, "", State::kEval, "torch.ops.aten._native_batch_norm_legit.default",
     "momentum", 3},
    // The functional IR of run_decompositions().
    {"torch.ops.aten._native_batch_norm_legit_functional.default", kFunctional, "training",
     State::kFixed, kNoTraining, "momentum", 5, 3},
    {kNoTraining, kFunctional, "", State::kEval,
     "torch.ops.aten._native_batch_norm_legit_functional.default", "momentum", 3},
    {"torch.ops.aten._batch_norm_with_update_functional.default", kFunctional, "", State::kTrain,
     kNoUpdate, "momentum", 6, 4},
    {kNoUpdate, kFunctional, "", State::kEval,
     "torch.ops.aten._batch_norm_with_update_functional.default", "momentum", 4},
}};

// Targets of both IRs: whose they are is read from the program.
bool isShared(std::string_view target) { return target == kNoTraining || target == kNoUpdate; }

// An aten op whose name ends in '_' ("torch.ops.aten.add_.Tensor") updates its input in place.
bool isInPlaceAten(std::string_view target) {
  constexpr std::string_view kAten = "torch.ops.aten.";
  if (!target.starts_with(kAten)) return false;
  const std::string_view op = target.substr(kAten.size());
  const std::size_t dot = op.find('.');
  const std::string_view name = op.substr(0, dot);
  return name.size() > 1 && name.back() == '_' && name.front() != '_';
}

}  // namespace

std::span<const BatchNormForm> batchNormForms() { return kForms; }

const BatchNormForm* batchNormForm(std::string_view target, NormIr ir) {
  for (const BatchNormForm& form : kForms) {
    if (form.target == target && form.ir == ir) return &form;
  }
  return nullptr;
}

const BatchNormForm& otherForm(const BatchNormForm& form) {
  const BatchNormForm* other = form.other.empty() ? &form : batchNormForm(form.other, form.ir);
  if (other == nullptr) throw std::logic_error("batch norm form without its other mode's form");
  return *other;
}

bool isFunctionalIrNode(const Graph& graph, const Node& node) {
  if (!node.metadataFieldJson("from_node").empty()) return true;
  bool mutates = false;
  for (const SignatureSpec& spec : graph.outputSpecs())
    mutates = mutates || spec.kind == "buffer_mutation";
  if (!mutates) return false;
  for (const auto& other : graph.nodes()) {
    if (isInPlaceAten(other->target())) return false;
  }
  return true;
}

bool formApplies(const BatchNormForm& form, const Graph& graph, const Node& node) {
  if (!isShared(form.target)) return true;
  return isFunctionalIrNode(graph, node) == (form.ir == NormIr::kFunctional);
}

bool savedStatisticsRead(const Graph& graph, const Node& node) {
  if (node.outputs().size() < 3) return false;
  for (std::size_t i = 1; i <= 2; ++i) {
    const Value* saved = node.outputs()[i].tensor();
    if (saved == nullptr) continue;
    if (!saved->users().empty()) return true;
    for (const Argument& out : graph.outputs()) {
      for (const Ref& ref : out.payload.refs) {
        if (ref.value == saved) return true;
      }
    }
  }
  return false;
}

std::string emptyTensorMeta(std::string_view input_meta) {
  return json::withMembers(input_meta, {{"sizes", "[{\"as_int\": 0}]"},
                                        {"strides", "[{\"as_int\": 1}]"},
                                        {"requires_grad", "false"}})
      .value_or(std::string(input_meta));
}

void collectFormSites(const Graph& graph, NormIr ir, SiteDetail detail, std::vector<Site>& sites,
                      FormSiteMaker make) {
  const auto first = static_cast<std::ptrdiff_t>(sites.size());
  bool several = false;
  for (const BatchNormForm& form : batchNormForms()) {
    if (form.ir != ir) continue;
    const std::vector<Node*>& nodes = graph.nodesWithTarget(form.target);
    if (nodes.empty()) continue;
    several = several || static_cast<std::ptrdiff_t>(sites.size()) > first;
    for (const Node* node : nodes) {
      if (formApplies(form, graph, *node)) sites.push_back(make(*node, form, detail));
    }
  }
  // Several forms: in graph order (a mixed program holds both modes' forms; the counter
  // chains are followed in graph order).
  if (several) {
    std::stable_sort(sites.begin() + first, sites.end(), [](const Site& a, const Site& b) {
      return a.node->order() < b.node->order();
    });
  }
}

}  // namespace exmode::passes
