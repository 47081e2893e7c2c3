// The pass an `op` rule makes (user_rules.h, docs/RULES.md): every node of the rule's target
// whose conditions hold is a site, in train mode when its mode argument has the rule's train
// value and in eval mode when it has the eval value.
//
// Before: <target>(..., <argument>=<eval value>, ...)   After: <argument>=<train value>
// A `none` value is the argument left out: switching to it removes the argument, switching
// from it inserts the argument as a keyword (torch.export.load places it by its name).
// Conditions: the mode argument has one of the two values (anything else is refused, as a
// built-in pass refuses a flag that is not a literal); nothing else is touched.
#include "exmode/error.h"
#include "exmode/passes.h"
#include "exmode/pattern.h"
#include "passes/change.h"
#include "passes/user_rules_internal.h"
#include "program/json_text.h"

namespace exmode::passes {

namespace {

class OpRulePass final : public ModePass {
 public:
  explicit OpRulePass(OpRule rule)
      : rule_(std::move(rule)),
        pattern_(std::vector<std::string>{std::string(shortTarget(rule_.target))}),
        train_text_(rule_.argument + "=" + rule_.train.text),
        eval_text_(rule_.argument + "=" + rule_.eval.text) {}

  std::string_view name() const override { return "user_rule"; }
  const std::vector<std::string>& targets() const override { return pattern_.targets(); }

  void collectSites(const Graph& graph, std::vector<Site>& sites,
                    SiteDetail /*detail*/) const override {
    for (const rewrite::Match& m : rewrite::matchAll(graph, pattern_)) {
      const Node& node = *m.root;
      if (!conditionsHold(node)) continue;
      const NamedArgument* in = node.input(rule_.argument);
      Site site{.node = &node};
      if (rule_.train.matches(in ? &in->arg : nullptr)) {
        site.state = Site::State::kTrain;
      } else if (rule_.eval.matches(in ? &in->arg : nullptr)) {
        site.state = Site::State::kEval;
      } else if (in == nullptr) {
        throw Error(ErrorKind::kBadProgram, where(node) + " has no '" + rule_.argument +
                                                "' argument (rule at " + rule_.where + ")");
      } else {
        std::string value = in->arg.payload.text.empty() ? std::string(in->arg.kind)
                                                         : std::string(in->arg.payload.text);
        throw Error(ErrorKind::kUnsupported,
                    where(node) + ": '" + rule_.argument + "' is " + value +
                        ", neither the train value " + rule_.train.text + " nor the eval value " +
                        rule_.eval.text + " of the rule at " + rule_.where);
      }
      if (in != nullptr) site.flag_input = static_cast<std::size_t>(in - node.inputs().data());
      sites.push_back(site);
    }
  }

  void apply(rewrite::Rewriter& rewriter, Mode target, std::span<Site> sites,
             SwitchReport& report) const override {
    const bool train = target == Mode::kTrain;
    const Site::State wanted = siteState(target);
    const RuleLiteral& value = train ? rule_.train : rule_.eval;
    for (Site& site : sites) {
      if (site.state == wanted) continue;
      Node& node = rewriter.mutableNode(*site.node);
      if (value.kind == RuleLiteral::Kind::kNone) {
        rewriter.removeInput(node, rule_.argument);
      } else if (node.input(rule_.argument) != nullptr) {
        rewriter.setInput(node, rule_.argument, argument(rewriter, value), site.flag_input);
      } else {
        rewriter.insertInput(node, {rule_.argument, argument(rewriter, value), "2"}, {});
      }
      site.state = wanted;
      // Kept by the program: reports may outlive the rules.
      report.changes.push_back(makeChange(rewriter, node,
                                          rewriter.keep(train ? eval_text_ : train_text_),
                                          rewriter.keep(train ? train_text_ : eval_text_)));
    }
  }

 private:
  static std::string where(const Node& node) {
    return "node '" + std::string(node.name()) + "' (" + std::string(shortTarget(node.target())) +
           ")";
  }

  bool conditionsHold(const Node& node) const {
    for (const RuleCondition& c : rule_.conditions) {
      const NamedArgument* in = node.input(c.argument);
      if (c.value.matches(in ? &in->arg : nullptr) != c.equal) return false;
    }
    return true;
  }

  static Argument argument(rewrite::Rewriter& rewriter, const RuleLiteral& value) {
    switch (value.kind) {
      case RuleLiteral::Kind::kBool:
        return rewriter.boolArg(value.boolean);
      case RuleLiteral::Kind::kInt:
        return rewriter.intArg(value.integer);
      case RuleLiteral::Kind::kFloat:
        return rewriter.floatArg(value.number);
      case RuleLiteral::Kind::kString: {
        std::string text;
        json::appendString(text, value.string);
        return Argument{.kind = "as_string", .payload = {.text = rewriter.keep(text)}};
      }
      case RuleLiteral::Kind::kNone:
        break;
    }
    return rewriter.noneArg();
  }

  OpRule rule_;
  rewrite::Pattern pattern_;
  std::string train_text_;  // "<argument>=<train value>", for reports
  std::string eval_text_;
};

}  // namespace

std::shared_ptr<const ModePass> makeOpRulePass(const OpRule& rule) {
  return std::make_shared<const OpRulePass>(rule);
}

std::vector<const ModePass*> passList(const UserRules* rules) {
  std::vector<const ModePass*> all = modePasses();
  if (rules != nullptr) all.insert(all.end(), rules->passes().begin(), rules->passes().end());
  return all;
}

}  // namespace exmode::passes
