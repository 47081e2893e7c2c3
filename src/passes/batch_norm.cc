// Batch norm in the default (training) IR of torch.export: every in-place form of
// batch_norm_forms.h (aten.batch_norm, the forms a module calling the op writes and older
// exports' forms).
//
// Train: add_ = aten.add_.Tensor(<bn>.num_batches_tracked, 1)        (the increment)
//        y = aten.batch_norm.default(x, w, b, rm, rv, training=True, momentum, eps, cudnn)
// Eval:  y = aten.batch_norm.default(x, w, b, rm, rv, training=False, momentum, eps, cudnn)
//
// To eval: clear `training` (flagless forms: the eval form's target), erase the site's
// increment and let later readers of the counter read its input. To train: set `training`
// (or the train form's target, with `training` inserted when that form has one), insert the
// increment right before the site (where torch's own train-mode export puts it), chained
// after the counter's latest value so a module called twice counts twice. Forms with saved
// batch statistics (outputs 1 and 2) get their metadata as torch writes it: [C] in
// training, [0] in eval; a program that reads them is refused. momentum, eps, cudnn_enabled
// are never touched. Without running statistics (running_mean None) batch norm uses batch
// statistics in both modes: such a site is fixed and left alone.
//
// A site's increment is found through the signature: the counter is the buffer
// "<module>.num_batches_tracked" of the module that ran the site (from nn_module_stack),
// or the one beside running_mean's buffer ("<m>.running_mean" gives
// "<m>.num_batches_tracked"); the increment is the add_(counter, 1) on that counter's chain
// between the previous site on the same counter and this one.
#include <algorithm>
#include <charconv>
#include <optional>
#include <string>

#include "exmode/error.h"
#include "exmode/passes.h"
#include "exmode/pattern.h"
#include "passes/batch_norm_forms.h"
#include "passes/change.h"
#include "passes/norm_counter.h"
#include "program/json_text.h"

namespace exmode::passes {

namespace {

using namespace rewrite;

// add_(counter, 1): one step of a module's num_batches_tracked.
const Pattern& incrementPattern() {
  static const Pattern pattern =
      Pattern({"aten.add_.Tensor"}).arg("self", tensor(), "self").arg("other", intArg(1));
  return pattern;
}

// add(counter, 1): the functional IR's increment, which this pass must not leave behind.
const Pattern& functionalIncrementPattern() {
  static const Pattern pattern =
      Pattern({"aten.add.Tensor"}).arg("self", tensor(), "self").arg("other", intArg(1));
  return pattern;
}

bool isTracked(const Node& node) {
  const NamedArgument* running_mean = node.input("running_mean");
  return running_mean != nullptr && running_mean->arg.tensor() != nullptr;
}

const BatchNormForm& formOf(const Node& node) {
  return *batchNormForm(node.target(), NormIr::kInPlace);
}

[[noreturn]] void refuse(const Node& node, const std::string& why) {
  throw Error(ErrorKind::kUnsupported, "node '" + std::string(node.name()) + "' (" +
                                           std::string(shortTarget(node.target())) + "): " + why);
}

// The site of one in-place form: its mode is its flag, or its target.
Site formSite(const Node& node, const BatchNormForm& form, SiteDetail detail) {
  Site site{.node = &node};
  if (isTracked(node)) {
    if (!form.flag.empty()) {
      site = flagSite(node, form.flag);
    } else {
      site.state = form.mode;
    }
  }
  if (detail == SiteDetail::kFull) {
    site.momentum = numberArg(node, form.momentum);
    site.eps = numberArg(node, form.momentum == "momentum" ? "eps" : "epsilon");
  }
  return site;
}

// The in-place forms' targets, for ModePass::targets.
std::vector<std::string> inPlaceTargets() {
  std::vector<std::string> targets;
  for (const BatchNormForm& form : batchNormForms()) {
    if (form.ir == NormIr::kInPlace) targets.emplace_back(form.target);
  }
  return targets;
}

// The candidate names of Graph::freshName("add_"), in the order it tries them: "add_" is
// candidate 0, "add__<k>" candidate k. Null for any other name.
constexpr std::string_view kIncrementBase = "add_";
std::optional<std::size_t> candidateIndex(std::string_view name) {
  constexpr std::string_view kSuffixed = "add__";
  if (name == kIncrementBase) return 0;
  if (!name.starts_with(kSuffixed) || name.size() == kSuffixed.size() ||
      name[kSuffixed.size()] == '0') {
    return std::nullopt;
  }
  std::size_t k = 0;
  const char* end = name.data() + name.size();
  const auto [ptr, ec] = std::from_chars(name.data() + kSuffixed.size(), end, k);
  if (ec != std::errc() || ptr != end) return std::nullopt;
  return k;
}

std::string candidateName(std::size_t k) {
  return k == 0 ? std::string(kIncrementBase) : "add__" + std::to_string(k);
}

// The name a new increment gets: what freshName("add_") gives, the first candidate not
// taken (every candidate it passes over is taken; see Graph::freshName). The name the
// site's increment got last time (`last`) is checked to be that and then kept, without new
// text: it must be free, and every candidate from `taken_below` (below which this switch
// knows all are taken) up to it must be taken. In a program toggled between modes that is
// one lookup per site; a program whose names moved meanwhile gets freshName's answer.
RawJson incrementName(Rewriter& rewriter, RawJson last, std::size_t& taken_below) {
  const Graph& graph = rewriter.graph();
  RawJson name;
  if (const auto k = candidateIndex(last); k && *k >= taken_below) {
    bool is_first_free = graph.tryGetValue(last) == nullptr;
    for (std::size_t c = taken_below; is_first_free && c < *k; ++c) {
      is_first_free = graph.tryGetValue(candidateName(c)) != nullptr;
    }
    if (is_first_free) name = last;
  }
  if (name.empty()) name = rewriter.freshName(kIncrementBase);
  taken_below = candidateIndex(name).value_or(0) + 1;
  return name;
}

class BatchNormPass final : public ModePass {
 public:
  std::string_view name() const override { return "batch_norm"; }
  const std::vector<std::string>& targets() const override {
    static const std::vector<std::string> all = inPlaceTargets();
    return all;
  }

  void collectSites(const Graph& graph, std::vector<Site>& sites,
                    SiteDetail detail) const override {
    collectFormSites(graph, NormIr::kInPlace, detail, sites, formSite);
  }

  void apply(Rewriter& rewriter, Mode target, std::span<Site> sites,
             SwitchReport& report) const override {
    Graph& graph = rewriter.graph();
    const bool train = target == Mode::kTrain;
    const Site::State wanted = siteState(target);
    // Find every site's increment first, against the unchanged graph, and refuse what cannot
    // be switched before anything changes; then rewrite.
    struct Planned {
      Site* site;
      Value* counter;
      Increments increments;
    };
    std::vector<Planned> plan;
    plan.reserve(sites.size());
    // The last site seen on each counter, by value index (a dense side table).
    std::vector<const Node*> previous_site(graph.valueCount(), nullptr);
    for (Site& site : sites) {
      if (site.state == Site::State::kFixed) continue;  // no running statistics
      const Node& node = *site.node;
      // The increment, on whichever candidate counter has one; a new one goes on the first.
      Site::Increment& known = site.increment;
      if (!known.counters_known) {
        known.counters = counterCandidates(graph, node, *node.input("running_mean")->arg.tensor());
        known.counters_known = true;
      }
      Value* counter = known.counters.empty() ? nullptr : known.counters.front();
      Increments increments;
      bool counted_functionally = false;
      for (Value* candidate : known.counters) {
        const Node*& previous = previous_site[candidate->index()];
        if (increments.empty()) {
          increments = incrementsOf(*candidate, node, previous, incrementPattern());
          if (!increments.empty()) counter = candidate;
          counted_functionally =
              counted_functionally ||
              !incrementsOf(*candidate, node, previous, functionalIncrementPattern()).empty();
        }
        previous = &node;
      }
      if (site.state == wanted) continue;
      if (!train && increments.empty() && counted_functionally)
        refuse(node,
               "its num_batches_tracked is incremented by a functional add (a decomposed "
               "program), which exmode switches only for the functional IR's own forms");
      if (savedStatisticsRead(graph, node))
        refuse(node,
               "its saved batch statistics (outputs 1 and 2) are read, and they are empty in "
               "eval");
      plan.push_back({&site, counter, std::move(increments)});
    }
    // Every candidate name of an increment below this one is taken (see incrementName).
    std::size_t names_taken_below = 0;
    for (const Planned& p : plan) {
      Node& node = rewriter.mutableNode(*p.site->node);
      const BatchNormForm& form = formOf(node);
      const BatchNormForm& to = otherForm(form);
      std::string_view before =
          form.flag.empty() ? shortTarget(form.target) : flagText(form.flag, !train);
      std::string_view after = to.flag.empty() ? shortTarget(to.target) : flagText(to.flag, train);
      if (!form.flag.empty()) {
        rewriter.setInput(node, form.flag, rewriter.boolArg(train), p.site->flag_input);
      } else {
        rewriter.setTarget(node, to.target);
        if (!to.flag.empty())
          rewriter.insertInput(node, {std::string(to.flag), rewriter.boolArg(train), "1"},
                               to.momentum);
      }
      setSavedMeta(rewriter, node, train);
      p.site->state = wanted;
      bool counted = false;
      if (!train && !p.increments.empty()) {
        // Last first: each one's output is read by the next.
        for (auto it = p.increments.rbegin(); it != p.increments.rend(); ++it) {
          Node& increment = **it;
          rewriter.replaceUses(*increment.output(), *increment.input("self")->arg.tensor());
          rewriter.eraseNode(increment);
        }
        counted = true;
      } else if (train && p.increments.empty() && p.counter != nullptr) {
        insertIncrement(rewriter, *p.site, node, *p.counter, names_taken_below);
        counted = true;
      }
      if (counted) {
        constexpr std::string_view kCounted = ", num_batches_tracked += 1";
        std::string_view& side = train ? after : before;
        side = side == "training=True" ? std::string_view("training=True, num_batches_tracked += 1")
                                       : rewriter.keep(std::string(side) + std::string(kCounted));
      }
      // Kept with the site: a switch does not change momentum.
      if (train && !p.site->momentum) p.site->momentum = numberArg(node, form.momentum);
      report.changes.push_back(makeChange(rewriter, node, before, after));
    }
    graph.renumber();
  }

 private:
  // The saved batch statistics' metadata as torch writes it: per channel, like the running
  // statistics, in training; empty in eval.
  static void setSavedMeta(Rewriter& rewriter, Node& node, bool train) {
    if (node.outputs().size() < 3) return;
    RawJson meta;
    if (train) {
      meta = node.input("running_mean")->arg.tensor()->tensorMeta();
    } else if (const RawJson input = node.input("input")->arg.tensor()->tensorMeta();
               !input.empty()) {
      meta = rewriter.keep(emptyTensorMeta(input));
    }
    if (meta.empty()) return;
    for (std::size_t i = 1; i <= 2; ++i) {
      if (Value* v = node.outputs()[i].tensor()) rewriter.setTensorMeta(*v, meta);
    }
  }

  static void insertIncrement(Rewriter& rewriter, Site& at, Node& site, Value& counter,
                              std::size_t& names_taken_below) {
    Value& latest = *counterValueBefore(counter, site, incrementPattern());
    Site::Increment& known = at.increment;
    known.name = incrementName(rewriter, known.name, names_taken_below);
    if (!known.metadata_known) {
      known.metadata = incrementMetadata(site);
      known.metadata_known = true;
    }
    NewNode increment;
    increment.target = "torch.ops.aten.add_.Tensor";
    // Built in place: a NamedArgument is large, and a switch inserts one increment per site.
    increment.inputs.push_back({"self", rewriter.tensorArg(latest), "1"});
    increment.inputs.push_back({"other", rewriter.intArg(1), "1"});
    increment.tensor_outputs.emplace_back(known.name, counter.tensorMeta());
    increment.metadata = known.metadata;
    Node& added = rewriter.insertBefore(site, std::move(increment));
    rewriter.replaceUses(latest, *added.output(), &site);
  }
};

}  // namespace

const ModePass& batchNormPass() {
  static const BatchNormPass pass;
  return pass;
}

}  // namespace exmode::passes
