// Older and device-specific forms of mode-sensitive ops that exmode recognizes but does not
// switch yet: _native_batch_norm_legit (batch norm that updates its statistics in place,
// from older functionalization), native_batch_norm, cudnn_batch_norm and the in-place
// rrelu_with_noise_. They are reported as sites, so `inspect` tells the truth about such a
// program, and a switch that would have to change one is refused: refusing is better than
// reporting "nothing to do". The functional IR's own forms have passes of their own
// (batch_norm_functional.cc, dropout_functional.cc; RReLU's in rrelu.cc).
#include "exmode/error.h"
#include "exmode/passes.h"
#include "exmode/pattern.h"
#include "passes/change.h"

namespace exmode::passes {

namespace {

using namespace rewrite;

// Ops whose mode is a literal flag argument.
const Pattern& flaggedPattern() {
  static const Pattern pattern =
      Pattern({"aten._native_batch_norm_legit.default", "aten.native_batch_norm.default",
               "aten.cudnn_batch_norm.default", "aten.rrelu_with_noise_.default"});
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
                      ") is an older or device-specific form that exmode does not switch yet; "
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
