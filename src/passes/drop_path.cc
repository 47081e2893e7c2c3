// Drop path (stochastic depth): `if not self.training: return x`, else x times a per-sample
// Bernoulli mask scaled by 1/keep. Only a train export holds the mask ops.
//
// Before (train), torchvision's StochasticDepth and timm's DropPath (and copies of them):
//   m = aten.empty.memory_format(size=[N, 1, ..., 1], dtype, device, pin_memory)
//       | aten.new_empty.default(self, size=[N, 1, ..., 1], pin_memory)
//   b = aten.bernoulli_.float(m, keep)
//   d = aten.div_.Tensor(b, keep)                         (or div_.Scalar)
//   y = aten.mul.Tensor(x, d)                             (or mul(d, x))
// or Hugging Face transformers' drop_path:
//   r = aten.rand.default(size=[N, 1, ..., 1], dtype, device, pin_memory)
//   a = aten.add.Tensor(r, keep)
//   f = aten.floor_.default(a)   (aten.floor.default in transformers 5.x)
//   s = aten.div.Tensor(x, keep)                          (or div.Scalar)
//   y = aten.mul.Tensor(s, f)                             (or mul(f, s))
// After (eval): the readers of y read x and the chain is gone, as in torch's eval export.
//
// Going to eval, the chain is remembered in the custom metadata of y's first reader
// (drop_path_record.h), which torch.export.load and save keep; going to train restores it
// from there: same ops, literals, names (fresh ones where taken) and metadata, right after
// the node that preceded it, so the random ops run where they ran (same random-number
// consumption). An eval export never had the chain: there is nothing to restore.
//
// Conditions, so that a near miss is left alone (the findings analysis reports it):
// - the chain's nodes are consecutive, in this order, and each value of the chain has one
//   reader: the next op of the chain;
// - the keep literal of bernoulli_ (or the added constant) equals the divisor, 0 < keep < 1;
// - the mask's size is a literal [N, 1, ..., 1] of x's rank with N x's batch size, or all
//   ones (torchvision's "batch" mode); a symbolic size (dynamic shapes: as_sym_ints, with
//   the sym_size nodes it reads) is not matched yet;
// - y has x's dtype and sizes, some node reads it and no graph output is y;
// - no other drop path is next to it or reads it, and its first reader has no record yet.
#include <absl/container/flat_hash_set.h>
#include <simdjson.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <variant>

#include "exmode/error.h"
#include "exmode/passes.h"
#include "exmode/pattern.h"
#include "passes/change.h"
#include "passes/drop_path_record.h"
#include "passes/remembered.h"

namespace exmode::passes {

namespace {

using namespace rewrite;
using drop_path::kRecordKey;
using drop_path::Record;
using drop_path::RecordReader;

bool isInts(const Argument& arg) { return arg.kind == "as_ints"; }

const Pattern& maskPattern() {  // torchvision, timm
  static const Pattern pattern = Pattern({"aten.empty.memory_format", "aten.new_empty.default"})
                                     .arg("size", where(isInts), "size");
  return pattern;
}
const Pattern& bernoulliPattern() {
  static const Pattern pattern =
      Pattern({"aten.bernoulli_.float"}).arg("self", tensor(), "self").arg("p", floatArg(), "keep");
  return pattern;
}
const Pattern& scalePattern() {
  static const Pattern pattern = Pattern({"aten.div_.Tensor", "aten.div_.Scalar"})
                                     .arg("self", tensor(), "self")
                                     .arg("other", floatArg(), "keep");
  return pattern;
}
const Pattern& randPattern() {  // Hugging Face
  static const Pattern pattern = Pattern({"aten.rand.default"}).arg("size", where(isInts), "size");
  return pattern;
}
const Pattern& addPattern() {
  static const Pattern pattern =
      Pattern({"aten.add.Tensor"}).arg("self", tensor(), "self").arg("other", floatArg(), "keep");
  return pattern;
}
const Pattern& floorPattern() {
  // transformers 4.x floors in place, 5.x not (docs/EXPORT_IR.md).
  static const Pattern pattern =
      Pattern({"aten.floor_.default", "aten.floor.default"}).arg("self", tensor(), "self");
  return pattern;
}
const Pattern& divPattern() {
  static const Pattern pattern = Pattern({"aten.div.Tensor", "aten.div.Scalar"})
                                     .arg("self", tensor(), "self")
                                     .arg("other", floatArg(), "keep");
  return pattern;
}
const Pattern& mulPattern() {
  static const Pattern pattern =
      Pattern({"aten.mul.Tensor"}).arg("self", tensor(), "self").arg("other", tensor(), "other");
  return pattern;
}

// The random ops a drop path starts with: what a nested graph must not hold (switch_mode.cc).
const std::vector<std::string>& randomTargets() {
  static const std::vector<std::string> targets = {"torch.ops.aten.bernoulli_.float",
                                                   "torch.ops.aten.rand.default"};
  return targets;
}

struct Chain {
  std::vector<const Node*> nodes;  // graph order, the multiply last
  Value* x = nullptr;
  double keep = 0;
  const Node& mul() const { return *nodes.back(); }
};

// A tensor's dtype and sizes (nullopt for a symbolic size), from its TensorMeta.
struct Shape {
  std::int64_t dtype = -1;
  std::vector<std::optional<std::int64_t>> sizes;
  bool operator==(const Shape&) const = default;
};

std::optional<Shape> shapeOf(RawJson meta) {
  thread_local simdjson::dom::parser parser;
  simdjson::dom::element root;
  simdjson::dom::array sizes;
  Shape shape;
  if (parser.parse(simdjson::padded_string(meta)).get(root) != simdjson::SUCCESS ||
      root["dtype"].get_int64().get(shape.dtype) != simdjson::SUCCESS ||
      root["sizes"].get_array().get(sizes) != simdjson::SUCCESS) {
    return std::nullopt;
  }
  for (auto size : sizes) {
    std::int64_t n = 0;
    if (size["as_int"].get_int64().get(n) == simdjson::SUCCESS) {
      shape.sizes.emplace_back(n);
    } else {
      shape.sizes.emplace_back(std::nullopt);
    }
  }
  return shape;
}

std::optional<std::vector<std::int64_t>> intsOf(const Argument& arg) {
  thread_local simdjson::dom::parser parser;
  simdjson::dom::array items;
  if (parser.parse(simdjson::padded_string(arg.payload.text)).get_array().get(items) !=
      simdjson::SUCCESS) {
    return std::nullopt;
  }
  std::vector<std::int64_t> ints;
  for (auto item : items) {
    std::int64_t n = 0;
    if (item.get_int64().get(n) != simdjson::SUCCESS) return std::nullopt;
    ints.push_back(n);
  }
  return ints;
}

// A per-sample mask of x's rank: [N, 1, ..., 1] with N x's batch size, or all ones.
bool perSample(const std::vector<std::int64_t>& size, const Shape& x) {
  if (size.empty() || size.size() != x.sizes.size()) return false;
  if (!std::all_of(size.begin() + 1, size.end(), [](std::int64_t n) { return n == 1; }))
    return false;
  return size[0] == 1 || (x.sizes[0] && size[0] == *x.sizes[0]);
}

// A node the record can hold: one tensor output named like the node, recordable inputs.
bool recordableNode(const Node& node) {
  if (node.outputs().size() != 1 || node.output() == nullptr) return false;
  if (node.output()->name() != node.name()) return false;
  return std::all_of(node.inputs().begin(), node.inputs().end(),
                     [](const NamedArgument& in) { return drop_path::recordable(in.arg); });
}

// `node`'s output, read once, by `reader`.
bool readOnlyBy(const Node& node, const Node* reader) {
  const Value* out = node.output();
  return reader != nullptr && out != nullptr && out->users().size() == 1 &&
         out->users()[0] == reader;
}

std::optional<Match> next(const Graph& graph, const Node& node, const Pattern& pattern,
                          std::size_t inputs) {
  const Node* n = graph.nextNode(node);
  if (n == nullptr || n->inputs().size() != inputs) return std::nullopt;
  return matchNode(*n, pattern);
}

bool sameKeep(const Match& m, double keep) { return m.arg("keep").asDouble() == keep; }

bool isGraphOutput(const Graph& graph, const Value& value) {
  for (const Argument& out : graph.outputs()) {
    for (const Ref& ref : out.payload.refs) {
      if (ref.value == &value) return true;
    }
  }
  return false;
}

// The drop path starting at `start` (empty, new_empty or rand), if it is one.
std::optional<Chain> matchChain(const Graph& graph, const Node& start) {
  Chain chain;
  std::optional<Match> size = matchNode(start, maskPattern());
  if (size) {
    auto b = next(graph, start, bernoulliPattern(), 2);
    if (!b || b->arg("self").tensor() != start.output() || !readOnlyBy(start, b->root)) return {};
    chain.keep = b->arg("keep").asDouble().value_or(0);
    auto d = next(graph, *b->root, scalePattern(), 2);
    if (!d || d->arg("self").tensor() != b->root->output() || !readOnlyBy(*b->root, d->root) ||
        !sameKeep(*d, chain.keep)) {
      return {};
    }
    auto m = next(graph, *d->root, mulPattern(), 2);
    if (!m || !readOnlyBy(*d->root, m->root)) return {};
    Value* mask = d->root->output();
    Value* self = m->arg("self").tensor();
    Value* other = m->arg("other").tensor();
    if ((self == mask) == (other == mask)) return {};
    chain.x = self == mask ? other : self;
    chain.nodes = {&start, b->root, d->root, m->root};
  } else if ((size = matchNode(start, randPattern()))) {
    auto a = next(graph, start, addPattern(), 2);
    if (!a || a->arg("self").tensor() != start.output() || !readOnlyBy(start, a->root)) return {};
    chain.keep = a->arg("keep").asDouble().value_or(0);
    auto f = next(graph, *a->root, floorPattern(), 1);
    if (!f || f->arg("self").tensor() != a->root->output() || !readOnlyBy(*a->root, f->root)) {
      return {};
    }
    auto s = next(graph, *f->root, divPattern(), 2);
    if (!s || !sameKeep(*s, chain.keep)) return {};
    auto m = next(graph, *s->root, mulPattern(), 2);
    if (!m || !readOnlyBy(*s->root, m->root) || !readOnlyBy(*f->root, m->root)) return {};
    chain.x = s->arg("self").tensor();
    chain.nodes = {&start, a->root, f->root, s->root, m->root};
  } else {
    return {};
  }
  if (!(chain.keep > 0.0 && chain.keep < 1.0) || chain.x == nullptr) return {};
  if (!std::all_of(chain.nodes.begin(), chain.nodes.end(),
                   [](const Node* n) { return recordableNode(*n); })) {
    return {};
  }
  const Value& y = *chain.mul().output();
  if (y.users().empty() || isGraphOutput(graph, y)) return {};
  const auto x_shape = shapeOf(chain.x->tensorMeta());
  const auto sizes = intsOf(size->arg("size"));
  if (!x_shape || !sizes || !perSample(*sizes, *x_shape) || shapeOf(y.tensorMeta()) != x_shape) {
    return {};
  }
  return chain;
}

// The chain whose multiply is `mul`, found again (sites keep only the multiply).
std::optional<Chain> chainOf(const Graph& graph, const Node& mul) {
  for (const NamedArgument& in : mul.inputs()) {
    const Value* v = in.arg.tensor();
    const Node* n = v == nullptr ? nullptr : v->producer();
    // The start is at most three ops above the multiply.
    for (int depth = 0; n != nullptr && depth < 4; ++depth) {
      if (matchNode(*n, maskPattern()) || matchNode(*n, randPattern())) {
        auto chain = matchChain(graph, *n);
        if (chain && &chain->mul() == &mul) return chain;
        break;
      }
      const NamedArgument* self = n->input("self");
      const Value* up = self == nullptr ? nullptr : self->arg.tensor();
      n = up == nullptr ? nullptr : up->producer();
    }
  }
  return std::nullopt;
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

bool holdsRecord(const Node& node) {
  const RawJson custom = node.metadataFieldJson("custom");
  return !custom.empty() && custom.find(kRecordKey) != std::string_view::npos &&
         remembered::get(node, kRecordKey).has_value();
}

// A chain switched alone: nothing it needs after the switch is part of another drop path,
// and its first reader can take its record.
bool standsAlone(const Graph& graph, const Chain& chain,
                 const absl::flat_hash_set<const Node*>& members) {
  const auto member = [&](const Node* n) { return n != nullptr && members.contains(n); };
  const std::vector<Node*> readers = readersOf(*chain.mul().output());
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
  const Node& holder = *readers.front();
  return remembered::usable(holder) && !holdsRecord(holder);
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
  const Node* after = nullptr;   // the node the chain follows, when found
  const Node* before = nullptr;  // the node the chain goes before
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
  if (first != &holder) return std::string("is not on the first reader of its value");
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
    return before != nullptr && before->order() <= holder.order() &&
           std::all_of(outside.begin(), outside.end(), [&](const Value* v) {
             return v->producer() == nullptr || v->producer()->order() < before->order();
           });
  };
  if (record->after) {
    r.after = findNode(graph, holder, *record->after);
    r.before = r.after == nullptr ? nullptr : graph.nextNode(*r.after);
  } else {
    r.before = graph.nodes().empty() ? nullptr : graph.nodes().front().get();
  }
  if (!fits(r.before)) {
    r.after = nullptr;
    r.before = &holder;
  }
  if (!fits(r.before)) return std::string("reads a value defined after its first reader");
  r.record = std::move(*record);
  return r;
}

// p as the model wrote it: 1 - keep to 12 digits (1 - 0.8 is 0.19999999999999996).
double dropP(double keep) {
  char text[32];
  std::snprintf(text, sizeof text, "%.12g", 1.0 - keep);
  return std::strtod(text, nullptr);
}

std::string pText(double keep) {
  char text[32];
  std::snprintf(text, sizeof text, "drop_path p=%.12g", 1.0 - keep);
  return text;
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
    for (const Pattern* start : {&maskPattern(), &randPattern()}) {
      for (const std::string& target : start->targets()) {
        for (const Node* node : graph.nodesWithTarget(target)) {
          if (auto chain = matchChain(graph, *node)) chains.push_back(std::move(*chain));
        }
      }
    }
    absl::flat_hash_set<const Node*> members;
    for (const Chain& chain : chains) members.insert(chain.nodes.begin(), chain.nodes.end());
    for (const Chain& chain : chains) {
      if (!standsAlone(graph, chain, members)) continue;
      sites.push_back({.node = &chain.mul(), .state = Site::State::kTrain, .p = dropP(chain.keep)});
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
    out.push_back(site.node);
    if (site.state != Site::State::kTrain) return;
    // The mask ops above the multiply (found by producers: no graph here).
    std::vector<const Node*> stack = {site.node};
    while (!stack.empty()) {
      const Node* n = stack.back();
      stack.pop_back();
      for (const NamedArgument& in : n->inputs()) {
        const Value* v = in.arg.tensor();
        const Node* p = v == nullptr ? nullptr : v->producer();
        if (p == nullptr || p->output() == nullptr || p->output()->users().size() != 1) continue;
        static const std::vector<const Pattern*> kChainOps = {
            &maskPattern(), &bernoulliPattern(), &scalePattern(), &randPattern(),
            &addPattern(),  &floorPattern(),     &divPattern()};
        if (std::any_of(kChainOps.begin(), kChainOps.end(),
                        [&](const Pattern* op) { return matchNode(*p, *op).has_value(); })) {
          out.push_back(p);
          stack.push_back(p);
        }
      }
    }
  }

 private:
  static void toEval(Rewriter& rewriter, Site& site, SwitchReport& report) {
    Graph& graph = rewriter.graph();
    const std::optional<Chain> chain = chainOf(graph, *site.node);
    if (!chain) return;  // collected from this graph: cannot happen
    Value& y = *chain->mul().output();
    Node& holder = *readersOf(y).front();
    const std::string record = drop_path::writeRecord(
        chain->keep, *chain->x, graph.previousNode(*chain->nodes.front()), chain->nodes, usesOf(y));
    const Change done =
        change(rewriter, chain->mul(), holder, rewriter.keep(pText(chain->keep)), kRemoved);
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
    for (const Restore::Use& use : r.uses) rewriter.replaceUse(*use.reader, use.input, use.ref, y);
    remembered::set(rewriter, rewriter.mutableNode(*site.node), kRecordKey, std::nullopt);
    const Node& mul = *y.producer();
    site.node = &mul;
    site.state = Site::State::kTrain;
    report.changes.push_back(
        change(rewriter, mul, mul, kRemoved, rewriter.keep(pText(r.record.keep))));
  }

  // The chain's targets are the patterns' own text: no new text per restore.
  static std::string_view internTarget(Rewriter& rewriter, const std::string& target) {
    for (const Pattern* p : {&maskPattern(), &bernoulliPattern(), &scalePattern(), &randPattern(),
                             &addPattern(), &floorPattern(), &divPattern(), &mulPattern()}) {
      for (const std::string& t : p->targets()) {
        if (t == target) return t;
      }
    }
    return rewriter.keep(target);
  }
};

}  // namespace

const ModePass& dropPathPass() {
  static const DropPathPass pass;
  return pass;
}

}  // namespace exmode::passes
