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

// Modules of a decomposed program (verifier ATEN, run_decompositions()) that ran at export
// but left no node and hold no state: the decomposition erases a dropout that does nothing
// in the mode exported (in-place dropout, Dropout1d/2d/3d, AlphaDropout in eval), so such a
// module's other-mode forward is unknown; and the program as a whole, since a dropout in a
// module with other nodes leaves nothing. Appends, to-train, each without a node (the only
// unrecorded findings without one).
void erasedModuleFindings(const Program& program, std::vector<Finding>& out);
// Removes those findings when a site remembers a switch exmode made (an `exmode_` key in its
// custom metadata): such a program came from a train export, whose decomposition erases no
// dropout. siteFindings calls it: whether a site remembers changes with the switches.
void forgetErasuresIfSwitched(std::span<const Site> sites, std::vector<Finding>& findings);

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

// The module paths of an nn_module_stack text ("key,path,type;..."), outermost first.
void modulePaths(std::string_view stack, std::vector<std::string_view>& out);

// What analyze() finds: the graph's own findings in graph order, then its regions'
// (regions.cc). `sites` are collectSites(program): the graph's and its regions'.
std::vector<Finding> programFindings(const Graph& graph, std::span<const Site> sites,
                                     const ModuleTypeRules& rules);

// Sorts findings by where their node is: placeholders first, then nodes in graph order.
void sortByGraphOrder(const Graph& graph, std::vector<Finding>& findings);

}  // namespace exmode::passes
