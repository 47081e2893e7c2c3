// The pattern matcher: candidates from the graph's by-target index, then each rule
// checked against the named arguments. Pure: it reads the graph and returns matches.
#include "exmode/pattern.h"

#include <stdexcept>

namespace exmode::rewrite {

ArgConstraint anyArg() { return {}; }
ArgConstraint tensor() { return {.kind = ArgConstraint::Kind::kTensor}; }
ArgConstraint none() { return {.kind = ArgConstraint::Kind::kNone}; }
ArgConstraint notNone() { return {.kind = ArgConstraint::Kind::kNotNone}; }
ArgConstraint boolArg(std::optional<bool> value) {
  return {.kind = ArgConstraint::Kind::kBool, .bool_value = value};
}
ArgConstraint floatArg() { return {.kind = ArgConstraint::Kind::kFloat}; }
ArgConstraint intArg(std::optional<std::int64_t> value) {
  return {.kind = ArgConstraint::Kind::kInt, .int_value = value};
}
ArgConstraint producedBy(const Pattern& pattern) {
  return {.kind = ArgConstraint::Kind::kProducedBy, .producer = std::make_shared<Pattern>(pattern)};
}
ArgConstraint where(std::function<bool(const Argument&)> predicate) {
  return {.kind = ArgConstraint::Kind::kPredicate, .predicate = std::move(predicate)};
}

Pattern::Pattern(const std::vector<std::string>& targets) {
  for (const std::string& t : targets) targets_.push_back(std::string(kOpTargetPrefix) + t);
}

Pattern& Pattern::arg(std::string name, ArgConstraint constraint, std::string capture) {
  rules_.push_back({std::move(name), std::move(constraint), std::move(capture)});
  return *this;
}

Pattern& Pattern::as(std::string capture) {
  node_capture_ = std::move(capture);
  return *this;
}

const Argument* Match::tryArg(std::string_view capture) const {
  for (const auto& [name, in] : args) {
    if (name == capture) return &in->arg;
  }
  return nullptr;
}

const Argument& Match::arg(std::string_view capture) const {
  const Argument* found = tryArg(capture);
  if (found == nullptr) {
    throw std::logic_error("pattern has no capture '" + std::string(capture) + "'");
  }
  return *found;
}

Node* Match::node(std::string_view capture) const {
  for (const auto& [name, n] : nodes) {
    if (name == capture) return n;
  }
  return nullptr;
}

class Matcher {
 public:
  static bool matches(const Node& node, const Pattern& pattern, Match& match) {
    return hasTarget(node, pattern) && matchesArgs(node, pattern, match);
  }

  // For candidates taken from the by-target index, whose target is known.
  static bool matchesArgs(const Node& node, const Pattern& pattern, Match& match) {
    for (const Pattern::ArgRule& rule : pattern.rules_) {
      const NamedArgument* in = node.input(rule.name);
      if (!satisfies(in, rule.constraint, match)) return false;
      if (!rule.capture.empty() && in != nullptr) match.args.emplace_back(rule.capture, in);
    }
    if (!pattern.node_capture_.empty())
      match.nodes.emplace_back(pattern.node_capture_, const_cast<Node*>(&node));
    return true;
  }

  static bool hasTarget(const Node& node, const Pattern& pattern) {
    for (const std::string& t : pattern.targets_) {
      if (node.target() == t) return true;
    }
    return false;
  }

 private:
  static bool satisfies(const NamedArgument* in, const ArgConstraint& c, Match& match) {
    using Kind = ArgConstraint::Kind;
    if (c.kind == Kind::kAny) return true;
    if (c.kind == Kind::kNone) return in == nullptr || in->arg.isNone();
    if (in == nullptr) return false;
    const Argument& arg = in->arg;
    switch (c.kind) {
      case Kind::kTensor:
        return arg.tensor() != nullptr;
      case Kind::kNotNone:
        return !arg.isNone();
      case Kind::kBool: {
        auto b = arg.asBool();
        return b.has_value() && (!c.bool_value || *b == *c.bool_value);
      }
      case Kind::kFloat:
        return arg.asDouble().has_value();
      case Kind::kInt: {
        auto i = arg.asInt();
        return i.has_value() && (!c.int_value || *i == *c.int_value);
      }
      case Kind::kProducedBy: {
        const Value* v = arg.tensor();
        return v != nullptr && v->producer() != nullptr &&
               matches(*v->producer(), *c.producer, match);
      }
      case Kind::kPredicate:
        return c.predicate(arg);
      default:
        return true;
    }
  }
};

std::optional<Match> matchNode(const Node& node, const Pattern& pattern) {
  Match match;
  match.root = const_cast<Node*>(&node);
  if (!Matcher::matches(node, pattern, match)) return std::nullopt;
  return match;
}

std::vector<Match> matchAll(const Graph& graph, const Pattern& pattern) {
  std::vector<Match> matches;
  std::size_t targets_found = 0;
  for (const std::string& target : pattern.targets()) {
    const std::vector<Node*>& candidates = graph.nodesWithTarget(target);
    if (candidates.empty()) continue;
    ++targets_found;
    matches.reserve(matches.size() + candidates.size());
    for (Node* node : candidates) {
      Match& m = matches.emplace_back();
      m.root = node;
      if (!Matcher::matchesArgs(*node, pattern, m)) matches.pop_back();
    }
  }
  // Nodes of several targets: restore graph order.
  if (targets_found > 1) {
    std::sort(matches.begin(), matches.end(),
              [](const Match& a, const Match& b) { return a.root->order() < b.root->order(); });
  }
  return matches;
}

}  // namespace exmode::rewrite
