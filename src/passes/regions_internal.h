// Running the mode passes inside nested graphs (regions.cc): the same passes, a Rewriter per
// graph, and the caller's operands kept one for one with each region's inputs.
#pragma once

#include <span>
#include <vector>

#include "exmode/findings.h"
#include "exmode/passes.h"
#include "exmode/user_rules.h"

namespace exmode::passes {

// Every region of `graph` and of its regions, depth first, in node order.
template <class G, class F>
void forEachRegion(G& graph, F f) {
  for (auto& region : graph.regions()) {
    f(region);
    forEachRegion(*region.graph, f);
  }
}

// Every pass's sites (the built-in ones and those of `rules`' op rules) of one graph at
// `detail`, in graph order, with pass and region set.
std::vector<Site> graphSites(const Graph& graph, SiteDetail detail,
                             const UserRules* rules = nullptr);

// The sites of `graph`'s regions (not its own), each region's in graph order, regions depth
// first.
std::vector<Site> regionSites(const Graph& graph, SiteDetail detail,
                              const UserRules* rules = nullptr);

// The sites of a graph and its regions, each region's sites placed at the node holding it.
std::vector<Site> allSites(const Graph& graph, SiteDetail detail,
                           const UserRules* rules = nullptr);

// Throws Error(kUnsupported) naming the node when a switch to `target` of these region sites
// is one torch would not export.
void refuseRegionSwitch(std::span<const Site> sites, const Graph& top, Mode target);

// What the regions' graphs say (structuralFindings and siteFindings of each), node names
// prefixed by the region's path; appended to `out` after what it holds. A module type
// already reported in `out` is not reported again.
void appendRegionFindings(const Graph& top, std::span<const Site> region_sites,
                          const ModuleTypeRules& rules, std::vector<Finding>& out);

// Switches the sites of every region of `program` to `target`, appending to `report`.
// `sites` are regionSites(program.graph(), SiteDetail::kState), taken before anything
// changed; their states are kept current.
void switchRegions(Program& program, Mode target, std::span<Site> sites, SwitchReport& report,
                   const UserRules* rules = nullptr);

}  // namespace exmode::passes
