// exmode._core: the C++ core for the exmode Python package (python/exmode/).
#include <nanobind/nanobind.h>

#include "errors.h"
#include "host_program.h"
#include "model_binding.h"

NB_MODULE(_core, m) {
  m.doc() = "exmode's C++ core: switch exported PyTorch programs (.pt2) between train and eval";
  m.attr("__version__") = EXMODE_VERSION;
  exmode::python::registerErrors();
  exmode::python::bindModel(m);
  exmode::python::bindHostProgram(m);
}
