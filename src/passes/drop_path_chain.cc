// Matching the chains of drop_path_chain.h.
#include "passes/drop_path_chain.h"

#include <absl/container/flat_hash_set.h>
#include <simdjson.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "exmode/pattern.h"
#include "passes/drop_path_record.h"

namespace exmode::passes::drop_path {

namespace {

using namespace rewrite;

bool isInts(const Argument& arg) { return arg.kind == "as_ints"; }
bool isNumber(const Argument& arg) { return arg.asDouble().has_value(); }

// Chain starts.
const Pattern& emptyPattern() {  // torchvision; core ATen's new_empty and feature masks
  static const Pattern p = Pattern({"aten.empty.memory_format"}).arg("size", where(isInts), "size");
  return p;
}
const Pattern& newEmptyPattern() {  // timm; feature dropout
  static const Pattern p = Pattern({"aten.new_empty.default"})
                               .arg("self", tensor(), "like")
                               .arg("size", where(isInts), "size");
  return p;
}
const Pattern& emptyLikePattern() {  // dropout, alpha dropout
  static const Pattern p = Pattern({"aten.empty_like.default"}).arg("self", tensor(), "like");
  return p;
}
const Pattern& emptyPermutedPattern() {  // core ATen's empty_like
  static const Pattern p = Pattern({"aten.empty_permuted.default"})
                               .arg("size", where(isInts), "size")
                               .arg("physical_layout", where(isInts), "layout");
  return p;
}
const Pattern& randPattern() {  // Hugging Face
  static const Pattern p = Pattern({"aten.rand.default"}).arg("size", where(isInts), "size");
  return p;
}

// The ops after the start.
const Pattern& bernoulliInPlacePattern() {
  static const Pattern p =
      Pattern({"aten.bernoulli_.float"}).arg("self", tensor(), "self").arg("p", floatArg(), "keep");
  return p;
}
const Pattern& bernoulliPattern() {
  static const Pattern p =
      Pattern({"aten.bernoulli.p"}).arg("self", tensor(), "self").arg("p", floatArg(), "keep");
  return p;
}
const Pattern& divInPlacePattern() {
  static const Pattern p = Pattern({"aten.div_.Tensor", "aten.div_.Scalar"})
                               .arg("self", tensor(), "self")
                               .arg("other", floatArg(), "k");
  return p;
}
const Pattern& divPattern() {
  static const Pattern p = Pattern({"aten.div.Tensor", "aten.div.Scalar"})
                               .arg("self", tensor(), "self")
                               .arg("other", floatArg(), "k");
  return p;
}
const Pattern& mulPattern() {
  static const Pattern p =
      Pattern({"aten.mul.Tensor"}).arg("self", tensor(), "self").arg("other", tensor(), "other");
  return p;
}
const Pattern& addFloatPattern() {  // Hugging Face: rand + keep
  static const Pattern p =
      Pattern({"aten.add.Tensor"}).arg("self", tensor(), "self").arg("other", floatArg(), "k");
  return p;
}
const Pattern& floorPattern() {
  // transformers 4.x floors in place, 5.x and the functional IR not (docs/EXPORT_IR.md).
  static const Pattern p =
      Pattern({"aten.floor_.default", "aten.floor.default"}).arg("self", tensor(), "self");
  return p;
}
const Pattern& addScalarPattern() {
  static const Pattern p =
      Pattern({"aten.add.Scalar"}).arg("self", tensor(), "self").arg("other", where(isNumber), "k");
  return p;
}
const Pattern& mulScalarPattern() {
  static const Pattern p =
      Pattern({"aten.mul.Scalar"}).arg("self", tensor(), "self").arg("other", where(isNumber), "k");
  return p;
}
const Pattern& addPattern() {
  static const Pattern p =
      Pattern({"aten.add.Tensor"}).arg("self", tensor(), "self").arg("other", tensor(), "other");
  return p;
}

const std::vector<const Pattern*>& startPatterns() {
  static const std::vector<const Pattern*> kStarts = {&emptyPattern(), &newEmptyPattern(),
                                                      &emptyLikePattern(), &emptyPermutedPattern(),
                                                      &randPattern()};
  return kStarts;
}

const std::vector<const Pattern*>& allPatterns() {
  static const std::vector<const Pattern*> kAll = {
      &emptyPattern(),         &newEmptyPattern(),   &emptyLikePattern(),
      &emptyPermutedPattern(), &randPattern(),       &bernoulliInPlacePattern(),
      &bernoulliPattern(),     &divInPlacePattern(), &divPattern(),
      &mulPattern(),           &addFloatPattern(),   &floorPattern(),
      &addScalarPattern(),     &mulScalarPattern(),  &addPattern()};
  return kAll;
}

bool isStart(const Node& node) {
  return std::any_of(startPatterns().begin(), startPatterns().end(),
                     [&](const Pattern* p) { return matchNode(node, *p).has_value(); });
}

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

bool onesFrom(const std::vector<std::int64_t>& size, std::size_t first) {
  return std::all_of(size.begin() + static_cast<std::ptrdiff_t>(std::min(first, size.size())),
                     size.end(), [](std::int64_t n) { return n == 1; });
}

bool sizeIs(const Shape& x, std::size_t i, std::int64_t n) {
  return x.sizes[i] && *x.sizes[i] == n;
}

// Mask shapes, of x's rank: per sample ([N, 1, ..., 1], or all ones: torchvision's "batch"),
// per channel ([N, C, 1, ..., 1]), or x's own.
bool perSample(const std::vector<std::int64_t>& size, const Shape& x) {
  if (size.empty() || size.size() != x.sizes.size() || !onesFrom(size, 1)) return false;
  return size[0] == 1 || sizeIs(x, 0, size[0]);
}
bool perChannel(const std::vector<std::int64_t>& size, const Shape& x) {
  return size.size() >= 3 && size.size() == x.sizes.size() && onesFrom(size, 2) &&
         sizeIs(x, 0, size[0]) && sizeIs(x, 1, size[1]);
}
bool whole(const std::vector<std::int64_t>& size, const Shape& x) {
  if (size.size() != x.sizes.size()) return false;
  for (std::size_t i = 0; i < size.size(); ++i) {
    if (!sizeIs(x, i, size[i])) return false;
  }
  return true;
}

bool isGraphOutput(const Graph& graph, const Value& value) {
  for (const Argument& out : graph.outputs()) {
    for (const Ref& ref : out.payload.refs) {
      if (ref.value == &value) return true;
    }
  }
  return false;
}

bool near(double a, double b) { return std::abs(a - b) <= 1e-12 * std::abs(b); }

// Walks the chain node after node: each step is the next node of the graph, matching a
// pattern with exactly `inputs` inputs.
class Walk {
 public:
  Walk(const Graph& graph, const Node& start) : graph_(graph) { nodes_.push_back(&start); }
  std::optional<Match> next(const Pattern& pattern, std::size_t inputs) {
    const Node* n = graph_.nextNode(*nodes_.back());
    if (n == nullptr || n->inputs().size() != inputs) return std::nullopt;
    auto m = matchNode(*n, pattern);
    if (m) nodes_.push_back(n);
    return m;
  }
  // The value of the node `back` steps before the last (0: the last).
  const Value* value(std::size_t back) const { return nodes_[nodes_.size() - 1 - back]->output(); }
  std::vector<const Node*>& nodes() { return nodes_; }

 private:
  const Graph& graph_;
  std::vector<const Node*> nodes_;
};

// The one input of a two-tensor op that is not `known`; null unless exactly one is.
Value* other(const Match& m, const Value* known) {
  Value* self = m.arg("self").tensor();
  Value* rhs = m.arg("other").tensor();
  if ((self == known) == (rhs == known)) return nullptr;
  return self == known ? rhs : self;
}

double keepOf(const Match& m, std::string_view capture) {
  return m.arg(capture).asDouble().value_or(0);
}

// Hugging Face: rand, add, floor, div(x), mul.
std::optional<Chain> matchRand(const Graph& graph, const Node& start) {
  Walk w(graph, start);
  Chain chain;
  auto a = w.next(addFloatPattern(), 2);
  if (!a || a->arg("self").tensor() != w.value(1)) return {};
  chain.keep = keepOf(*a, "k");
  auto f = w.next(floorPattern(), 1);
  if (!f || f->arg("self").tensor() != w.value(1)) return {};
  const Value* floor = w.value(0);
  auto s = w.next(divPattern(), 2);
  if (!s || keepOf(*s, "k") != chain.keep) return {};
  chain.x = s->arg("self").tensor();
  auto m = w.next(mulPattern(), 2);
  if (!m || other(*m, floor) != w.value(1)) return {};
  chain.nodes = std::move(w.nodes());
  return chain;
}

// The mask chains: start, bernoulli, then div and mul, or alpha dropout's arithmetic.
std::optional<Chain> matchMask(const Graph& graph, const Node& start, Match& size_match) {
  Walk w(graph, start);
  Chain chain;
  const bool in_place = graph.nextNode(start) != nullptr &&
                        matchNode(*graph.nextNode(start), bernoulliInPlacePattern()).has_value();
  auto b = w.next(in_place ? bernoulliInPlacePattern() : bernoulliPattern(), 2);
  if (!b || b->arg("self").tensor() != start.output()) return {};
  chain.keep = keepOf(*b, "keep");
  const Value* mask = w.value(0);
  bool alpha = false;
  if (auto d = w.next(in_place ? divInPlacePattern() : divPattern(), 2)) {
    if (d->arg("self").tensor() != mask || keepOf(*d, "k") != chain.keep) return {};
    auto m = w.next(mulPattern(), 2);
    if (!m) return {};
    chain.x = other(*m, w.value(1));
  } else if (!in_place) {
    // alpha dropout: a = 1 / sqrt((alpha^2 p + 1) keep), b = (mask - 1) alpha a + alpha a p.
    constexpr double kAlpha = 1.7580993408473766;
    const double p = dropP(chain.keep);
    const double a = 1.0 / std::sqrt((kAlpha * kAlpha * p + 1) * (1 - p));
    auto a0 = w.next(addScalarPattern(), 2);
    if (!a0 || a0->arg("self").tensor() != mask || keepOf(*a0, "k") != -1.0) return {};
    auto a1 = w.next(mulScalarPattern(), 2);
    if (!a1 || a1->arg("self").tensor() != w.value(1) || !near(keepOf(*a1, "k"), kAlpha * a))
      return {};
    auto a2 = w.next(addScalarPattern(), 2);
    if (!a2 || a2->arg("self").tensor() != w.value(1) || !near(keepOf(*a2, "k"), kAlpha * a * p))
      return {};
    const Value* shift = w.value(0);
    auto s = w.next(mulScalarPattern(), 2);
    if (!s || s->arg("self").tensor() != mask || !near(keepOf(*s, "k"), a)) return {};
    auto t = w.next(mulPattern(), 2);
    if (!t) return {};
    chain.x = other(*t, w.value(1));
    auto y = w.next(addPattern(), 2);
    if (!y || other(*y, shift) != w.value(1)) return {};
    alpha = true;
  } else {
    return {};
  }
  if (chain.x == nullptr) return {};
  // The mask's shape decides the form.
  const auto x = shapeOf(chain.x->tensorMeta());
  if (!x) return {};
  std::optional<std::vector<std::int64_t>> size;
  if (const Argument* s = size_match.tryArg("size")) size = intsOf(*s);
  if (const Argument* layout = size_match.tryArg("layout")) {
    const auto order = intsOf(*layout);
    if (!order || !size || order->size() != size->size()) return {};
    for (std::size_t i = 0; i < order->size(); ++i) {
      if ((*order)[i] != static_cast<std::int64_t>(i)) return {};  // not a plain layout
    }
  }
  if (start.target() == "torch.ops.aten.empty_like.default") {
    // Its size is its input's: x itself.
    if (size_match.arg("like").tensor() != chain.x) return {};
    if (!std::all_of(x->sizes.begin(), x->sizes.end(), [](const auto& n) { return n.has_value(); }))
      return {};
    size.emplace();
    for (const auto& n : x->sizes) size->push_back(*n);
  }
  if (!size) return {};
  if (alpha) {
    if (perChannel(*size, *x)) {
      chain.form = Form::kFeatureAlphaDropout;
    } else if (whole(*size, *x)) {
      chain.form = Form::kAlphaDropout;
    } else {
      return {};
    }
  } else if (perSample(*size, *x)) {
    chain.form = Form::kDropPath;
  } else if (in_place) {
    return {};  // the default IR's dropouts are ops of their own
  } else if (perChannel(*size, *x)) {
    chain.form = Form::kFeatureDropout;
  } else if (whole(*size, *x)) {
    chain.form = Form::kDropout;
  } else {
    return {};
  }
  chain.nodes = std::move(w.nodes());
  return chain;
}

bool readOnlyLaterInChain(const Chain& chain, std::size_t i) {
  const Node& node = *chain.nodes[i];
  return std::all_of(node.output()->users().begin(), node.output()->users().end(),
                     [&](const Node* user) {
                       return std::find(chain.nodes.begin() + static_cast<std::ptrdiff_t>(i) + 1,
                                        chain.nodes.end(), user) != chain.nodes.end();
                     });
}

}  // namespace

std::string_view formName(Form form) {
  switch (form) {
    case Form::kDropPath:
      return "drop_path";
    case Form::kDropout:
      return "dropout";
    case Form::kFeatureDropout:
      return "feature_dropout";
    case Form::kAlphaDropout:
      return "alpha_dropout";
    case Form::kFeatureAlphaDropout:
      return "feature_alpha_dropout";
  }
  return "drop_path";
}

std::optional<Form> formNamed(std::string_view name) {
  for (Form f : {Form::kDropPath, Form::kDropout, Form::kFeatureDropout, Form::kAlphaDropout,
                 Form::kFeatureAlphaDropout}) {
    if (formName(f) == name) return f;
  }
  return std::nullopt;
}

const std::vector<std::string>& startTargets() {
  static const std::vector<std::string> targets = [] {
    std::vector<std::string> out;
    for (const Pattern* p : startPatterns())
      out.insert(out.end(), p->targets().begin(), p->targets().end());
    return out;
  }();
  return targets;
}

std::optional<Chain> matchChain(const Graph& graph, const Node& start) {
  std::optional<Chain> chain;
  if (matchNode(start, randPattern())) {
    chain = matchRand(graph, start);
  } else {
    for (const Pattern* p : startPatterns()) {
      if (auto m = matchNode(start, *p)) {
        chain = matchMask(graph, start, *m);
        break;
      }
    }
  }
  if (!chain || !(chain->keep > 0.0 && chain->keep < 1.0) || chain->x == nullptr) return {};
  for (std::size_t i = 0; i < chain->nodes.size(); ++i) {
    if (!recordableNode(*chain->nodes[i])) return {};
    if (chain->nodes[i]->output() == chain->x) return {};
    if (i + 1 < chain->nodes.size() && !readOnlyLaterInChain(*chain, i)) return {};
  }
  const Value& y = *chain->last().output();
  if (isGraphOutput(graph, y)) {
    // Eval's outputs read x: only when nothing after the chain reads x, nor is it an output.
    if (isGraphOutput(graph, *chain->x)) return {};
    for (const Node* user : chain->x->users()) {
      if (user->order() > chain->last().order()) return {};
    }
  } else if (y.users().empty()) {
    return {};
  }
  if (shapeOf(y.tensorMeta()) != shapeOf(chain->x->tensorMeta())) return {};
  return chain;
}

std::optional<Chain> chainOf(const Graph& graph, const Node& last) {
  // The start is at most seven ops above the last node (alpha dropout).
  std::vector<const Node*> frontier = {&last};
  absl::flat_hash_set<const Node*> seen = {&last};
  for (int depth = 0; depth < 8 && !frontier.empty(); ++depth) {
    std::vector<const Node*> up;
    for (const Node* n : frontier) {
      for (const NamedArgument& in : n->inputs()) {
        const Value* v = in.arg.tensor();
        const Node* p = v == nullptr ? nullptr : v->producer();
        if (p == nullptr || !seen.insert(p).second) continue;
        if (isStart(*p)) {
          if (auto chain = matchChain(graph, *p); chain && &chain->last() == &last) return chain;
        }
        up.push_back(p);
      }
    }
    frontier = std::move(up);
  }
  return std::nullopt;
}

void chainMembers(const Node& last, std::vector<const Node*>& out) {
  const auto chainOp = [](const Node& n) {
    return std::any_of(allPatterns().begin(), allPatterns().end(),
                       [&](const Pattern* p) { return matchNode(n, *p).has_value(); });
  };
  // Chain ops above `last`, at most eight steps up.
  std::vector<const Node*> found = {&last};
  for (std::size_t i = 0, depth_end = 1, depth = 0; i < found.size() && depth < 8; ++i) {
    for (const NamedArgument& in : found[i]->inputs()) {
      const Value* v = in.arg.tensor();
      const Node* p = v == nullptr ? nullptr : v->producer();
      if (p != nullptr && chainOp(*p) && std::find(found.begin(), found.end(), p) == found.end())
        found.push_back(p);
    }
    if (i + 1 == depth_end) {
      depth_end = found.size();
      ++depth;
    }
  }
  std::sort(found.begin(), found.end(),
            [](const Node* a, const Node* b) { return a->order() < b->order(); });
  // Those that descend from the chain's start: the latest start above (the chain's nodes
  // are consecutive, so a start above it that is not its own comes before its own).
  auto start =
      std::find_if(found.rbegin(), found.rend(), [](const Node* n) { return isStart(*n); });
  absl::flat_hash_set<const Node*> members;
  for (auto it = start == found.rend() ? found.end() : std::prev(start.base()); it != found.end();
       ++it) {
    const Node* n = *it;
    bool member = it == std::prev(start.base());
    for (const NamedArgument& in : n->inputs()) {
      const Value* v = in.arg.tensor();
      member = member || (v != nullptr && members.contains(v->producer()));
    }
    if (member) members.insert(n);
  }
  for (const Node* n : found) {
    if (n == &last || !members.contains(n)) continue;
    const auto users = n->output() == nullptr ? std::span<Node* const>{} : n->output()->users();
    if (std::all_of(users.begin(), users.end(),
                    [&](const Node* u) { return members.contains(u) || u == &last; })) {
      out.push_back(n);
    }
  }
  out.push_back(&last);
}

bool recordableNode(const Node& node) {
  if (node.outputs().size() != 1 || node.output() == nullptr) return false;
  if (node.output()->name() != node.name()) return false;
  return std::all_of(node.inputs().begin(), node.inputs().end(),
                     [](const NamedArgument& in) { return recordable(in.arg); });
}

const std::string* knownTarget(std::string_view target) {
  for (const Pattern* p : allPatterns()) {
    for (const std::string& t : p->targets()) {
      if (t == target) return &t;
    }
  }
  return nullptr;
}

double dropP(double keep) {
  char text[32];
  std::snprintf(text, sizeof text, "%.12g", 1.0 - keep);
  return std::strtod(text, nullptr);
}

}  // namespace exmode::passes::drop_path
