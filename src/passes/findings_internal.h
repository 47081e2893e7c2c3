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

}  // namespace exmode::passes
