// User rules: what a user knows about a program that neither the built-in passes nor the
// graph say, read from a text file (`--rules FILE`; docs/RULES.md has the format).
//
//   # a custom op whose `train` argument carries the mode, switched only where p != 0
//   op mylib.noisy.default train train=True eval=False if p!=0.0
//   # the train-mode p of attention dropout an eval export did not record
//   attention_dropout encoder.layer.*.attention p=0.1
//
// An `op` rule makes every node of its target a site, switched like a built-in one (mode
// detection, inspect, the switch and its report). An `attention_dropout` rule gives the
// train-mode dropout p of the attention sites under matching module paths that the program
// does not hold (an eval export's sdpa, Hugging Face eager attention's dropout(p=0.0)), so
// that a switch to train writes what torch's train export writes instead of warning.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "exmode/program.h"

namespace exmode {

class ModePass;

// A literal of a rule: bool, int, float, string, or none (the argument left out, so that it
// takes its schema default; torch leaves trailing defaults out).
struct RuleLiteral {
  enum class Kind { kNone, kBool, kInt, kFloat, kString };
  Kind kind = Kind::kNone;
  bool boolean = false;
  std::int64_t integer = 0;
  double number = 0.0;
  std::string string;
  std::string text;  // as the rule file writes it, for reports

  // Whether a node's argument (null: left out) has this value. Ints and floats compare as
  // numbers; a bool only equals a bool, a string a string.
  bool matches(const Argument* arg) const;
};

// `<argument>==<literal>` or `<argument>!=<literal>`.
struct RuleCondition {
  std::string argument;
  bool equal = true;
  RuleLiteral value;
};

// `op <target> <argument> train=<literal> eval=<literal> [if <condition>...]`
struct OpRule {
  std::string target;    // full form: "torch.ops.mylib.noisy.default"
  std::string argument;  // the one carrying the mode, by schema name
  RuleLiteral train;
  RuleLiteral eval;
  std::vector<RuleCondition> conditions;  // all must hold for a node to be a site
  std::string where;                      // "FILE:LINE"
};

// `attention_dropout <module path pattern> p=<float>`. In the pattern `*` matches any run
// of characters within one dotted name, `**` any run at all.
struct AttentionDropoutRule {
  std::string pattern;
  double p = 0.0;
  std::string where;
};

class UserRules {
 public:
  UserRules();
  ~UserRules();
  UserRules(const UserRules&);
  UserRules& operator=(const UserRules&);

  // Adds the rules of `text`; throws Error(kUsage) as "<source>:<line>: <what is wrong>".
  void add(std::string_view text, std::string_view source);
  // Adds the rules of a file; throws Error(kUsage) naming it when it cannot be read (a rule
  // file is part of the command line), else as add().
  void addFile(const std::filesystem::path& path);
  // Adds another set's rules (a rule for a target or pattern already here is an error).
  void add(const UserRules& other);

  bool empty() const { return op_rules_.empty() && attention_rules_.empty(); }
  const std::vector<OpRule>& opRules() const { return op_rules_; }
  const std::vector<AttentionDropoutRule>& attentionDropoutRules() const {
    return attention_rules_;
  }
  // One pass per op rule, in file order; they run after the built-in passes.
  const std::vector<const ModePass*>& passes() const { return pass_views_; }

  // The attention dropout rule for a node, by its nn_module_stack: the one whose pattern
  // matches the path of one of its modules; null when none does. Throws Error(kUsage) when
  // rules with different p match the same node.
  const AttentionDropoutRule* attentionRuleFor(const Node& node) const;

  // The rules, one canonical line each (for messages and comparing rule sets).
  std::string text() const;

 private:
  void addOpRule(OpRule rule);
  std::vector<OpRule> op_rules_;
  std::vector<AttentionDropoutRule> attention_rules_;
  std::vector<std::shared_ptr<const ModePass>> passes_;  // immutable: copies share them
  std::vector<const ModePass*> pass_views_;
};

}  // namespace exmode
