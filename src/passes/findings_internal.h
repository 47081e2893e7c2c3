// The two halves of the findings analysis (findings.cc), for switchMode, which keeps the
// structural half with a program's sites and computes the site half on every switch.
#pragma once

#include <span>
#include <vector>

#include "exmode/findings.h"

namespace exmode::passes {

// State no node reads, random ops outside every site, modules of a listed type: what the
// graph's shape says, which switches do not change. In graph order.
std::vector<Finding> structuralFindings(const Graph& graph, std::span<const Site> sites,
                                        const ModuleTypeRules& rules);

// What the sites' current states say (train-mode parameters never recorded, merged
// dropouts, inexact batch norms). Appends in the sites' order.
void siteFindings(const Graph& graph, std::span<const Site> sites, std::vector<Finding>& out);

// The custom-metadata key (remembered.h) a dropout switched from train to eval carries when
// its graph reads like a merged eval export (see siteFindings), so that switching it back
// is known to be exact.
inline constexpr std::string_view kFromTrainExport = "exmode_dropout_from_train";

// Whether a dropout's graph reads like an eval export that merged its input with its output:
// nothing reads the input after it, and the output has several readers.
bool looksMerged(const Graph& graph, const Node& dropout);

// What analyze() finds: the graph's own findings in graph order, then its regions'
// (regions.cc). `sites` are collectSites(program): the graph's and its regions'.
std::vector<Finding> programFindings(const Graph& graph, std::span<const Site> sites,
                                     const ModuleTypeRules& rules);

// Sorts findings by where their node is: placeholders first, then nodes in graph order.
void sortByGraphOrder(const Graph& graph, std::vector<Finding>& findings);

}  // namespace exmode::passes
