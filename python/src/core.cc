// exmode._core: the C++ core for the exmode Python package (python/exmode/).
#include <nanobind/nanobind.h>

#include "errors.h"
#include "host_program.h"
#include "model_binding.h"
#include "rules_binding.h"

NB_MODULE(_core, m) {
  m.doc() = "exmode's C++ core: switch exported PyTorch programs (.pt2) between train and eval";
  m.attr("__version__") = EXMODE_VERSION;
  // A HostProgram lives on a GraphModule, which FX keeps in reference cycles (graph <->
  // owning module): such objects may still be alive when the interpreter shuts down, which
  // is no leak, and nanobind would warn of each at exit.
  nanobind::set_leak_warnings(false);
  exmode::python::registerErrors();
  exmode::python::bindRules(m);
  exmode::python::bindModel(m);
  exmode::python::bindHostProgram(m);
}
