// A family whose whole mode is one literal bool input, flipped in place (dropout, the RNNs):
// each such family is a file declaring its pattern and the names of its flag and its
// probability, and an instance of this class.
#pragma once

#include <string_view>

#include "exmode/passes.h"
#include "exmode/pattern.h"
#include "passes/change.h"

namespace exmode::passes {

class FlagPass : public ModePass {
 public:
  // `pattern` must outlive the pass (a function-local static); `p_input` names the
  // probability reported at SiteDetail::kFull.
  FlagPass(std::string_view name, const rewrite::Pattern& pattern, std::string_view flag,
           std::string_view p_input)
      : name_(name), pattern_(pattern), flag_(flag), p_input_(p_input) {}

  std::string_view name() const override { return name_; }
  const std::vector<std::string>& targets() const override { return pattern_.targets(); }

  void collectSites(const Graph& graph, std::vector<Site>& sites,
                    SiteDetail /*detail*/) const override {
    for (const rewrite::Match& m : rewrite::matchAll(graph, pattern_)) {
      // p at every detail level: the findings analysis reads it on every switch to train.
      Site& site = sites.emplace_back(flagSite(*m.root, flag_));
      site.p = numberArg(*m.root, p_input_);
    }
  }

  void apply(rewrite::Rewriter& rewriter, Mode target, std::span<Site> sites,
             SwitchReport& report) const override {
    const bool train = target == Mode::kTrain;
    const Site::State wanted = siteState(target);
    const std::string_view before = flagText(flag_, !train);
    const std::string_view after = flagText(flag_, train);
    for (Site& site : sites) {
      if (site.state == wanted) continue;
      Node& node = rewriter.mutableNode(*site.node);
      rewriter.setInput(node, flag_, rewriter.boolArg(train), site.flag_input);
      site.state = wanted;
      flipped(rewriter, node, target);
      report.changes.push_back(makeChange(rewriter, node, before, after));
    }
  }

 protected:
  // Called after a site's flag was set for `target`: what a family keeps beside the flag.
  virtual void flipped(rewrite::Rewriter& /*rewriter*/, Node& /*node*/, Mode /*target*/) const {}

 private:
  std::string_view name_;
  const rewrite::Pattern& pattern_;
  std::string_view flag_;
  std::string_view p_input_;
};

}  // namespace exmode::passes
