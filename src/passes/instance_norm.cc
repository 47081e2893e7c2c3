// Instance norm with running statistics (InstanceNorm*d(track_running_stats=True)).
//
// Train: aten.instance_norm.default(x, w, b, rm, rv, use_input_stats=True, momentum, eps, cudnn)
// Eval:  aten.instance_norm.default(x, w, b, rm, rv, use_input_stats=False, momentum, eps, cudnn)
//
// Eager passes `use_input_stats = self.training or not self.track_running_stats`, so only
// nodes with running statistics (running_mean not None) depend on the mode; without them
// instance statistics are used in both modes and the node is fixed. Instance norm never
// increments num_batches_tracked. momentum and eps are never touched.
#include "exmode/passes.h"
#include "exmode/pattern.h"
#include "passes/change.h"

namespace exmode::passes {

namespace {

using namespace rewrite;

const Pattern& instanceNormPattern() {
  static const Pattern pattern =
      Pattern({"aten.instance_norm.default"}).arg("running_mean", anyArg(), "running_mean");
  return pattern;
}

bool tracksRunningStats(const Match& m) {
  const Argument* running_mean = m.tryArg("running_mean");
  return running_mean != nullptr && running_mean->tensor() != nullptr;
}

class InstanceNormPass final : public ModePass {
 public:
  std::string_view name() const override { return "instance_norm"; }
  const std::vector<std::string>& targets() const override {
    return instanceNormPattern().targets();
  }

  void collectSites(const Graph& graph, std::vector<Site>& sites,
                    SiteDetail detail) const override {
    for (const Match& m : matchAll(graph, instanceNormPattern())) {
      sites.push_back(normSite(*m.root, tracksRunningStats(m), "use_input_stats", detail));
    }
  }

  void apply(Rewriter& rewriter, Mode target, std::span<Site> sites,
             SwitchReport& report) const override {
    const bool train = target == Mode::kTrain;
    const Site::State wanted = siteState(target);
    const std::string_view before = flagText("use_input_stats", !train);
    const std::string_view after = flagText("use_input_stats", train);
    for (Site& site : sites) {
      if (site.state == Site::State::kFixed || site.state == wanted) continue;
      Node& node = rewriter.mutableNode(*site.node);
      rewriter.setInput(node, "use_input_stats", rewriter.boolArg(train), site.flag_input);
      site.state = wanted;
      report.changes.push_back(makeChange(rewriter, node, before, after));
    }
  }
};

}  // namespace

const ModePass& instanceNormPass() {
  static const InstanceNormPass pass;
  return pass;
}

}  // namespace exmode::passes
