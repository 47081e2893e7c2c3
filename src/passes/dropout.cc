// Dropout family: the `train` flag frozen into the graph at export.
//
// Before: aten.<op>(input, p, train=T)     After: aten.<op>(input, p, train=not T)
// The tensor is `input`, or `self` in the in-place variants.
// Ops: dropout, feature_dropout (Dropout1d/2d/3d), alpha_dropout, feature_alpha_dropout,
// each with its in-place variant; all share the schema (Tensor input, float p, bool train).
// Conditions: `train` is a literal bool (anything else is refused, see literalFlag).
// `p` is never touched.
#include "exmode/passes.h"
#include "exmode/pattern.h"
#include "passes/change.h"

namespace exmode::passes {

namespace {

using namespace rewrite;

const Pattern& dropoutPattern() {
  static const Pattern pattern = Pattern(
      {"aten.dropout.default", "aten.dropout_.default", "aten.feature_dropout.default",
       "aten.feature_dropout_.default", "aten.alpha_dropout.default", "aten.alpha_dropout_.default",
       "aten.feature_alpha_dropout.default", "aten.feature_alpha_dropout_.default"});
  return pattern;
}

class DropoutPass final : public ModePass {
 public:
  std::string_view name() const override { return "dropout"; }
  const std::vector<std::string>& targets() const override { return dropoutPattern().targets(); }

  void collectSites(const Graph& graph, std::vector<Site>& sites,
                    SiteDetail detail) const override {
    for (const Match& m : matchAll(graph, dropoutPattern())) {
      Site& site = sites.emplace_back(flagSite(*m.root, "train"));
      if (detail == SiteDetail::kFull) site.p = numberArg(*m.root, "p");
    }
  }

  void apply(Rewriter& rewriter, Mode target, std::span<Site> sites,
             SwitchReport& report) const override {
    const bool train = target == Mode::kTrain;
    const Site::State wanted = siteState(target);
    const std::string_view before = flagText("train", !train);
    const std::string_view after = flagText("train", train);
    for (Site& site : sites) {
      if (site.state == wanted) continue;
      Node& node = rewriter.mutableNode(*site.node);
      rewriter.setInput(node, "train", rewriter.boolArg(train), site.flag_input);
      site.state = wanted;
      report.changes.push_back(makeChange(rewriter, node, before, after));
    }
  }
};

}  // namespace

const ModePass& dropoutPass() {
  static const DropoutPass pass;
  return pass;
}

}  // namespace exmode::passes
