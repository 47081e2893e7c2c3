// Batch norm in the default (training) IR of torch.export.
//
// Train: add_ = aten.add_.Tensor(<bn>.num_batches_tracked, 1)        (the increment)
//        y = aten.batch_norm.default(x, w, b, rm, rv, training=True, momentum, eps, cudnn)
// Eval:  y = aten.batch_norm.default(x, w, b, rm, rv, training=False, momentum, eps, cudnn)
//
// To eval: clear `training`, erase the site's increment and let later readers of the
// counter read its input. To train: set `training`, insert the increment right before the
// site (where torch's own train-mode export puts it), chained after the counter's latest
// value so a module called twice counts twice. momentum, eps, cudnn_enabled are never
// touched. Without running statistics (running_mean None) batch norm uses batch
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

#include "exmode/passes.h"
#include "exmode/pattern.h"
#include "passes/change.h"
#include "passes/norm_counter.h"
#include "program/json_text.h"

namespace exmode::passes {

namespace {

using namespace rewrite;

const Pattern& batchNormPattern() {
  static const Pattern pattern =
      Pattern({"aten.batch_norm.default"}).arg("running_mean", anyArg(), "running_mean");
  return pattern;
}

// add_(counter, 1): one step of a module's num_batches_tracked.
const Pattern& incrementPattern() {
  static const Pattern pattern =
      Pattern({"aten.add_.Tensor"}).arg("self", tensor(), "self").arg("other", intArg(1));
  return pattern;
}

bool isTracked(const Match& site) {
  const Argument* running_mean = site.tryArg("running_mean");
  return running_mean != nullptr && running_mean->tensor() != nullptr;
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
  const std::vector<std::string>& targets() const override { return batchNormPattern().targets(); }

  void collectSites(const Graph& graph, std::vector<Site>& sites,
                    SiteDetail detail) const override {
    for (const Match& m : matchAll(graph, batchNormPattern())) {
      sites.push_back(normSite(*m.root, isTracked(m), "training", detail));
    }
  }

  void apply(Rewriter& rewriter, Mode target, std::span<Site> sites,
             SwitchReport& report) const override {
    Graph& graph = rewriter.graph();
    const bool train = target == Mode::kTrain;
    const Site::State wanted = siteState(target);
    const std::string_view flag_before = flagText("training", !train);
    const std::string_view flag_after = flagText("training", train);
    // Find every site's increment first, against the unchanged graph; then rewrite.
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
      for (Value* candidate : known.counters) {
        const Node*& previous = previous_site[candidate->index()];
        if (increments.empty()) {
          increments = incrementsOf(*candidate, node, previous, incrementPattern());
          if (!increments.empty()) counter = candidate;
        }
        previous = &node;
      }
      if (site.state == wanted) continue;
      plan.push_back({&site, counter, std::move(increments)});
    }
    // Every candidate name of an increment below this one is taken (see incrementName).
    std::size_t names_taken_below = 0;
    for (const Planned& p : plan) {
      Node& node = rewriter.mutableNode(*p.site->node);
      rewriter.setInput(node, "training", rewriter.boolArg(train), p.site->flag_input);
      p.site->state = wanted;
      constexpr std::string_view kCounted = "training=True, num_batches_tracked += 1";
      std::string_view before = flag_before;
      std::string_view after = flag_after;
      if (!train && !p.increments.empty()) {
        // Last first: each one's output is read by the next.
        for (auto it = p.increments.rbegin(); it != p.increments.rend(); ++it) {
          Node& increment = **it;
          rewriter.replaceUses(*increment.output(), *increment.input("self")->arg.tensor());
          rewriter.eraseNode(increment);
        }
        before = kCounted;
      } else if (train && p.increments.empty() && p.counter != nullptr) {
        insertIncrement(rewriter, *p.site, node, *p.counter, names_taken_below);
        after = kCounted;
      }
      // Kept with the site: a switch does not change momentum.
      if (train && !p.site->momentum) p.site->momentum = numberArg(node, "momentum");
      report.changes.push_back(makeChange(rewriter, node, before, after));
    }
    graph.renumber();
  }

 private:
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
