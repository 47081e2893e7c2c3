// exmode::Model for Python: the archive, the module type rules it switches with, and (for
// an archive given as bytes) the memory file that holds it.
#pragma once

#include <nanobind/nanobind.h>

namespace exmode::python {

void bindModel(nanobind::module_& m);

}  // namespace exmode::python
