// Attention dropout: the dropout_p of scaled_dot_product_attention.
//
// Train: aten.scaled_dot_product_attention.default(q, k, v, attn_mask, dropout_p=p, ...)
// Eval:  aten.scaled_dot_product_attention.default(q, k, v)         (dropout_p omitted: 0.0)
//
// Attention code passes `dropout_p = p if self.training else 0.0` (nn.MultiheadAttention,
// timm, Hugging Face transformers, torchvision: docs/ATTENTION_DROPOUT.md has the survey),
// so the export keeps p only in training mode. The rule: wherever sdpa has dropout_p > 0,
// eval has 0.0. To eval: drop `dropout_p` (and a trailing attn_mask=None, as torch omits
// trailing defaults; set 0.0 instead when later arguments follow) and remember p in the
// node's `custom` metadata under kSavedP (remembered.h: torch.export.load and save keep it;
// programs switched before it moved there hold it as a metadata field of its own, which is
// still read). To train: restore p from there. An eval export never had p
// in its graph: such a node is a fixed site, left alone, and the findings analysis warns
// that its train-mode p is unknown, unless an attention_dropout user rule (user_rules.h)
// gives p for its module path: switchMode then makes it an eval site with that p before
// this pass runs (user_rules_values.cc), and the switch to train writes it as above.
// Conditions: every sdpa node; dropout_p a literal float.
#include <charconv>

#include "exmode/error.h"
#include "exmode/passes.h"
#include "exmode/pattern.h"
#include "passes/change.h"
#include "passes/remembered.h"
#include "program/json_text.h"

namespace exmode::passes {

namespace {

using namespace rewrite;

constexpr std::string_view kSavedP = "exmode_attention_dropout_p";

const Pattern& attentionPattern() {
  static const Pattern pattern =
      Pattern({"aten.scaled_dot_product_attention.default"}).arg("query", tensor());
  return pattern;
}

// A dropout_p that is not a literal (a symbolic float) cannot be switched: refused, as
// literalFlag refuses a flag that is not a literal.
double graphP(const Node& node) {
  const NamedArgument* in = node.input("dropout_p");
  if (in == nullptr) return 0.0;
  const std::optional<double> p = in->arg.asDouble();
  if (!p) {
    throw Error(ErrorKind::kUnsupported, "node '" + std::string(node.name()) + "' (" +
                                             std::string(shortTarget(node.target())) +
                                             "): 'dropout_p' is " + std::string(in->arg.kind) +
                                             ", not a literal float");
  }
  return *p;
}

std::optional<double> savedP(const Node& node) {
  std::string text;
  if (remembered::usable(node)) text = remembered::get(node, kSavedP).value_or("");
  if (text.empty()) text = node.metadataField(kSavedP);
  if (text.empty()) return std::nullopt;
  double p = -1;
  const char* end = text.data() + text.size();
  auto [ptr, ec] = std::from_chars(text.data(), end, p);
  if (ec != std::errc() || ptr != end || !(p >= 0.0 && p <= 1.0)) {
    throw Error(ErrorKind::kBadProgram, "node '" + std::string(node.name()) + "': metadata " +
                                            std::string(kSavedP) + " is '" + text +
                                            "', not a probability");
  }
  return p;
}

std::string pText(double p) {
  std::string text;
  json::appendDouble(text, p);
  return text;
}

class AttentionDropoutPass final : public ModePass {
 public:
  std::string_view name() const override { return "attention_dropout"; }
  const std::vector<std::string>& targets() const override { return attentionPattern().targets(); }

  // p decides the state, so every detail level reads it.
  void collectSites(const Graph& graph, std::vector<Site>& sites,
                    SiteDetail /*detail*/) const override {
    for (const Match& m : matchAll(graph, attentionPattern())) {
      const double p = graphP(*m.root);
      Site site{.node = m.root, .state = Site::State::kFixed, .p = p};
      if (p > 0.0) {
        site.state = Site::State::kTrain;
      } else if (auto saved = savedP(*m.root)) {
        site.state = Site::State::kEval;
        site.p = *saved;
      }
      sites.push_back(site);
    }
  }

  // Sites carry p at every detail level (see collectSites).
  void apply(Rewriter& rewriter, Mode target, std::span<Site> sites,
             SwitchReport& report) const override {
    for (Site& site : sites) {
      Node& node = rewriter.mutableNode(*site.node);
      if (target == Mode::kEval && site.state == Site::State::kTrain) {
        toEval(rewriter, node, *site.p);
        site.state = Site::State::kEval;
        report.changes.push_back(makeChange(
            rewriter, node, rewriter.keep("dropout_p=" + pText(*site.p)), "dropout_p=0.0"));
      } else if (target == Mode::kTrain && site.state == Site::State::kEval) {
        toTrain(rewriter, node, *site.p);
        site.state = Site::State::kTrain;
        report.changes.push_back(makeChange(rewriter, node, "dropout_p=0.0",
                                            rewriter.keep("dropout_p=" + pText(*site.p))));
      }
    }
  }

 private:
  static void toEval(Rewriter& rewriter, Node& node, double p) {
    const auto& inputs = node.inputs();
    if (!inputs.empty() && inputs.back().name == "dropout_p") {
      rewriter.removeInput(node, "dropout_p");
      const NamedArgument* mask = node.input("attn_mask");
      if (mask != nullptr && mask->arg.isNone() && node.inputs().back().name == "attn_mask") {
        rewriter.removeInput(node, "attn_mask");
      }
    } else {
      rewriter.setInput(node, "dropout_p", rewriter.floatArg(0.0));
    }
    if (remembered::usable(node)) {
      remembered::set(rewriter, node, kSavedP, pText(p));
    } else {
      rewriter.setMetadataField(node, kSavedP, pText(p));
    }
  }

  static void toTrain(Rewriter& rewriter, Node& node, double p) {
    if (node.input("dropout_p") != nullptr) {
      rewriter.setInput(node, "dropout_p", rewriter.floatArg(p));
    } else {
      if (node.input("attn_mask") == nullptr) {
        rewriter.insertInput(node, {"attn_mask", rewriter.noneArg(), "1"}, "is_causal");
      }
      rewriter.insertInput(node, {"dropout_p", rewriter.floatArg(p), "1"}, "is_causal");
    }
    // p came from the site; only the record is left to drop (one parse of `custom`).
    if (!node.metadataFieldJson("custom").empty() && remembered::usable(node)) {
      remembered::set(rewriter, node, kSavedP, std::nullopt);
    }
    if (!node.metadataFieldJson(kSavedP).empty())
      rewriter.setMetadataField(node, kSavedP, std::nullopt);
  }
};

}  // namespace

const ModePass& attentionDropoutPass() {
  static const AttentionDropoutPass pass;
  return pass;
}

}  // namespace exmode::passes
