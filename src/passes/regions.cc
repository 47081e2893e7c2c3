// The mode passes inside nested graphs (torch.cond branches, no_grad and autocast regions,
// docs/EXPORT_IR.md "Nested regions"). Each region's graph is switched by the same passes
// as the program's own graph, with a Rewriter of its own. What a switch changes in a region
// is its nodes, except for batch norm's counter: a train-mode increment inside a region
// reads num_batches_tracked, which torch passes into the region as an operand of its own
// (first used, so listed where its first reader is), and an eval export does not pass it.
// So a switch to train passes the counter in (through every enclosing region), and a switch
// that leaves a region input unread removes it with its operand. torch.cond (and the other
// ops whose regions may not mutate their inputs) cannot hold a batch norm that updates its
// statistics: torch refuses to export one, and exmode refuses to make one.
#include <absl/container/flat_hash_set.h>

#include <algorithm>
#include <limits>
#include <string>

#include "exmode/error.h"
#include "exmode/rewrite.h"
#include "passes/findings_internal.h"
#include "passes/regions_internal.h"
#include "passes/user_rules_internal.h"

namespace exmode::passes {

namespace {

constexpr std::string_view kCounterSuffix = "num_batches_tracked";
constexpr std::string_view kRunningMean = "running_mean";

bool isTrackedBatchNorm(const Site& site) {
  return site.pass != nullptr && site.pass->name() == "batch_norm" &&
         site.state != Site::State::kFixed;
}

// The region a site's graph is, found by its path.
const Region* regionOf(const Graph& top, std::string_view path) {
  const Region* found = nullptr;
  forEachRegion(top, [&](const Region& r) {
    if (found == nullptr && r.path == path) found = &r;
  });
  return found;
}

// The earliest node order at which `value` is read; the largest order when nothing reads it.
std::size_t firstUse(const Value& value) {
  std::size_t first = std::numeric_limits<std::size_t>::max();
  for (const Node* user : value.users()) first = std::min(first, user->order());
  return first;
}

// The position of the program's graph input that a value of `graph` stands for, if any.
std::optional<std::size_t> topInputIndex(const Graph& graph, const Value* value) {
  const Graph* g = &graph;
  while (value != nullptr && g->region() != nullptr) {
    const Value* outer = nullptr;
    for (std::size_t i = 0; i < g->inputs().size(); ++i) {
      if (g->inputs()[i].tensor() == value) outer = g->operandOf(i);
    }
    value = outer;
    g = g->parent();
  }
  if (value == nullptr) return std::nullopt;
  for (std::size_t i = 0; i < g->inputs().size(); ++i) {
    if (g->inputs()[i].tensor() == value) return i;
  }
  return std::nullopt;
}

std::string argName(std::size_t k) { return "arg" + std::to_string(k) + "_1"; }

// The name torch would give a region input for `outer`: the caller's value's own name, or
// "arg<K>_1" (K: the program input it stands for) in regions whose inputs are named so
// (wrap_with_autocast bodies are).
std::string regionInputName(const Graph& region_graph, const Graph& parent, const Value& outer) {
  bool arg_style = false;
  for (const Argument& input : region_graph.inputs()) {
    const Value* v = input.tensor();
    if (v == nullptr) continue;
    if (auto k = topInputIndex(region_graph, v); k && v->name() == argName(*k)) arg_style = true;
  }
  std::string name(outer.name());
  if (arg_style) {
    if (auto k = topInputIndex(parent, &outer)) name = argName(*k);
  }
  return region_graph.tryGetValue(name) == nullptr ? name : region_graph.freshName(name);
}

// The value of `graph` holding buffer `name`: its own, or passed in from the program's
// graph through every region on the way (each gaining an input and its caller an operand,
// placed where the first reader, `reader`, puts it).
Value* passBufferIn(Program& program, Graph& graph, const std::string& name, const Node& reader) {
  if (Value* own = graph.bufferInput(name)) return own;
  if (graph.region() == nullptr) return nullptr;
  Region& region = const_cast<Region&>(*graph.region());
  Graph& parent = const_cast<Graph&>(*graph.parent());
  Value* outer = passBufferIn(program, parent, name, *region.owner);
  if (outer == nullptr || !rewrite::Rewriter::wrapsOperands(region)) return nullptr;
  std::size_t position = 0;
  for (const Argument& input : graph.inputs()) {
    const Value* v = input.tensor();
    if (v != nullptr && firstUse(*v) < reader.order()) ++position;
  }
  rewrite::Rewriter rewriter(program, parent);
  const RawJson input_name = rewriter.keep(regionInputName(graph, parent, *outer));
  return &rewriter.addRegionInput(region, position, *outer, input_name);
}

// The counter a batch norm site of a region counts on, by the names batch_norm.cc tries:
// "<module>.num_batches_tracked", then the one beside running_mean's buffer.
std::vector<std::string> counterNames(const Graph& graph, const Node& site) {
  std::vector<std::string> names;
  const std::string module = site.modulePath();
  if (!module.empty()) names.push_back(module + "." + std::string(kCounterSuffix));
  const NamedArgument* running_mean = site.input("running_mean");
  const SignatureSpec* spec =
      running_mean == nullptr ? nullptr : graph.inputSpecOf(running_mean->arg.tensor());
  if (spec != nullptr && spec->kind == "buffer" && spec->target.ends_with(kRunningMean)) {
    names.push_back(std::string(spec->target.substr(0, spec->target.size() - kRunningMean.size())) +
                    std::string(kCounterSuffix));
  }
  return names;
}

}  // namespace

std::vector<Site> graphSites(const Graph& graph, SiteDetail detail, const UserRules* rules) {
  std::vector<Site> sites;
  for (const ModePass* pass : passList(rules)) {
    const std::size_t first = sites.size();
    pass->collectSites(graph, sites, detail);
    for (std::size_t i = first; i < sites.size(); ++i) {
      sites[i].pass = pass;
      sites[i].region = regionPath(graph);
    }
  }
  std::stable_sort(sites.begin(), sites.end(),
                   [](const Site& a, const Site& b) { return a.node->order() < b.node->order(); });
  return sites;
}

std::vector<Site> regionSites(const Graph& graph, SiteDetail detail, const UserRules* rules) {
  std::vector<Site> sites;
  forEachRegion(graph, [&](const Region& r) {
    std::vector<Site> own = graphSites(*r.graph, detail, rules);
    sites.insert(sites.end(), own.begin(), own.end());
  });
  return sites;
}

std::vector<Site> allSites(const Graph& graph, SiteDetail detail, const UserRules* rules) {
  const std::vector<Site> own = graphSites(graph, detail, rules);
  std::vector<Site> out;
  std::size_t k = 0;
  for (const Region& region : graph.regions()) {
    while (k < own.size() && own[k].node->order() < region.owner->order()) out.push_back(own[k++]);
    std::vector<Site> inner = allSites(*region.graph, detail, rules);
    out.insert(out.end(), inner.begin(), inner.end());
  }
  out.insert(out.end(), own.begin() + static_cast<std::ptrdiff_t>(k), own.end());
  return out;
}

void refuseRegionSwitch(std::span<const Site> sites, const Graph& top, Mode target) {
  const Site::State wanted = target == Mode::kTrain ? Site::State::kTrain : Site::State::kEval;
  for (const Site& site : sites) {
    // The functional IR's batch norm ties its statistics to graph outputs of the program;
    // torch writes none in a region (run_decompositions() inlines no_grad and autocast
    // regions, and a cond branch cannot hold one in train), and a region has no signature.
    if (site.pass != nullptr && site.pass->name() == "batch_norm_functional" &&
        site.state != Site::State::kFixed && site.state != wanted) {
      throw Error(ErrorKind::kUnsupported,
                  "node '" + std::string(site.region) + std::string(site.node->name()) + "' (" +
                      std::string(shortTarget(site.node->target())) +
                      ") is a functional-IR batch norm inside a nested graph, whose statistics "
                      "updates would have to leave the region as program outputs: torch.export "
                      "writes none there, and exmode does not switch it");
    }
    if (!isTrackedBatchNorm(site) || site.state == wanted) continue;
    // A train-mode batch norm updates its buffers in place: only regions whose op lets its
    // body mutate what it is passed may hold one. Such a site is switched neither way (a
    // hand-made train program of that form switched to eval could not come back).
    for (const Region* r = regionOf(top, site.region); r != nullptr;
         r = r->graph->parent()->region()) {
      if (rewrite::Rewriter::wrapsOperands(*r)) continue;
      throw Error(ErrorKind::kUnsupported,
                  "node '" + std::string(site.region) + std::string(site.node->name()) + "' (" +
                      std::string(shortTarget(site.node->target())) +
                      ") is a batch norm with running statistics inside "
                      "a nested graph of '" +
                      std::string(r->owner->name()) + "' (" +
                      std::string(shortTarget(r->owner->target())) +
                      "), and in train mode it would update its buffers there: torch.export "
                      "refuses that (\"Higher order ops do not support input mutation\"), so "
                      "exmode does not switch it " +
                      (target == Mode::kTrain ? "to train" : "from train either"));
    }
  }
}

void appendRegionFindings(const Graph& top, std::span<const Site> region_sites,
                          const ModuleTypeRules& rules, std::vector<Finding>& out) {
  absl::flat_hash_set<std::string> modules;
  for (const Finding& f : out) {
    if (f.kind == Finding::Kind::kModeDependentModule) modules.insert(f.module);
  }
  forEachRegion(top, [&](const Region& r) {
    std::vector<Site> own;
    for (const Site& s : region_sites) {
      if (s.region == r.path) own.push_back(s);
    }
    std::vector<Finding> found = structuralFindings(*r.graph, own, rules);
    siteFindings(*r.graph, own, found);
    sortByGraphOrder(*r.graph, found);
    for (Finding& f : found) {
      if (f.kind == Finding::Kind::kModeDependentModule && !modules.insert(f.module).second) {
        continue;
      }
      f.node = r.path + f.node;
      out.push_back(std::move(f));
    }
  });
}

void switchRegions(Program& program, Mode target, std::span<Site> sites, SwitchReport& report,
                   const UserRules* rules) {
  Graph& top = program.graph();
  std::vector<Region*> regions;  // depth first: parents before their regions
  forEachRegion(top, [&](Region& r) { regions.push_back(&r); });
  if (regions.empty()) return;
  // Which inputs of each region were read before the switch: one the switch leaves unread
  // goes, with its operand, as torch's export in the target mode has none.
  std::vector<absl::flat_hash_set<const Value*>> read(regions.size());
  for (std::size_t i = 0; i < regions.size(); ++i) {
    for (const Argument& input : regions[i]->graph->inputs()) {
      const Value* v = input.tensor();
      if (v != nullptr && !v->users().empty()) read[i].insert(v);
    }
  }
  // Counters into the regions whose batch norms go to train.
  if (target == Mode::kTrain) {
    for (const Site& site : sites) {
      if (!isTrackedBatchNorm(site) || site.state == Site::State::kTrain) continue;
      Graph& graph = *const_cast<Region*>(regionOf(top, site.region))->graph;
      const std::vector<std::string> names = counterNames(graph, *site.node);
      if (std::any_of(names.begin(), names.end(),
                      [&](const std::string& n) { return graph.bufferInput(n) != nullptr; })) {
        continue;
      }
      for (const std::string& name : names) {
        if (top.bufferInput(name) != nullptr && passBufferIn(program, graph, name, *site.node)) {
          break;
        }
      }
    }
  }
  // The passes, region by region, each on its own sites.
  const std::vector<const ModePass*> passes = passList(rules);
  for (Region* region : regions) {
    Graph& graph = *region->graph;
    rewrite::Rewriter rewriter(program, graph);
    const std::size_t first_change = report.changes.size();
    for (const ModePass* pass : passes) {
      std::vector<Site*> mine;
      std::vector<Site> own;
      for (Site& s : sites) {
        if (s.pass == pass && s.region == region->path) {
          mine.push_back(&s);
          own.push_back(s);
        }
      }
      if (own.empty()) continue;
      pass->apply(rewriter, target, own, report);
      for (std::size_t i = 0; i < own.size(); ++i) *mine[i] = own[i];
    }
    graph.renumber();
    for (std::size_t i = first_change; i < report.changes.size(); ++i) {
      Change& c = report.changes[i];
      c.node = program.keep(region->path + std::string(c.node));
    }
  }
  // Inputs left unread, innermost regions first (an operand a region no longer needs may be
  // all its enclosing region read that input for).
  for (std::size_t i = regions.size(); i-- > 0;) {
    Region& region = *regions[i];
    if (!rewrite::Rewriter::wrapsOperands(region)) continue;
    Graph& graph = *region.graph;
    rewrite::Rewriter parent(program, const_cast<Graph&>(*graph.parent()));
    for (std::size_t k = graph.inputs().size(); k-- > 0;) {
      const Value* v = graph.inputs()[k].tensor();
      if (v == nullptr || !v->users().empty() || !read[i].contains(v)) continue;
      const bool output = std::any_of(graph.outputs().begin(), graph.outputs().end(),
                                      [&](const Argument& o) { return o.tensor() == v; });
      if (!output) parent.removeRegionInput(region, k);
    }
  }
  for (Region* region : regions) region->graph->releaseErased();
}

}  // namespace exmode::passes

namespace exmode::passes {

std::vector<Finding> programFindings(const Graph& graph, std::span<const Site> sites,
                                     const ModuleTypeRules& rules) {
  std::vector<Site> own;
  std::vector<Site> inner;
  for (const Site& s : sites) (s.region.empty() ? own : inner).push_back(s);
  std::vector<Finding> findings = structuralFindings(graph, own, rules);
  siteFindings(graph, own, findings);
  sortByGraphOrder(graph, findings);
  appendRegionFindings(graph, inner, rules, findings);
  return findings;
}

}  // namespace exmode::passes
