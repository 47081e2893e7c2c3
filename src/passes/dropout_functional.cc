// Dropout in the functional IR of ep.run_decompositions() (functional and core ATen).
//
// Train: (y, mask) = aten.native_dropout.default(input, p, True)
// Eval:  y = aten.clone.default(self)          (aten.dropout's eval decomposition)
//
// The eval decomposition keeps no p, and a train export's dropout with p = 0 decomposes to
// the same clone. So: to eval, the node becomes the clone and p is remembered in its custom
// metadata (remembered.h), which torch.export.load and save keep; to train, a clone that
// remembers p becomes native_dropout again, its mask output restored. A clone that torch's
// decomposition made from a dropout (its metadata names aten.dropout as its origin) but
// that remembers nothing is a fixed site: its train-mode p is unknown, and the findings
// analysis says so on a switch to train. A native_dropout whose mask is read stays one, with
// train=False (what the op does in eval), since the clone has no mask.
// Dropout1d/2d/3d, AlphaDropout and in-place dropout decompose to bernoulli arithmetic in
// training and to nothing in eval; the findings analysis reports them as random ops.
#include <algorithm>
#include <charconv>
#include <string>

#include "exmode/error.h"
#include "exmode/passes.h"
#include "exmode/pattern.h"
#include "passes/change.h"
#include "passes/remembered.h"
#include "program/json_text.h"

namespace exmode::passes {

namespace {

using namespace rewrite;

constexpr std::string_view kTrainTarget = "torch.ops.aten.native_dropout.default";
constexpr std::string_view kEvalTarget = "torch.ops.aten.clone.default";
constexpr std::string_view kSavedP = "exmode_dropout_p";

const Pattern& trainPattern() {
  static const Pattern pattern =
      Pattern({"aten.native_dropout.default"}).arg("input", tensor()).arg("p", anyArg());
  return pattern;
}

const Pattern& clonePattern() {
  static const Pattern pattern = Pattern({"aten.clone.default"}).arg("self", tensor());
  return pattern;
}

// The p a clone remembers, if any; a value that is not a probability is a bad program.
std::optional<double> savedP(const Node& node) {
  if (node.metadataFieldJson("custom").empty() || !remembered::usable(node)) return std::nullopt;
  const std::optional<std::string> text = remembered::get(node, kSavedP);
  if (!text) return std::nullopt;
  double p = -1;
  const char* end = text->data() + text->size();
  const auto [ptr, ec] = std::from_chars(text->data(), end, p);
  if (ec != std::errc() || ptr != end || !(p >= 0.0 && p <= 1.0)) {
    throw Error(ErrorKind::kBadProgram, "node '" + std::string(node.name()) +
                                            "': custom metadata " + std::string(kSavedP) + " is '" +
                                            *text + "', not a probability");
  }
  return p;
}

bool isUsed(const Graph& graph, const Value& value) {
  if (!value.users().empty()) return true;
  for (const Argument& out : graph.outputs()) {
    for (const Ref& ref : out.payload.refs) {
      if (ref.value == &value) return true;
    }
  }
  return false;
}

// The tensor metadata of the mask: the output's, as bool (ScalarType 12) without grad
// (metadata that is not a JSON object, which torch never writes, is kept as it is).
std::string maskMeta(std::string_view output_meta) {
  return json::withMembers(output_meta, {{"dtype", "12"}, {"requires_grad", "false"}})
      .value_or(std::string(output_meta));
}

class DropoutFunctionalPass final : public ModePass {
 public:
  std::string_view name() const override { return "dropout_functional"; }
  // The clone is no target: it is a site only where it remembers p or came from a dropout,
  // and elsewhere (in nested graphs too) an ordinary op.
  const std::vector<std::string>& targets() const override { return trainPattern().targets(); }

  void collectSites(const Graph& graph, std::vector<Site>& sites,
                    SiteDetail /*detail*/) const override {
    const auto first = static_cast<std::ptrdiff_t>(sites.size());
    for (const Match& m : matchAll(graph, trainPattern())) {
      Site& site = sites.emplace_back(flagSite(*m.root, "train"));
      site.p = numberArg(*m.root, "p");
    }
    const auto second = static_cast<std::ptrdiff_t>(sites.size());
    for (const Match& m : matchAll(graph, clonePattern())) {
      if (auto p = savedP(*m.root)) {
        sites.push_back({.node = m.root, .state = Site::State::kEval, .p = *p});
      } else if (fromDropout(*m.root)) {
        sites.push_back({.node = m.root, .state = Site::State::kFixed});
      }
    }
    std::inplace_merge(
        sites.begin() + first, sites.begin() + second, sites.end(),
        [](const Site& a, const Site& b) { return a.node->order() < b.node->order(); });
  }

  void apply(Rewriter& rewriter, Mode target, std::span<Site> sites,
             SwitchReport& report) const override {
    const Site::State wanted = siteState(target);
    for (Site& site : sites) {
      if (site.state == wanted || site.state == Site::State::kFixed) continue;
      Node& node = rewriter.mutableNode(*site.node);
      if (!site.p) site.p = numberArg(node, "p");
      if (!site.p) {
        throw Error(ErrorKind::kUnsupported, "node '" + std::string(node.name()) +
                                                 "' (native_dropout): 'p' is not a literal float");
      }
      const std::string p_text = [&] {
        std::string t;
        json::appendDouble(t, *site.p);
        return t;
      }();
      const RawJson with_p = rewriter.keep("native_dropout(p=" + p_text + ", train=True)");
      if (target == Mode::kEval) {
        const Value* mask = node.outputs().size() > 1 ? node.outputs()[1].tensor() : nullptr;
        if (mask != nullptr && isUsed(rewriter.graph(), *mask)) {
          rewriter.setInput(node, "train", rewriter.boolArg(false), site.flag_input);
          report.changes.push_back(makeChange(rewriter, node, "train=True", "train=False"));
        } else {
          toClone(rewriter, node, p_text);
          report.changes.push_back(makeChange(rewriter, node, with_p, "clone"));
        }
      } else if (node.target() == kTrainTarget) {
        rewriter.setInput(node, "train", rewriter.boolArg(true), site.flag_input);
        report.changes.push_back(makeChange(rewriter, node, "train=False", "train=True"));
      } else {
        toNativeDropout(rewriter, node, *site.p);
        report.changes.push_back(makeChange(rewriter, node, "clone", with_p));
      }
      site.state = wanted;
    }
  }

  // Whether torch's decomposition made this clone from aten.dropout: its from_node
  // metadata (the chain of nodes it came from) names that op.
  static bool fromDropout(const Node& node) {
    const RawJson from = node.metadataFieldJson("from_node");
    return from.find("\\\"target\\\": \\\"aten.dropout.default\\\"") != std::string_view::npos;
  }

 private:
  static void toClone(Rewriter& rewriter, Node& node, const std::string& p_text) {
    Value& input = *node.input("input")->arg.tensor();
    rewriter.setTarget(node, kEvalTarget);
    rewriter.removeInput(node, "train");
    rewriter.removeInput(node, "p");
    rewriter.removeInput(node, "input");
    rewriter.insertInput(node, {"self", rewriter.tensorArg(input), "1"}, {});
    rewriter.truncateOutputs(node, 1);
    remembered::set(rewriter, node, kSavedP, p_text);
  }

  static void toNativeDropout(Rewriter& rewriter, Node& node, double p) {
    Value& input = *node.input("self")->arg.tensor();
    Value& output = *node.outputs().front().tensor();
    rewriter.setTarget(node, kTrainTarget);
    rewriter.removeInput(node, "self");
    rewriter.insertInput(node, {"input", rewriter.tensorArg(input), "1"}, {});
    rewriter.insertInput(node, {"p", rewriter.floatArg(p), "1"}, {});
    rewriter.insertInput(node, {"train", rewriter.boolArg(true), "1"}, {});
    const RawJson meta =
        output.tensorMeta().empty() ? RawJson{} : rewriter.keep(maskMeta(output.tensorMeta()));
    rewriter.appendOutput(node, rewriter.freshName(std::string(node.name()) + "_unused_1"), meta);
    remembered::set(rewriter, node, kSavedP, std::nullopt);
  }
};

}  // namespace

const ModePass& dropoutFunctionalPass() {
  static const DropoutFunctionalPass pass;
  return pass;
}

}  // namespace exmode::passes
