// Forms of mode-sensitive ops that exmode recognizes but does not switch: the in-place
// rrelu_with_noise_ (its noise buffer is written in place, and no torch export writes it
// with a mode to switch to). It is reported as a site, so `inspect` tells the truth about
// such a program, and a switch that would have to change one is refused: refusing is better
// than reporting "nothing to do". Every batch-norm form is switched (batch_norm_forms.h);
// the functional IR's own forms have passes of their own (batch_norm_functional.cc,
// dropout_functional.cc; RReLU's in rrelu.cc).
#include "exmode/error.h"
#include "exmode/passes.h"
#include "exmode/pattern.h"
#include "passes/change.h"

namespace exmode::passes {

namespace {

using namespace rewrite;

// Ops whose mode is a literal flag argument.
const Pattern& flaggedPattern() {
  static const Pattern pattern = Pattern({"aten.rrelu_with_noise_.default"});
  return pattern;
}

Site::State stateOf(const Node& node) {
  for (const char* flag : {"train", "training"}) {
    const NamedArgument* in = node.input(flag);
    if (in == nullptr) continue;
    if (auto value = in->arg.asBool()) return *value ? Site::State::kTrain : Site::State::kEval;
  }
  return Site::State::kFixed;
}

class FunctionalIrPass final : public ModePass {
 public:
  std::string_view name() const override { return "functional_ir"; }
  const std::vector<std::string>& targets() const override { return flaggedPattern().targets(); }

  void collectSites(const Graph& graph, std::vector<Site>& sites,
                    SiteDetail /*detail*/) const override {
    for (const Match& m : matchAll(graph, flaggedPattern())) {
      sites.push_back({.node = m.root, .state = stateOf(*m.root)});
    }
  }

  void apply(Rewriter&, Mode target, std::span<Site> sites, SwitchReport&) const override {
    const Site::State wanted = siteState(target);
    for (const Site& site : sites) {
      if (site.state == Site::State::kFixed || site.state == wanted) continue;
      throw Error(ErrorKind::kUnsupported,
                  "node '" + std::string(site.node->name()) + "' (" +
                      std::string(shortTarget(site.node->target())) +
                      ") updates its noise in place, a form exmode does not switch; "
                      "export the model again with this torch, or switch it before "
                      "decomposing it");
    }
  }
};

}  // namespace

const ModePass& functionalIrPass() {
  static const FunctionalIrPass pass;
  return pass;
}

}  // namespace exmode::passes
