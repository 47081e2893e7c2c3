// Dropout family: the `train` flag frozen into the graph at export.
//
// Before: aten.<op>(input, p, train=T)     After: aten.<op>(input, p, train=not T)
// The tensor is `input`, or `self` in the in-place variants.
// Ops: dropout, feature_dropout (Dropout1d/2d/3d), alpha_dropout, feature_alpha_dropout,
// each with its in-place variant; all share the schema (Tensor input, float p, bool train).
// Conditions: `train` is a literal bool (anything else is refused, see literalFlag).
// `p` is never touched.
// Kept beside the flag: going to eval, a site whose graph reads like a merged eval export
// (findings_internal.h) is marked as coming from a train export, so that the findings
// analysis does not warn about it on the way back; going to train removes the mark.
#include "passes/findings_internal.h"
#include "passes/flag_pass.h"
#include "passes/remembered.h"

namespace exmode::passes {

namespace {

const rewrite::Pattern& dropoutPattern() {
  static const rewrite::Pattern pattern = rewrite::Pattern(
      {"aten.dropout.default", "aten.dropout_.default", "aten.feature_dropout.default",
       "aten.feature_dropout_.default", "aten.alpha_dropout.default", "aten.alpha_dropout_.default",
       "aten.feature_alpha_dropout.default", "aten.feature_alpha_dropout_.default"});
  return pattern;
}

class DropoutPass final : public FlagPass {
 public:
  DropoutPass() : FlagPass("dropout", dropoutPattern(), "train", "p") {}

 protected:
  void flipped(rewrite::Rewriter& rewriter, Node& node, Mode target) const override {
    if (target == Mode::kEval) {
      if (looksMerged(rewriter.graph(), node) && remembered::usable(node)) {
        remembered::set(rewriter, node, kFromTrainExport, "true");
      }
    } else if (!node.metadataFieldJson("custom").empty() &&
               remembered::get(node, kFromTrainExport)) {
      remembered::set(rewriter, node, kFromTrainExport, std::nullopt);
    }
  }
};

}  // namespace

const ModePass& dropoutPass() {
  static const DropoutPass pass;
  return pass;
}

}  // namespace exmode::passes
