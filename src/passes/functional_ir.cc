// Mode-sensitive ops of the functional IR (after ep.run_decompositions()) and of older
// exports. They are reported as sites, so `inspect` tells the truth about such a program,
// but a switch that would have to change one is refused: in this IR batch norm's running
// statistics are graph outputs tied to buffers by buffer_mutation specs, so a switch must
// change the signature with the graph. Refusing is better than reporting "nothing to do".
//
// Train: aten.native_dropout.default(x, p, True); aten._native_batch_norm_legit_functional.default(
//        x, w, b, rm, rv, True, momentum, eps) with outputs 3, 4 as buffer mutations
// Eval:  dropout gone; aten._native_batch_norm_legit_no_training.default(x, w, b, rm, rv,
//        momentum, eps)
// RReLU decomposes to aten.rrelu_with_noise_functional(..., training). AlphaDropout
// decomposes to bernoulli arithmetic with no flag left: it cannot be detected at all.
#include <algorithm>

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
      Pattern({"aten.native_dropout.default", "aten._native_batch_norm_legit_functional.default",
               "aten._native_batch_norm_legit.default", "aten.native_batch_norm.default",
               "aten.cudnn_batch_norm.default", "aten.rrelu_with_noise.default",
               "aten.rrelu_with_noise_.default", "aten.rrelu_with_noise_functional.default"});
  return pattern;
}

// Ops that exist only in evaluation mode.
const Pattern& evalOnlyPattern() {
  static const Pattern pattern = Pattern({"aten._native_batch_norm_legit_no_training.default"});
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
  const std::vector<std::string>& targets() const override {
    static const std::vector<std::string> all = [] {
      std::vector<std::string> t = flaggedPattern().targets();
      t.insert(t.end(), evalOnlyPattern().targets().begin(), evalOnlyPattern().targets().end());
      return t;
    }();
    return all;
  }

  void collectSites(const Graph& graph, std::vector<Site>& sites,
                    SiteDetail /*detail*/) const override {
    const auto first = static_cast<std::ptrdiff_t>(sites.size());
    for (const Match& m : matchAll(graph, flaggedPattern())) {
      sites.push_back({.node = m.root, .state = stateOf(*m.root)});
    }
    const auto second = static_cast<std::ptrdiff_t>(sites.size());
    for (const Match& m : matchAll(graph, evalOnlyPattern())) {
      sites.push_back({.node = m.root, .state = Site::State::kEval});
    }
    // Each pattern's matches are in graph order; the pass's sites must be as a whole.
    std::inplace_merge(
        sites.begin() + first, sites.begin() + second, sites.end(),
        [](const Site& a, const Site& b) { return a.node->order() < b.node->order(); });
  }

  void apply(Rewriter&, Mode target, std::span<Site> sites, SwitchReport&) const override {
    const Site::State wanted = siteState(target);
    for (const Site& site : sites) {
      if (site.state == Site::State::kFixed || site.state == wanted) continue;
      throw Error(ErrorKind::kUnsupported,
                  "node '" + std::string(site.node->name()) + "' (" +
                      std::string(shortTarget(site.node->target())) +
                      ") belongs to the functional IR of run_decompositions(), which exmode "
                      "does not switch yet; switch the program before decomposing it");
    }
  }
};

}  // namespace

const ModePass& functionalIrPass() {
  static const FunctionalIrPass pass;
  return pass;
}

}  // namespace exmode::passes
