// exmode._core.HostProgram: the passes for a graph that is not an archive (python/exmode/torch).
#pragma once

#include <nanobind/nanobind.h>

namespace exmode::python {

void bindHostProgram(nanobind::module_& m);

}  // namespace exmode::python
