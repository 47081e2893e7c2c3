// Declarative single-root op patterns and the matcher.
//
// A pattern names the op targets it matches (anchor), constraints on named arguments, and
// captures. An argument may be required to be produced by a node matching another pattern,
// so chains like getitem(native_dropout(x, p, True), 0) are one pattern. Matching is pure:
// it never changes the graph; rewriting is a second phase. Candidates come from the
// graph's by-target index, so matching costs time linear in the matching nodes.
#pragma once

#include <absl/container/inlined_vector.h>

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "exmode/program.h"

namespace exmode::rewrite {

class Pattern;

// A constraint on one named argument.
struct ArgConstraint {
  enum class Kind { kAny, kTensor, kNone, kNotNone, kBool, kFloat, kInt, kProducedBy, kPredicate };
  Kind kind = Kind::kAny;
  std::optional<bool> bool_value;                  // kBool: required value, if any
  std::optional<std::int64_t> int_value;           // kInt: required value, if any
  std::shared_ptr<const Pattern> producer;         // kProducedBy
  std::function<bool(const Argument&)> predicate;  // kPredicate
};

ArgConstraint anyArg();
ArgConstraint tensor();
ArgConstraint none();     // as_none, or omitted (schema default None)
ArgConstraint notNone();  // present and not as_none
ArgConstraint boolArg(std::optional<bool> value = std::nullopt);
ArgConstraint floatArg();
ArgConstraint intArg(std::optional<std::int64_t> value = std::nullopt);
ArgConstraint producedBy(const Pattern& pattern);
ArgConstraint where(std::function<bool(const Argument&)> predicate);

class Pattern {
 public:
  // `targets` in short form ("aten.dropout.default"); "torch.ops." is implied.
  explicit Pattern(const std::vector<std::string>& targets);
  // Requires argument `name` to satisfy `constraint`; captures it as `capture` if given.
  Pattern& arg(std::string name, ArgConstraint constraint, std::string capture = {});
  // Captures the node matched by this pattern under `capture`.
  Pattern& as(std::string capture);

  const std::vector<std::string>& targets() const { return targets_; }

 private:
  friend class Matcher;
  struct ArgRule {
    std::string name;
    ArgConstraint constraint;
    std::string capture;
  };
  std::vector<std::string> targets_;  // full target strings
  std::vector<ArgRule> rules_;
  std::string node_capture_;
};

// Captures are few per pattern: kept inline, named by views of the pattern's capture
// names, so a Match is valid while its Pattern lives.
struct Match {
  Node* root = nullptr;
  absl::InlinedVector<std::pair<std::string_view, const NamedArgument*>, 4> args;
  absl::InlinedVector<std::pair<std::string_view, Node*>, 2> nodes;
  const Argument& arg(std::string_view capture) const;  // the capture must exist
  // The captured argument, or null when the node omits it.
  const Argument* tryArg(std::string_view capture) const;
  // The node captured as `capture`, or null.
  Node* node(std::string_view capture) const;
};

// Finds every match of `pattern` in graph order. Never mutates the graph.
std::vector<Match> matchAll(const Graph& graph, const Pattern& pattern);
// Matches `pattern` against one node.
std::optional<Match> matchNode(const Node& node, const Pattern& pattern);

}  // namespace exmode::rewrite
