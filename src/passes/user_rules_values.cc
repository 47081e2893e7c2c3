// attention_dropout rules: the train-mode p an eval export did not record, given to the
// sites under matching module paths (user_rules_internal.h).
#include <string>

#include "exmode/passes.h"
#include "exmode/pattern.h"
#include "passes/change.h"
#include "passes/user_rules_internal.h"
#include "program/json_text.h"

namespace exmode::passes {

namespace {

// Patterns and module paths are short: plain recursion is enough.
bool matchFrom(std::string_view pattern, std::string_view path) {
  if (pattern.empty()) return path.empty();
  if (pattern.front() == '*') {
    const bool crosses = pattern.size() > 1 && pattern[1] == '*';
    const std::string_view rest = pattern.substr(crosses ? 2 : 1);
    for (std::size_t k = 0; k <= path.size(); ++k) {
      if (matchFrom(rest, path.substr(k))) return true;
      if (k < path.size() && !crosses && path[k] == '.') break;
    }
    return false;
  }
  return !path.empty() && pattern.front() == path.front() &&
         matchFrom(pattern.substr(1), path.substr(1));
}

}  // namespace

bool pathMatch(std::string_view pattern, std::string_view path) { return matchFrom(pattern, path); }

namespace {

bool isDropoutModule(const Node& node) {
  return node.moduleType().starts_with("torch.nn.modules.dropout.");
}

}  // namespace

void applyAttentionRules(const UserRules& rules, std::span<Site> sites) {
  if (rules.attentionDropoutRules().empty()) return;
  for (Site& site : sites) {
    const std::string_view family = site.pass == nullptr ? std::string_view{} : site.pass->name();
    if (family == "attention_dropout") {
      // Fixed: no dropout_p in the graph and none remembered.
      if (site.state != Site::State::kFixed) continue;
      if (const AttentionDropoutRule* rule = rules.attentionRuleFor(*site.node)) {
        site.state = Site::State::kEval;
        site.p = rule->p;
      }
    } else if (family == "dropout") {
      if (site.state != Site::State::kEval || site.p != 0.0 || isDropoutModule(*site.node))
        continue;
      if (const AttentionDropoutRule* rule = rules.attentionRuleFor(*site.node)) site.p = rule->p;
    }
  }
}

void writeRuleP(rewrite::Rewriter& rewriter, Mode target, std::span<Site> sites,
                SwitchReport& report) {
  if (target != Mode::kTrain) return;
  for (Site& site : sites) {
    if (site.pass == nullptr || site.pass->name() != "dropout" || !site.p || *site.p == 0.0)
      continue;
    if (numberArg(*site.node, "p") != 0.0) continue;
    Node& node = rewriter.mutableNode(*site.node);
    rewriter.setInput(node, "p", rewriter.floatArg(*site.p));
    std::string after = "p=";
    json::appendDouble(after, *site.p);
    report.changes.push_back(makeChange(rewriter, node, "p=0.0", rewriter.keep(after)));
  }
}

}  // namespace exmode::passes
