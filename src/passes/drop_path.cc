// Chains a module runs only in training and its eval export does not hold at all: drop path
// (stochastic depth: `if not self.training: return x`, else x times a per-sample Bernoulli
// mask scaled by 1/keep), and after run_decompositions() the dropouts that decompose to the
// same kind of mask arithmetic (in-place dropout, Dropout1d/2d/3d, AlphaDropout,
// FeatureAlphaDropout). The forms and the conditions they are matched under are in
// drop_path_chain.h. After (eval): the readers of the chain's output read x and the chain is
// gone, as in torch's eval export.
//
// Going to eval, the chain is remembered in the custom metadata of its output's first reader
// (or, when only graph outputs read it, of the node before it) (drop_path_record.h), which
// torch.export.load and save keep; going to train restores it from there: same ops, literals,
// names (fresh ones where taken) and metadata, right after the node that preceded it, so the
// random ops run where they ran (same random-number consumption). An eval export never had
// the chain: there is nothing to restore, and the findings analysis says so.
//
// A chain is switched only alone: no other chain is next to it or reads it, and its holder
// has no record yet. Near misses are left alone (the findings analysis reports their random
// ops).
#include <absl/container/flat_hash_set.h>
#include <simdjson.h>

#include <algorithm>
#include <cstdio>
#include <variant>

#include "exmode/error.h"
#include "exmode/passes.h"
#include "exmode/pattern.h"
#include "passes/change.h"
#include "passes/drop_path_chain.h"
#include "passes/drop_path_record.h"
#include "passes/remembered.h"

namespace exmode::passes {

namespace {

using namespace rewrite;
using drop_path::Chain;
using drop_path::dropP;
using drop_path::kRecordKey;
using drop_path::Record;
using drop_path::RecordOutput;
using drop_path::RecordReader;

// The random ops a drop path starts with: what a nested graph must not hold (switch_mode.cc).
// bernoulli.p (the decomposed forms) is not among them: the decomposed IR has no nested
// regions of its own, and a nested one keeps its warning.
const std::vector<std::string>& randomTargets() {
  static const std::vector<std::string> targets = {"torch.ops.aten.bernoulli_.float",
                                                   "torch.ops.aten.rand.default"};
  return targets;
}

// The distinct nodes reading `value`, first in graph order first.
std::vector<Node*> readersOf(const Value& value) {
  std::vector<Node*> readers(value.users().begin(), value.users().end());
  std::sort(readers.begin(), readers.end(),
            [](const Node* a, const Node* b) { return a->order() < b->order(); });
  readers.erase(std::unique(readers.begin(), readers.end()), readers.end());
  return readers;
}

// Every reference to `value`, as the record names them.
std::vector<RecordReader> usesOf(const Value& value) {
  std::vector<RecordReader> uses;
  for (const Node* reader : readersOf(value)) {
    for (const NamedArgument& in : reader->inputs()) {
      for (std::size_t k = 0; k < in.arg.payload.refs.size(); ++k) {
        if (in.arg.payload.refs[k].value == &value) {
          uses.push_back({std::string(reader->name()), std::string(in.name), k});
        }
      }
    }
  }
  return uses;
}

// Every graph output reference to `value`.
std::vector<RecordOutput> outputUsesOf(const Graph& graph, const Value& value) {
  std::vector<RecordOutput> uses;
  for (std::size_t i = 0; i < graph.outputs().size(); ++i) {
    const auto& refs = graph.outputs()[i].payload.refs;
    for (std::size_t k = 0; k < refs.size(); ++k) {
      if (refs[k].value == &value) uses.push_back({i, k});
    }
  }
  return uses;
}

bool holdsRecord(const Node& node) {
  const RawJson custom = node.metadataFieldJson("custom");
  return !custom.empty() && custom.find(kRecordKey) != std::string_view::npos &&
         remembered::get(node, kRecordKey).has_value();
}

// The node that keeps a chain's record: its output's first reader, or the node before the
// chain when only graph outputs read it.
const Node* holderOf(const Graph& graph, const Chain& chain) {
  const std::vector<Node*> readers = readersOf(*chain.last().output());
  return readers.empty() ? graph.previousNode(*chain.nodes.front()) : readers.front();
}

// A chain switched alone: nothing it needs after the switch is part of another chain, and
// its holder can take its record.
bool standsAlone(const Graph& graph, const Chain& chain,
                 const absl::flat_hash_set<const Node*>& members) {
  const auto member = [&](const Node* n) { return n != nullptr && members.contains(n); };
  const std::vector<Node*> readers = readersOf(*chain.last().output());
  if (std::any_of(readers.begin(), readers.end(), member)) return false;
  if (member(graph.previousNode(*chain.nodes.front()))) return false;
  for (const Node* node : chain.nodes) {
    for (const NamedArgument& in : node->inputs()) {
      const Value* v = in.arg.tensor();
      if (v != nullptr && !std::count(chain.nodes.begin(), chain.nodes.end(), v->producer()) &&
          member(v->producer())) {
        return false;
      }
    }
  }
  const Node* holder = holderOf(graph, chain);
  if (holder == nullptr || !remembered::usable(*holder) || holdsRecord(*holder)) return false;
  // A chain that ends the graph goes back after the last node, which a restore re-creates
  // in front of it (the rewriter inserts before a node).
  return readers.empty() && graph.nextNode(chain.last()) == nullptr
             ? drop_path::recordableNode(*holder)
             : true;
}

// What restoring a record takes, resolved against the graph.
struct Restore {
  Record record;
  Value* x = nullptr;
  struct Use {
    Node* reader;
    std::size_t input;
    std::size_t ref;
  };
  std::vector<Use> uses;
  std::vector<RecordOutput> outputs;  // graph outputs that read x now
  const Node* after = nullptr;        // the node the chain follows, when found
  const Node* before = nullptr;       // the node the chain goes before
  // The chain ended the graph: `before` is the last node, re-created in front of the chain.
  bool recreate = false;
};

using Resolved = std::variant<Restore, std::string>;

const Node* findNode(const Graph& graph, const Node& from, std::string_view name) {
  if (const Value* v = graph.tryGetValue(name);
      v != nullptr && v->producer() != nullptr && v->producer()->name() == name) {
    return v->producer();
  }
  // Nodes without a single output: looked for a little way above the record.
  const Node* n = &from;
  for (int i = 0; i < 64 && n != nullptr; ++i, n = graph.previousNode(*n)) {
    if (n->name() == name) return n;
  }
  return nullptr;
}

Resolved resolve(const Graph& graph, const Node& holder) {
  const std::optional<std::string> json = remembered::get(holder, kRecordKey);
  std::optional<Record> record = json ? drop_path::parseRecord(*json) : std::nullopt;
  if (!record) return std::string("is not a drop-path record");
  Restore r;
  r.x = graph.tryGetValue(record->x);
  if (r.x == nullptr) return "names value '" + record->x + "', which the graph does not have";
  const Node* first = nullptr;
  for (const RecordReader& use : record->readers) {
    Node* reader = nullptr;
    for (Node* user : r.x->users()) {
      if (user->name() == use.node) reader = user;
    }
    const auto& inputs = reader == nullptr ? std::vector<NamedArgument>{} : reader->inputs();
    std::size_t i = 0;
    while (i < inputs.size() && inputs[i].name != use.input) ++i;
    if (i == inputs.size() || use.ref >= inputs[i].arg.payload.refs.size() ||
        inputs[i].arg.payload.refs[use.ref].value != r.x) {
      return "names a reader '" + use.node + "' (" + use.input + ") that does not read '" +
             record->x + "'";
    }
    r.uses.push_back({reader, i, use.ref});
    if (first == nullptr || reader->order() < first->order()) first = reader;
  }
  if (first != nullptr && first != &holder) {
    return std::string("is not on the first reader of its value");
  }
  if (first == nullptr && (!record->after || holder.name() != *record->after)) {
    return std::string("is read by graph outputs alone but not on the node before its chain");
  }
  if (!record->outputs.empty()) {
    // The outputs are moved by one replaceUses after the chain: they must be all of x's, and
    // no reader of x after the chain may be left out of the record.
    if (outputUsesOf(graph, *r.x) != record->outputs) {
      return "names graph outputs that are not all those reading '" + record->x + "'";
    }
    r.outputs = record->outputs;
  }
  // Values the chain reads from outside: defined before the place it goes.
  std::vector<const Value*> outside;
  for (std::size_t k = 0; k < record->nodes.size(); ++k) {
    for (const auto& in : record->nodes[k].inputs) {
      if (!in.tensor) continue;
      const bool local =
          std::any_of(record->nodes.begin(), record->nodes.begin() + static_cast<std::ptrdiff_t>(k),
                      [&](const auto& n) { return n.output == *in.tensor; });
      if (local) continue;
      const Value* v = graph.tryGetValue(*in.tensor);
      if (v == nullptr) return "reads value '" + *in.tensor + "', which the graph does not have";
      outside.push_back(v);
    }
  }
  const auto fits = [&](const Node* before) {
    return before != nullptr && (first == nullptr || before->order() <= holder.order()) &&
           std::all_of(outside.begin(), outside.end(), [&](const Value* v) {
             return v->producer() == nullptr || v->producer()->order() < before->order() ||
                    (r.recreate && v->producer() == before);
           });
  };
  if (record->after) {
    r.after = findNode(graph, holder, *record->after);
    r.before = r.after == nullptr ? nullptr : graph.nextNode(*r.after);
    if (r.after != nullptr && r.before == nullptr && first == nullptr) {
      if (!drop_path::recordableNode(*r.after)) {
        return std::string("follows a last node that cannot be re-created before it");
      }
      r.before = r.after;
      r.recreate = true;
    }
  } else {
    r.before = graph.nodes().empty() ? nullptr : graph.nodes().front().get();
  }
  if (!fits(r.before) && first != nullptr) {
    r.after = nullptr;
    r.before = &holder;
  }
  if (!fits(r.before)) return std::string("reads a value defined after its first reader");
  if (!r.outputs.empty()) {
    for (const Node* user : r.x->users()) {
      const bool recorded = std::any_of(r.uses.begin(), r.uses.end(),
                                        [&](const Restore::Use& u) { return u.reader == user; });
      if (!recorded && user->order() >= r.before->order() && !(r.recreate && user == r.before)) {
        return "leaves a reader '" + std::string(user->name()) + "' of '" + record->x +
               "' after its chain out of the record";
      }
    }
  }
  r.record = std::move(*record);
  return r;
}

std::string pText(drop_path::Form form, double keep) {
  char text[32];
  std::snprintf(text, sizeof text, " p=%.12g", 1.0 - keep);
  return std::string(drop_path::formName(form)) + text;
}

Change change(Rewriter& rewriter, const Node& mul, const Node& site, std::string_view before,
              std::string_view after) {
  std::string_view module = mul.modulePathView();
  if (module.data() == nullptr) module = rewriter.keep(mul.modulePath());
  return {mul.name(), shortTarget(mul.target()), module, before, after, &site};
}

constexpr std::string_view kRemoved = "removed";

class DropPathPass final : public ModePass {
 public:
  std::string_view name() const override { return "drop_path"; }
  const std::vector<std::string>& targets() const override { return randomTargets(); }

  void collectSites(const Graph& graph, std::vector<Site>& sites,
                    SiteDetail /*detail*/) const override {
    const std::size_t first = sites.size();
    std::vector<Chain> chains;
    for (const std::string& target : drop_path::startTargets()) {
      for (const Node* node : graph.nodesWithTarget(target)) {
        if (auto chain = drop_path::matchChain(graph, *node)) chains.push_back(std::move(*chain));
      }
    }
    absl::flat_hash_set<const Node*> members;
    for (const Chain& chain : chains) members.insert(chain.nodes.begin(), chain.nodes.end());
    for (const Chain& chain : chains) {
      if (!standsAlone(graph, chain, members)) continue;
      sites.push_back(
          {.node = &chain.last(), .state = Site::State::kTrain, .p = dropP(chain.keep)});
    }
    // Records can be on any node: every node's metadata is looked at (one member compare
    // for most).
    for (const auto& node : graph.nodes()) {
      if (!holdsRecord(*node)) continue;
      Resolved resolved = resolve(graph, *node);
      if (const auto* error = std::get_if<std::string>(&resolved)) {
        throw Error(ErrorKind::kBadProgram, "node '" + std::string(node->name()) + "': metadata " +
                                                std::string(kRecordKey) + " " + *error);
      }
      const double keep = std::get<Restore>(resolved).record.keep;
      sites.push_back({.node = node.get(), .state = Site::State::kEval, .p = dropP(keep)});
    }
    std::sort(sites.begin() + static_cast<std::ptrdiff_t>(first), sites.end(),
              [](const Site& a, const Site& b) { return a.node->order() < b.node->order(); });
  }

  void apply(Rewriter& rewriter, Mode target, std::span<Site> sites,
             SwitchReport& report) const override {
    Graph& graph = rewriter.graph();
    const std::size_t first_change = report.changes.size();
    for (Site& site : sites) {
      if (target == Mode::kEval && site.state == Site::State::kTrain) {
        toEval(rewriter, site, report);
      } else if (target == Mode::kTrain && site.state == Site::State::kEval) {
        toTrain(rewriter, site, report);
      }
    }
    graph.renumber();
    // Sites moved between the multiply and its first reader: report in graph order.
    std::stable_sort(
        report.changes.begin() + static_cast<std::ptrdiff_t>(first_change), report.changes.end(),
        [](const Change& a, const Change& b) { return a.site->order() < b.site->order(); });
  }

  void siteMembers(const Site& site, std::vector<const Node*>& out) const override {
    if (site.state != Site::State::kTrain) {
      out.push_back(site.node);
      return;
    }
    drop_path::chainMembers(*site.node, out);  // the mask ops too (no graph here)
  }

 private:
  static void toEval(Rewriter& rewriter, Site& site, SwitchReport& report) {
    Graph& graph = rewriter.graph();
    const std::optional<Chain> chain = drop_path::chainOf(graph, *site.node);
    if (!chain) return;  // collected from this graph: cannot happen
    Value& y = *chain->last().output();
    Node& holder = rewriter.mutableNode(*holderOf(graph, *chain));
    const std::string record = drop_path::writeRecord(
        chain->form, chain->keep, *chain->x, graph.previousNode(*chain->nodes.front()),
        chain->nodes, usesOf(y), outputUsesOf(graph, y));
    const Change done = change(rewriter, chain->last(), holder,
                               rewriter.keep(pText(chain->form, chain->keep)), kRemoved);
    rewriter.replaceUses(y, *chain->x);
    for (auto it = chain->nodes.rbegin(); it != chain->nodes.rend(); ++it) {
      rewriter.eraseNode(rewriter.mutableNode(**it));
    }
    remembered::set(rewriter, holder, kRecordKey, record);
    site.node = &holder;
    site.state = Site::State::kEval;
    report.changes.push_back(done);
  }

  static void toTrain(Rewriter& rewriter, Site& site, SwitchReport& report) {
    Graph& graph = rewriter.graph();
    graph.renumber();
    Resolved resolved = resolve(graph, *site.node);
    if (auto* error = std::get_if<std::string>(&resolved)) {
      // Checked when the sites were collected; the graph changed under the record since.
      const Node& holder = *site.node;
      Finding f{.kind = Finding::Kind::kInexact, .when = Finding::When::kToTrain};
      f.node = std::string(holder.name());
      f.op = std::string(shortTarget(holder.target()));
      f.module = holder.modulePath();
      f.module_type = holder.moduleType();
      f.reason = "the drop path recorded here was not restored: its record " + *error;
      report.warnings.push_back(std::move(f));
      return;
    }
    Restore& r = std::get<Restore>(resolved);
    Node& before = rewriter.mutableNode(*r.before);
    std::vector<std::pair<std::string_view, Value*>> defined;  // record name -> value
    std::vector<Value*> values;
    Node* recreated = nullptr;
    if (r.recreate) {
      recreated = &recreate(rewriter, before);
      defined.emplace_back(before.name(), recreated->output());
      if (r.x == before.output()) r.x = recreated->output();
    }
    for (const drop_path::RecordNode& rn : r.record.nodes) {
      NewNode spec;
      spec.target = internTarget(rewriter, rn.target);
      for (const drop_path::RecordInput& in : rn.inputs) {
        NamedArgument arg{
            .name = rewriter.keep(in.name), .arg = {}, .kind = rewriter.keep(in.kind)};
        if (in.tensor) {
          Value* v = nullptr;
          for (const auto& [name, value] : defined) {
            if (name == *in.tensor) v = value;
          }
          if (v == nullptr) v = graph.tryGetValue(*in.tensor);
          arg.arg = rewriter.tensorArg(*v);  // resolve() found it
        } else {
          arg.arg.kind = rewriter.keep(in.arg_kind);
          arg.arg.payload.text = rewriter.keep(in.payload);
        }
        for (const auto& [key, raw] : in.extra)
          arg.extra.emplace_back(rewriter.keep(key), rewriter.keep(raw));
        spec.inputs.push_back(std::move(arg));
      }
      const RawJson name = graph.tryGetValue(rn.output) == nullptr ? rewriter.keep(rn.output)
                                                                   : rewriter.freshName(rn.output);
      spec.tensor_outputs.emplace_back(name, rewriter.keep(rn.tensor_meta));
      for (const auto& [key, token] : rn.metadata) {
        spec.metadata.emplace_back(rewriter.keep(key), rewriter.keep(token));
      }
      Node& added = rewriter.insertBefore(before, std::move(spec));
      defined.emplace_back(rn.output, added.output());
      values.push_back(added.output());
    }
    rewriter.moveTensorValues(values, r.after == nullptr ? nullptr : r.after->output());
    Value& y = *values.back();
    if (recreated != nullptr) {
      // The last node's value is the re-created one's now; the holder (and its record) goes.
      rewriter.replaceUses(*before.output(), *recreated->output());
      rewriter.eraseNode(before);
      site.node = recreated;
    }
    for (const Restore::Use& use : r.uses) rewriter.replaceUse(*use.reader, use.input, use.ref, y);
    if (!r.outputs.empty()) {
      // resolve() checked that every use of x from the chain on is y's: the outputs move.
      graph.renumber();
      rewriter.replaceUses(*r.x, y, y.producer());
    }
    remembered::set(rewriter, rewriter.mutableNode(*site.node), kRecordKey, std::nullopt);
    const Node& mul = *y.producer();
    site.node = &mul;
    site.state = Site::State::kTrain;
    report.changes.push_back(
        change(rewriter, mul, mul, kRemoved, rewriter.keep(pText(r.record.form, r.record.keep))));
  }

  // A copy of `node` (a fresh name, its metadata without the record) inserted before it.
  static Node& recreate(Rewriter& rewriter, Node& node) {
    NewNode spec;
    spec.target = node.target();
    for (const NamedArgument& in : node.inputs()) {
      NamedArgument arg{.name = in.name, .arg = {}, .kind = in.kind};
      if (Value* v = in.arg.tensor()) {
        arg.arg = rewriter.tensorArg(*v);
      } else {
        arg.arg.kind = in.arg.kind;
        arg.arg.payload.text = rewriter.keep(in.arg.payload.text);
      }
      arg.extra = in.extra;
      spec.inputs.push_back(std::move(arg));
    }
    spec.tensor_outputs.emplace_back(rewriter.freshName(node.name()), node.output()->tensorMeta());
    for (const auto& field : node.metadataFields()) spec.metadata.push_back(field);
    Node& copy = rewriter.insertBefore(node, std::move(spec));
    remembered::set(rewriter, copy, kRecordKey, std::nullopt);
    return copy;
  }

  // The chain's targets are the patterns' own text: no new text per restore.
  static std::string_view internTarget(Rewriter& rewriter, const std::string& target) {
    const std::string* known = drop_path::knownTarget(target);
    return known != nullptr ? std::string_view(*known) : rewriter.keep(target);
  }
};

}  // namespace

const ModePass& dropPathPass() {
  static const DropPathPass pass;
  return pass;
}

}  // namespace exmode::passes
