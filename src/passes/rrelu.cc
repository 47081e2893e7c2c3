// Randomized leaky ReLU (nn.RReLU, F.rrelu): random slopes in training, their mean in eval.
//
// Train: aten.rrelu.default(input, lower, upper, training=True)
// Eval:  aten.rrelu.default(input, lower, upper)       training omitted (default False)
//
// torch omits trailing arguments equal to their schema defaults (lower=1/8, upper=1/3,
// training=False), so an eval export of RReLU() is rrelu(input). To eval: drop `training`
// and the trailing defaults after it; to train: put the defaults back and set training.
// lower and upper keep their values. The in-place variant names its tensor `self`.
#include <array>
#include <string>

#include "exmode/passes.h"
#include "exmode/pattern.h"
#include "passes/change.h"
#include "program/json_text.h"

namespace exmode::passes {

namespace {

using namespace rewrite;

struct Default {
  std::string_view name;
  double value;
};
// rrelu(Tensor self, Scalar lower=0.125, Scalar upper=0.3333333333333333, bool training=False, ...)
constexpr std::array<Default, 2> kScalarDefaults = {{{"lower", 0.125}, {"upper", 1.0 / 3.0}}};

const Pattern& rreluPattern() {
  static const Pattern pattern =
      Pattern({"aten.rrelu.default", "aten.rrelu_.default", "aten.rrelu_with_noise.default",
               "aten.rrelu_with_noise_functional.default"});
  return pattern;
}

// `training` defaults to False when omitted.
bool training(const Node& node) {
  return node.input("training") != nullptr && literalFlag(node, "training");
}

// True when the last input is a scalar at its schema default, written the way torch (and
// Rewriter::floatArg, going back to train) writes it. Only such an argument is dropped:
// one written otherwise ("0.125000") would come back rewritten, so it stays.
bool lastIsDefault(const Node& node) {
  static const std::array<std::string, kScalarDefaults.size()> kTexts = [] {
    std::array<std::string, kScalarDefaults.size()> texts;
    for (std::size_t i = 0; i < texts.size(); ++i)
      json::appendDouble(texts[i], kScalarDefaults[i].value);
    return texts;
  }();
  if (node.inputs().empty()) return false;
  const NamedArgument& last = node.inputs().back();
  for (std::size_t i = 0; i < kScalarDefaults.size(); ++i) {
    if (last.name == kScalarDefaults[i].name)
      return last.arg.kind == "as_float" && last.arg.payload.text == kTexts[i];
  }
  return false;
}

class RreluPass final : public ModePass {
 public:
  std::string_view name() const override { return "rrelu"; }
  const std::vector<std::string>& targets() const override { return rreluPattern().targets(); }

  void collectSites(const Graph& graph, std::vector<Site>& sites,
                    SiteDetail /*detail*/) const override {
    for (const Match& m : matchAll(graph, rreluPattern())) {
      sites.push_back(
          {.node = m.root, .state = training(*m.root) ? Site::State::kTrain : Site::State::kEval});
    }
  }

  void apply(Rewriter& rewriter, Mode target, std::span<Site> sites,
             SwitchReport& report) const override {
    const bool train = target == Mode::kTrain;
    const Site::State wanted = siteState(target);
    const std::string_view before = flagText("training", !train);
    const std::string_view after = flagText("training", train);
    for (Site& site : sites) {
      if (site.state == wanted) continue;
      Node& node = rewriter.mutableNode(*site.node);
      if (train) {
        for (const Default& d : kScalarDefaults) {
          if (node.input(d.name) == nullptr) {
            rewriter.insertInput(node, {d.name, rewriter.floatArg(d.value), "1"}, "training");
          }
        }
        if (node.input("training") != nullptr) {
          rewriter.setInput(node, "training", rewriter.boolArg(true));
        } else {
          rewriter.insertInput(node, {"training", rewriter.boolArg(true), "1"}, "generator");
        }
      } else if (node.inputs().back().name == "training") {
        rewriter.removeInput(node, "training");
        while (lastIsDefault(node)) rewriter.removeInput(node, node.inputs().back().name);
      } else {
        rewriter.setInput(node, "training", rewriter.boolArg(false));
      }
      site.state = wanted;
      report.changes.push_back(makeChange(rewriter, node, before, after));
    }
  }
};

}  // namespace

const ModePass& rreluPass() {
  static const RreluPass pass;
  return pass;
}

}  // namespace exmode::passes
