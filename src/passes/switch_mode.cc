// Running the mode passes over a program: site collection, mode detection, the switch.
#include <algorithm>

#include "exmode/error.h"
#include "exmode/findings.h"
#include "exmode/passes.h"
#include "exmode/pattern.h"
#include "passes/findings_internal.h"
#include "passes/regions_internal.h"
#include "passes/user_rules_internal.h"

namespace exmode {

std::string_view modeName(Mode mode) { return mode == Mode::kTrain ? "train" : "eval"; }

std::string_view programModeName(ProgramMode mode) {
  switch (mode) {
    case ProgramMode::kTrain:
      return "train";
    case ProgramMode::kEval:
      return "eval";
    case ProgramMode::kMixed:
      return "mixed";
    case ProgramMode::kNone:
      return "none";
  }
  return "none";
}

std::string_view siteStateName(Site::State state) {
  switch (state) {
    case Site::State::kTrain:
      return "train";
    case Site::State::kEval:
      return "eval";
    case Site::State::kFixed:
      return "fixed";
  }
  return "fixed";
}

std::vector<Site> collectSites(const Graph& graph, const UserRules* rules) {
  std::vector<Site> sites;
  for (const ModePass* pass : passes::passList(rules)) {
    const std::size_t first = sites.size();
    pass->collectSites(graph, sites, SiteDetail::kFull);
    for (std::size_t i = first; i < sites.size(); ++i) sites[i].pass = pass;
  }
  if (rules != nullptr) passes::applyAttentionRules(*rules, sites);
  std::stable_sort(sites.begin(), sites.end(),
                   [](const Site& a, const Site& b) { return a.node->order() < b.node->order(); });
  return sites;
}

ProgramMode detectMode(const std::vector<Site>& sites) {
  bool any_train = false;
  bool any_eval = false;
  for (const Site& site : sites) {
    any_train = any_train || site.state == Site::State::kTrain;
    any_eval = any_eval || site.state == Site::State::kEval;
  }
  if (any_train && any_eval) return ProgramMode::kMixed;
  if (any_train) return ProgramMode::kTrain;
  if (any_eval) return ProgramMode::kEval;
  return ProgramMode::kNone;
}

namespace {

// Passes report problems by node; the error a user sees names the file as well.
template <class F>
auto namingTheProgram(const Program& program, F f) {
  try {
    return f();
  } catch (const Error& e) {
    throw Error(e.kind(), program.sourceName() + ": " + e.what());
  }
}

// Passes run one after the other, each reporting its changes in graph order; the report
// reads in graph order. `runs` holds where each pass's changes start. Sites are never
// erased by a switch, so every change's node is still in the graph.
void mergeByGraphOrder(std::vector<Change>& changes, const std::vector<std::size_t>& runs) {
  // The runs are merged as (order, position) keys, each node's order read once, and the
  // changes then moved into place: merging the changes themselves moved large records and
  // read a node per comparison.
  const std::size_t n = changes.size();
  std::vector<std::pair<std::size_t, std::size_t>> keys(n);
  for (std::size_t i = 0; i < n; ++i) keys[i] = {changes[i].site->order(), i};
  auto at = [&](std::size_t i) { return keys.begin() + static_cast<std::ptrdiff_t>(i); };
  // [0, runs[k]) is sorted; merge the next run into it.
  bool moved = false;
  for (std::size_t k = 1; k < runs.size(); ++k) {
    const std::size_t end = k + 1 < runs.size() ? runs[k + 1] : n;
    const std::size_t middle = runs[k];
    if (middle == 0 || middle == end) continue;
    if (keys[middle] > keys[middle - 1]) continue;  // already in order
    std::inplace_merge(keys.begin(), at(middle), at(end));
    moved = true;
  }
  if (!moved) return;
  // Position j takes the change at keys[j].second: follow each cycle of that permutation.
  for (std::size_t i = 0; i < n; ++i) {
    if (keys[i].second == i) continue;
    Change held = std::move(changes[i]);
    std::size_t j = i;
    for (;;) {
      const std::size_t from = keys[j].second;
      keys[j].second = j;
      if (from == i) {
        changes[j] = std::move(held);
        break;
      }
      changes[j] = std::move(changes[from]);
      j = from;
    }
  }
}

// Nested graphs exmode keeps verbatim (not read as regions) are not switched: a
// mode-sensitive op inside one makes the program unsupported rather than silently
// half-switched.
void refuseNestedSites(const Graph& graph, const UserRules* rules) {
  const std::vector<const ModePass*> all = passes::passList(rules);
  for (const NestedNode& nested : graph.nestedNodes()) {
    for (const ModePass* pass : all) {
      const auto& targets = pass->targets();
      if (std::find(targets.begin(), targets.end(), nested.target) == targets.end()) continue;
      throw Error(ErrorKind::kUnsupported,
                  "node '" + std::string(nested.owner->name()) + "' (" +
                      std::string(shortTarget(nested.owner->target())) +
                      ") holds a nested graph with " + std::string(shortTarget(nested.target)) +
                      " kept as it is (not a complete graph with inputs, outputs, nodes and "
                      "tensor_values, as a module's FX graph is written), and exmode does not "
                      "switch inside it: save the program (torch.export.save) and switch the "
                      "file");
    }
  }
}

// A host replaying the passes' edits on its own graph (rewrite::Listener) hears of changes
// to the program's graph only.
void refuseRegionSitesForHost(std::span<const Site> region_sites) {
  if (region_sites.empty()) return;
  const Site& site = region_sites.front();
  throw Error(ErrorKind::kUnsupported,
              "node '" + std::string(site.region) + std::string(site.node->name()) + "' (" +
                  std::string(shortTarget(site.node->target())) +
                  ") is inside a nested graph, and switching a module's FX graph does not reach "
                  "into nested graphs: save the program (torch.export.save) and switch the "
                  "file");
}

}  // namespace

std::vector<Site> collectSites(const Program& program, const UserRules* rules) {
  return namingTheProgram(program, [&] {
    refuseNestedSites(program.graph(), rules);
    std::vector<Site> sites = passes::allSites(program.graph(), SiteDetail::kFull, rules);
    if (rules != nullptr) passes::applyAttentionRules(*rules, sites);
    return sites;
  });
}

namespace {

// Every pass's sites at SiteDetail::kState, pass after pass, and where each pass's start.
void collectPassSites(const Program& program, std::span<const ModePass* const> pass_list,
                      const UserRules* rules, std::vector<Site>& sites,
                      std::vector<std::size_t>& pass_sites) {
  refuseNestedSites(program.graph(), rules);
  for (const ModePass* pass : pass_list) {
    const std::size_t first = sites.size();
    pass_sites.push_back(first);
    pass->collectSites(program.graph(), sites, SiteDetail::kState);
    for (std::size_t i = first; i < sites.size(); ++i) sites[i].pass = pass;
  }
  pass_sites.push_back(sites.size());
}

}  // namespace

SwitchReport switchMode(Program& program, Mode target, std::string program_name, SwitchCache* cache,
                        const ModuleTypeRules* rules, rewrite::Listener* listener,
                        const UserRules* user_rules) {
  if (rules == nullptr) rules = &ModuleTypeRules::builtIn();
  const std::vector<const ModePass*> all_passes = passes::passList(user_rules);
  return namingTheProgram(program, [&] {
    SwitchReport report;
    report.program = std::move(program_name);
    // Every site's state first, before anything changes: a node a pass cannot switch
    // throws here, leaving the program untouched. Graph order does not matter for the mode.
    std::vector<Site> sites;
    std::vector<std::size_t> pass_sites;  // where each pass's sites start
    std::vector<Finding> structural;
    bool structural_known = false;
    Graph& graph = program.graph();
    if (cache != nullptr && cache->graph_id == graph.id() && cache->version == graph.version() &&
        cache->user_rules == user_rules) {
      sites = std::move(cache->sites);
      pass_sites = std::move(cache->pass_sites);
      if (cache->rules == rules) {
        structural = std::move(cache->structural);
        structural_known = true;
      }
    } else {
      collectPassSites(program, all_passes, user_rules, sites, pass_sites);
      if (user_rules != nullptr) passes::applyAttentionRules(*user_rules, sites);
    }
    // Kept again only once this switch is through: one that throws half-way leaves none.
    if (cache != nullptr) *cache = {};
    // Regions' sites are collected on every switch (regions are small), and checked before
    // anything changes.
    std::vector<Site> region_sites = passes::regionSites(graph, SiteDetail::kState, user_rules);
    if (listener != nullptr) refuseRegionSitesForHost(region_sites);
    passes::refuseRegionSwitch(region_sites, graph, target);
    {
      std::vector<Site> all = sites;
      all.insert(all.end(), region_sites.begin(), region_sites.end());
      report.before = detectMode(all);
    }
    // What this switch cannot make exact, found before anything changes. A program already
    // in the target mode is the export itself: nothing to report, nothing to find.
    if (!alreadyIn(report.before, target)) {
      if (!structural_known) {
        structural = passes::structuralFindings(graph, sites, *rules);
        passes::erasedModuleFindings(program, structural);
        structural_known = true;
      }
      std::vector<Finding> found = structural;
      passes::siteFindings(graph, sites, found);
      passes::sortByGraphOrder(graph, found);
      passes::appendRegionFindings(graph, region_sites, *rules, found);
      report.warnings = findingsForSwitch(found, report.before, target);
    }
    rewrite::Rewriter rewriter(program);
    rewriter.setListener(listener);
    std::vector<std::size_t> runs;
    report.changes.reserve(sites.size());
    for (std::size_t i = 0; i < all_passes.size(); ++i) {
      runs.push_back(report.changes.size());
      const std::span<Site> own(sites.data() + pass_sites[i], pass_sites[i + 1] - pass_sites[i]);
      all_passes[i]->apply(rewriter, target, own, report);
    }
    if (user_rules != nullptr && !user_rules->attentionDropoutRules().empty()) {
      runs.push_back(report.changes.size());
      passes::writeRuleP(rewriter, target, sites, report);
    }
    graph.renumber();
    graph.releaseErased();
    mergeByGraphOrder(report.changes, runs);
    // Then the regions, their changes after the graph's own.
    passes::switchRegions(program, target, region_sites, report, user_rules);
    // The mode reached: each pass set the state of every site it moved. Matching the whole
    // graph again would cost as much as the switch; the passes' tests check that what they
    // report is what they did.
    {
      std::vector<Site> all = sites;
      all.insert(all.end(), region_sites.begin(), region_sites.end());
      report.after = detectMode(all);
    }
    if (cache != nullptr) {
      *cache = {.graph_id = graph.id(),
                .version = graph.version(),
                .sites = std::move(sites),
                .pass_sites = std::move(pass_sites),
                .structural = structural_known ? std::move(structural) : std::vector<Finding>{},
                .rules = structural_known ? rules : nullptr,
                .user_rules = user_rules};
    }
    return report;
  });
}

}  // namespace exmode
