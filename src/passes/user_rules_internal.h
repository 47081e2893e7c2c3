// What switchMode and collectSites need of user rules (user_rules.h): the pass an op rule
// makes, and the attention dropout p rules give to sites whose program does not hold it.
#pragma once

#include <memory>
#include <span>
#include <string_view>
#include <vector>

#include "exmode/passes.h"
#include "exmode/user_rules.h"

namespace exmode::passes {

// The pass switching the nodes of `rule.target` (user_rules_pass.cc).
std::shared_ptr<const ModePass> makeOpRulePass(const OpRule& rule);

// The built-in passes, then the rules' passes (rules may be null).
std::vector<const ModePass*> passList(const UserRules* rules);

// Gives attention sites the train-mode p of the attention_dropout rule over their module
// path, where the program does not hold it: an sdpa site without dropout_p and without a
// remembered p becomes an eval site with the rule's p (the attention pass then writes it on
// a switch to train), and an eval dropout site with p 0.0 outside an nn.Dropout module takes
// the rule's p as its train-mode p (writeRuleP writes it). Sites whose program holds p are
// left as they are. Idempotent.
void applyAttentionRules(const UserRules& rules, std::span<Site> sites);

// After the passes switched to `target`: writes the train-mode p of each dropout site that
// applyAttentionRules gave one to, where the graph still has 0.0, reporting each change.
void writeRuleP(rewrite::Rewriter& rewriter, Mode target, std::span<Site> sites,
                SwitchReport& report);

// `*` matches a run of characters other than '.', `**` any run.
bool pathMatch(std::string_view pattern, std::string_view path);

}  // namespace exmode::passes
