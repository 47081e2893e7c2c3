// The one analysis of what no switch can make exact; see findings.h.
//
// Two halves. The structural findings depend on the graph's shape, which switches do not
// change outside their own sites: state no node reads, random ops outside every site, and
// modules whose type is known to compute something else in the other mode. The site
// findings depend on the sites' states: a site whose train-mode parameters were never
// recorded (an eval export's attention dropout, a dropout whose p is 0.0), an eval export
// that may have merged a dropout's input with its output, a batch norm whose momentum the
// graph cannot express. A switch computes the structural half once per program (it is
// kept with the sites, see SwitchCache) and the site half from the sites it starts from.
#include "exmode/findings.h"

#include <absl/container/flat_hash_map.h>
#include <absl/container/flat_hash_set.h>

#include <algorithm>

#include "passes/change.h"
#include "passes/findings_internal.h"
#include "passes/remembered.h"
#include "program/json_text.h"

namespace exmode {

std::string_view findingKindName(Finding::Kind kind) {
  switch (kind) {
    case Finding::Kind::kUnusedState:
      return "unused-state";
    case Finding::Kind::kRandomOp:
      return "random-op";
    case Finding::Kind::kUnrecorded:
      return "unrecorded";
    case Finding::Kind::kMergedDropout:
      return "merged-dropout";
    case Finding::Kind::kModeDependentModule:
      return "mode-dependent-module";
    case Finding::Kind::kInexact:
      return "inexact";
  }
  return "inexact";
}

std::string_view findingWhenName(Finding::When when) {
  switch (when) {
    case Finding::When::kToTrain:
      return "to-train";
    case Finding::When::kToEval:
      return "to-eval";
    case Finding::When::kBoth:
      return "both";
  }
  return "both";
}

namespace passes {

namespace {

constexpr std::string_view kAtenPrefix = "torch.ops.aten.";

// Every ATen op base name tagged nondeterministic_seeded in native_functions.yaml (torch
// 2.13 and 2.14 agree; docs/EXPORT_IR.md). Those that are sites of a pass (dropout, sdpa,
// rrelu, the RNNs) are members of their sites and so not reported.
const absl::flat_hash_set<std::string_view>& randomOps() {
  static const absl::flat_hash_set<std::string_view> ops = {
      "_cudnn_attention_backward",
      "_cudnn_attention_forward",
      "_cudnn_init_dropout_state",
      "_cudnn_rnn",
      "_efficient_attention_forward",
      "_fill_mem_eff_dropout_mask_",
      "_flash_attention_forward",
      "_flash_attention_forward_no_dropout_inplace",
      "_fused_dropout",
      "_fused_sdp_choice",
      "_lstm_mps",
      "_nested_tensor_softmax_with_shape",
      "_sample_dirichlet",
      "_scaled_dot_product_attention_math",
      "_scaled_dot_product_attention_math_for_mps",
      "_scaled_dot_product_cudnn_attention",
      "_scaled_dot_product_cudnn_attention_backward",
      "_scaled_dot_product_efficient_attention",
      "_scaled_dot_product_efficient_attention_backward",
      "_scaled_dot_product_flash_attention",
      "_scaled_dot_product_flash_attention_for_cpu",
      "_scaled_dot_product_fused_attention_overrideable",
      "_standard_gamma",
      "_triton_scaled_dot_attention",
      "alpha_dropout",
      "alpha_dropout_",
      "bernoulli",
      "bernoulli_",
      "binomial",
      "cauchy",
      "cauchy_",
      "dropout",
      "dropout_",
      "exponential",
      "exponential_",
      "feature_alpha_dropout",
      "feature_alpha_dropout_",
      "feature_dropout",
      "feature_dropout_",
      "geometric",
      "geometric_",
      "gru",
      "log_normal",
      "log_normal_",
      "lstm",
      "miopen_rnn",
      "multinomial",
      "native_dropout",
      "normal",
      "normal_",
      "normal_functional",
      "poisson",
      "rand",
      "rand_like",
      "randint",
      "randint_like",
      "randn",
      "randn_like",
      "random",
      "random_",
      "randperm",
      "rnn_relu",
      "rnn_tanh",
      "rrelu",
      "rrelu_",
      "rrelu_with_noise",
      "rrelu_with_noise_",
      "rrelu_with_noise_functional",
      "scaled_dot_product_attention",
      "uniform",
      "uniform_",
  };
  return ops;
}

// "torch.ops.aten.bernoulli_.float" -> "bernoulli_"; empty for other namespaces.
std::string_view atenOpName(std::string_view target) {
  if (!target.starts_with(kAtenPrefix)) return {};
  target.remove_prefix(kAtenPrefix.size());
  return target.substr(0, target.find('.'));
}

// One entry of nn_module_stack: "key,path,type" (the path may hold commas).
struct ModuleEntry {
  std::string_view path;
  std::string_view type;
};

void splitStack(std::string_view stack, std::vector<ModuleEntry>& out) {
  out.clear();
  while (!stack.empty()) {
    const std::size_t semicolon = stack.find(';');
    const std::string_view entry = stack.substr(0, semicolon);
    stack = semicolon == std::string_view::npos ? std::string_view{} : stack.substr(semicolon + 1);
    const std::size_t first = entry.find(',');
    const std::size_t last = entry.rfind(',');
    if (first == std::string_view::npos || last == first) continue;
    out.push_back({entry.substr(first + 1, last - first - 1), entry.substr(last + 1)});
  }
}

// Whether `path` is `module` or inside it ("" is the root, around everything).
bool within(std::string_view path, std::string_view module) {
  return module.empty() ||
         (path.starts_with(module) && (path.size() == module.size() || path[module.size()] == '.'));
}

std::string_view ownerOf(std::string_view fqn) {
  const std::size_t dot = fqn.rfind('.');
  return dot == std::string_view::npos ? std::string_view{} : fqn.substr(0, dot);
}

std::string plural(std::size_t n, std::string_view one, std::string_view many) {
  return std::to_string(n) + " " + std::string(n == 1 ? one : many);
}

bool isGraphOutput(const Graph& graph, const Value* value) {
  for (const Argument& out : graph.outputs()) {
    for (const Ref& ref : out.payload.refs) {
      if (ref.value == value) return true;
    }
  }
  return false;
}

// A finding about `node`, with its op and module.
Finding nodeFinding(const Node& node, Finding::Kind kind, Finding::When when, std::string reason) {
  Finding f{.kind = kind, .when = when};
  f.node = std::string(node.name());
  f.op = std::string(shortTarget(node.target()));
  f.module = node.modulePath();
  f.module_type = node.moduleType();
  f.reason = std::move(reason);
  return f;
}

// A finding and where it sorts: placeholders first, in signature order, then nodes.
struct Ordered {
  std::size_t order;
  Finding finding;
};

// Parameters and buffers that no node reads, one finding per outermost module all of whose
// state is unread (or per owner, when only part of it is).
void unusedState(const Graph& graph,
                 const absl::flat_hash_map<std::string, std::string>& module_types,
                 std::vector<Ordered>& out) {
  struct State {
    std::string_view fqn;
    const Value* value;
    std::size_t position;
  };
  std::vector<State> unused;
  absl::flat_hash_set<std::string_view> read_buffers;
  // How many state entries each module path holds in all, and how many are unread.
  absl::flat_hash_map<std::string_view, std::pair<std::size_t, std::size_t>> counts;
  const auto& specs = graph.inputSpecs();
  std::vector<State> all;
  for (std::size_t i = 0; i < specs.size(); ++i) {
    const SignatureSpec& spec = specs[i];
    if ((spec.kind != "parameter" && spec.kind != "buffer") || spec.target.empty()) continue;
    const Value* value = spec.value();
    if (value == nullptr) continue;
    const bool read = !value->users().empty() || isGraphOutput(graph, value);
    if (read && spec.kind == "buffer") read_buffers.insert(spec.target);
    all.push_back({spec.target, read ? nullptr : value, i});
  }
  for (const State& s : all) {
    if (s.value == nullptr) {
      for (std::string_view m = ownerOf(s.fqn);; m = ownerOf(m)) {
        ++counts[m].first;
        if (m.empty()) break;
      }
      continue;
    }
    // A norm's counter is read only by training's increment: an eval program leaves it
    // unread, and the batch-norm pass restores its increment.
    constexpr std::string_view kCounter = "num_batches_tracked";
    if (s.fqn.ends_with(kCounter)) {
      const std::string_view owner = ownerOf(s.fqn);
      const std::string mean =
          owner.empty() ? "running_mean" : std::string(owner) + ".running_mean";
      if (read_buffers.contains(mean)) {
        for (std::string_view m = ownerOf(s.fqn);; m = ownerOf(m)) {
          ++counts[m].first;
          if (m.empty()) break;
        }
        continue;
      }
    }
    unused.push_back(s);
    for (std::string_view m = ownerOf(s.fqn);; m = ownerOf(m)) {
      ++counts[m].first;
      ++counts[m].second;
      if (m.empty()) break;
    }
  }
  // Group each unread entry under the outermost module all of whose state is unread.
  struct Group {
    std::string_view module;
    std::size_t count = 0;
    bool whole = false;
    const State* first = nullptr;
  };
  std::vector<Group> groups;
  absl::flat_hash_map<std::string_view, std::size_t> group_of;
  for (const State& s : unused) {
    const std::string_view owner = ownerOf(s.fqn);
    std::string_view module = owner;
    bool whole = false;
    // The chain from the root down to the owner; take the first fully unread one.
    std::vector<std::string_view> chain;
    for (std::string_view m = owner;; m = ownerOf(m)) {
      chain.push_back(m);
      if (m.empty()) break;
    }
    for (auto it = chain.rbegin(); it != chain.rend(); ++it) {
      const auto& [total, unread] = counts[*it];
      if (total == unread && (!it->empty() || chain.size() == 1)) {
        module = *it;
        whole = true;
        break;
      }
    }
    auto [pos, added] = group_of.try_emplace(module, groups.size());
    if (added) groups.push_back({module, 0, whole, &s});
    ++groups[pos->second].count;
  }
  for (const Group& g : groups) {
    // A module whose nodes are in the graph ran at export: its unread state is dead in the
    // mode exported (a rotary embedding's spare buffer), not a branch that did not run.
    // Modules that read cached state only in one mode are listed by type instead.
    if (!g.whole || (!g.module.empty() && module_types.contains(std::string(g.module)))) continue;
    Finding f{.kind = Finding::Kind::kUnusedState, .when = Finding::When::kBoth};
    f.node = std::string(g.first->value->name());
    f.module = std::string(g.module);
    f.reason =
        (g.count == 1
             ? std::string("its only parameter or buffer is")
             : "its " + plural(g.count, "parameter or buffer", "parameters and buffers") + " are") +
        " read by no node and no node runs in it: a branch that did not run at export "
        "(such as an auxiliary head) is not in the graph, so the other mode's forward may "
        "not be either";
    out.push_back({g.first->position, std::move(f)});
  }
}

}  // namespace

std::vector<Finding> structuralFindings(const Graph& graph, std::span<const Site> sites,
                                        const ModuleTypeRules& rules) {
  std::vector<Ordered> found;
  absl::flat_hash_set<const Node*> members;
  std::vector<const Node*> scratch;
  std::vector<std::string> drop_path_modules;
  for (const Site& site : sites) {
    scratch.clear();
    if (site.pass != nullptr) {
      site.pass->siteMembers(site, scratch);
      if (site.pass->name() == "drop_path") drop_path_modules.push_back(site.node->modulePath());
    } else {
      scratch.push_back(site.node);
    }
    members.insert(scratch.begin(), scratch.end());
  }

  const std::size_t placeholders = graph.inputSpecs().size();
  absl::flat_hash_map<std::string, std::string> module_types;  // path -> type
  absl::flat_hash_set<std::string> flagged_modules;
  absl::flat_hash_map<std::string, const ModuleTypeRule*> rule_of_type;
  std::vector<ModuleEntry> entries;
  std::string previous_stack;
  // Nested graphs (torch.no_grad / autocast regions, torch.cond branches) are kept
  // verbatim; a random op inside one runs as the region runs (timm's DropBlock samples its
  // mask under no_grad). Reported once per region, at the node that holds it.
  absl::flat_hash_map<const Node*, std::string_view> random_regions;  // owner -> first op
  for (const NestedNode& nested : graph.nestedNodes()) {
    const std::string_view op = atenOpName(nested.target);
    if (!op.empty() && randomOps().contains(op))
      random_regions.try_emplace(nested.owner, nested.target);
  }
  std::size_t position = placeholders;
  for (const auto& owned : graph.nodes()) {
    const Node& node = *owned;
    ++position;
    const std::string_view op = atenOpName(node.target());
    if (!op.empty() && randomOps().contains(op) && !members.contains(&node)) {
      found.push_back(
          {position,
           nodeFinding(node, Finding::Kind::kRandomOp, Finding::When::kToEval,
                       "a random op that is not part of a site exmode switches keeps running "
                       "after the switch to eval (a training-only branch, such as a drop path "
                       "of a form exmode does not recognise, or layerdrop, was frozen into the "
                       "graph)")});
    }
    if (auto region = random_regions.find(&node); region != random_regions.end()) {
      found.push_back({position, nodeFinding(node, Finding::Kind::kRandomOp, Finding::When::kToEval,
                                             "its nested graph holds " +
                                                 std::string(shortTarget(region->second)) +
                                                 ", a random op that keeps running after the "
                                                 "switch to eval (exmode does not switch inside "
                                                 "nested graphs)")});
    }
    const RawJson token = node.metadataFieldJson("nn_module_stack");
    if (token.size() < 2) continue;
    if (token == previous_stack) continue;  // nodes of one module share their stack
    previous_stack.assign(token);
    const std::string stack = node.metadataField("nn_module_stack");
    splitStack(stack, entries);
    for (const ModuleEntry& e : entries) {
      if (!module_types.try_emplace(std::string(e.path), std::string(e.type)).second) continue;
      // A program has far fewer module types than module paths, and the list is long.
      auto [known, new_type] = rule_of_type.try_emplace(std::string(e.type), nullptr);
      if (new_type) known->second = rules.find(e.type);
      const ModuleTypeRule* rule = known->second;
      if (rule == nullptr) continue;
      const std::string path(e.path);
      if (!flagged_modules.insert(path).second) continue;
      if (rule->drop_path && std::any_of(drop_path_modules.begin(), drop_path_modules.end(),
                                         [&](const std::string& m) { return within(m, path); })) {
        continue;  // the program remembers the drop path exmode removed there
      }
      Finding f{.kind = Finding::Kind::kModeDependentModule, .when = rule->when};
      f.node = std::string(node.name());
      f.op = std::string(shortTarget(node.target()));
      f.module = path;
      f.module_type = std::string(e.type);
      f.reason = rule->reason + " (" + rule->library + ")";
      found.push_back({position, std::move(f)});
    }
  }
  unusedState(graph, module_types, found);
  std::stable_sort(found.begin(), found.end(),
                   [](const Ordered& a, const Ordered& b) { return a.order < b.order; });
  std::vector<Finding> findings;
  findings.reserve(found.size());
  for (Ordered& o : found) findings.push_back(std::move(o.finding));
  return findings;
}

namespace {

// Ops whose eval export lets the output stand in for the input (docs/EXPORT_IR.md): torch
// 2.13 does it for these but plain dropout, torch 2.14 for plain dropout too.
bool mergesInEval(std::string_view target) {
  return target == "torch.ops.aten.dropout.default" ||
         target == "torch.ops.aten.feature_dropout.default" ||
         target == "torch.ops.aten.alpha_dropout.default" ||
         target == "torch.ops.aten.feature_alpha_dropout.default";
}

std::size_t useCount(const Graph& graph, const Value& value) {
  std::size_t n = value.users().size();
  for (const Argument& out : graph.outputs()) {
    for (const Ref& ref : out.payload.refs) n += ref.value == &value ? 1 : 0;
  }
  return n;
}

// Whether a node other than `node` reads `value` after `node` in graph order.
bool readLater(const Value& value, const Node& node) {
  return std::any_of(value.users().begin(), value.users().end(), [&](const Node* user) {
    return user != &node && user->order() > node.order();
  });
}

}  // namespace

bool looksMerged(const Graph& graph, const Node& dropout) {
  if (!mergesInEval(dropout.target())) return false;
  const NamedArgument* in = dropout.input("input");
  const Value* x = in == nullptr ? nullptr : in->arg.tensor();
  const Value* y = dropout.output();
  return x != nullptr && y != nullptr && !readLater(*x, dropout) && useCount(graph, *y) >= 2;
}

void siteFindings(const Graph& graph, std::span<const Site> sites, std::vector<Finding>& out) {
  forgetErasuresIfSwitched(sites, out);
  for (const Site& site : sites) {
    const Node& node = *site.node;
    // Which family a site is of, the pass that found it says: the op lists live there.
    const std::string_view family = site.pass == nullptr ? std::string_view{} : site.pass->name();
    if (family == "attention_dropout") {
      if (site.state == Site::State::kFixed) {
        out.push_back(nodeFinding(
            node, Finding::Kind::kUnrecorded, Finding::When::kToTrain,
            "attention dropout_p is 0.0 here and exmode did not switch this program from train: "
            "attention code passes `p if self.training else 0.0`, so an eval export does not "
            "record the train-mode dropout_p, and the switch leaves it at 0.0 (an "
            "attention_dropout "
            "rule can give it: docs/RULES.md)"));
      }
    } else if (family == "dropout") {
      if (site.state != Site::State::kEval) continue;
      const std::optional<double> value = site.p ? site.p : numberArg(node, "p");
      // An nn.Dropout* module passes its own p in both modes; functional code may not.
      if (value == 0.0 && !node.moduleType().starts_with("torch.nn.modules.dropout.")) {
        out.push_back(nodeFinding(
            node, Finding::Kind::kUnrecorded, Finding::When::kToTrain,
            "dropout p is 0.0 in an eval program outside an nn.Dropout module: code that passes "
            "`p if self.training else 0.0` (most attention code) records 0.0, so the train-mode "
            "p is unknown and the switch leaves it at 0.0 (an attention_dropout rule can give it: "
            "docs/RULES.md)"));
      }
      if (looksMerged(graph, node) && !remembered::get(node, kFromTrainExport)) {
        {
          out.push_back(nodeFinding(
              node, Finding::Kind::kMergedDropout, Finding::When::kToTrain,
              "in eval mode torch.export records this op's output in place of its input, so "
              "later uses of the input may read the output instead; nothing reads the input "
              "after it and its output has several readers, so after a switch to train those "
              "readers may get the dropped-out tensor"));
        }
      }
    } else if (family == "dropout_functional") {
      if (site.state == Site::State::kFixed) {
        out.push_back(nodeFinding(
            node, Finding::Kind::kUnrecorded, Finding::When::kToTrain,
            "this clone is what run_decompositions() made of a dropout (its from_node names "
            "aten.dropout) in eval mode or with p 0.0; the decomposition keeps no p, so the "
            "train-mode dropout is unknown and the switch leaves the clone"));
      }
    } else if (family == "batch_norm" || family == "batch_norm_functional") {
      if (site.state != Site::State::kEval) continue;
      // Kept with the site once a switch read it (batch_norm.cc): toggling reads no text.
      std::optional<double> momentum = site.momentum;
      if (!momentum) momentum = numberArg(node, "momentum");
      if (!momentum) momentum = numberArg(node, "exponential_average_factor");  // cudnn, miopen
      if (momentum == 0.0) {
        out.push_back(
            nodeFinding(node, Finding::Kind::kInexact, Finding::When::kToTrain,
                        "batch norm has momentum 0.0, so its running statistics will not change in "
                        "training; BatchNorm(momentum=None) exports this way in eval mode, and its "
                        "cumulative average cannot be expressed in the graph"));
      }
    }
  }
}

}  // namespace passes

namespace passes {

void modulePaths(std::string_view stack, std::vector<std::string_view>& out) {
  std::vector<ModuleEntry> entries;
  splitStack(stack, entries);
  out.clear();
  for (const ModuleEntry& e : entries) out.push_back(e.path);
}

void sortByGraphOrder(const Graph& graph, std::vector<Finding>& findings) {
  if (findings.size() < 2) return;
  // Placeholders (unused state) first, then nodes. Keyed by views of the graph's own names,
  // which stay put while the findings move.
  absl::flat_hash_map<std::string_view, std::size_t> position;
  std::size_t i = 0;
  for (const auto& spec : graph.inputSpecs()) {
    ++i;
    if (spec.value() != nullptr) position.try_emplace(spec.value()->name(), i);
  }
  for (const auto& node : graph.nodes()) position.try_emplace(node->name(), ++i);
  std::vector<std::pair<std::size_t, std::size_t>> keys;  // (position, index)
  keys.reserve(findings.size());
  for (std::size_t k = 0; k < findings.size(); ++k) {
    auto it = position.find(findings[k].node);
    keys.emplace_back(it == position.end() ? i + 1 : it->second, k);
  }
  std::stable_sort(keys.begin(), keys.end(),
                   [](const auto& a, const auto& b) { return a.first < b.first; });
  std::vector<Finding> sorted;
  sorted.reserve(findings.size());
  for (const auto& key : keys) sorted.push_back(std::move(findings[key.second]));
  findings = std::move(sorted);
}

}  // namespace passes

std::vector<Finding> analyze(const Program& program, const std::vector<Site>& sites,
                             const ModuleTypeRules& rules) {
  std::vector<Finding> findings = passes::programFindings(program.graph(), sites, rules);
  // What a decomposition erased concerns the whole program, and has no node to sort by.
  std::vector<Finding> erased;
  passes::erasedModuleFindings(program, erased);
  passes::forgetErasuresIfSwitched(sites, erased);
  findings.insert(findings.end(), erased.begin(), erased.end());
  return findings;
}

std::vector<Finding> findingsForSwitch(const std::vector<Finding>& findings, ProgramMode before,
                                       Mode target) {
  std::vector<Finding> out;
  if (alreadyIn(before, target)) return out;
  for (const Finding& f : findings) {
    if (concerns(f, target)) out.push_back(f);
  }
  return out;
}

}  // namespace exmode
