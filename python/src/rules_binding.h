// exmode._core.Rules: a set of user rules (exmode/user_rules.h) for the Python package.
#pragma once

#include <nanobind/nanobind.h>

#include <memory>

#include "exmode/user_rules.h"

namespace exmode::python {

void bindRules(nanobind::module_& m);

// A copy of `rules` for a model or a host program to keep (null: none), so that adding to
// the Python object later does not change the rules a switch cache was made with.
std::unique_ptr<const UserRules> keptRules(const UserRules* rules);

}  // namespace exmode::python
