#include "errors.h"

#include <exception>

#include "exmode/error.h"

namespace nb = nanobind;

namespace exmode::python {

namespace {

// Indexed by ErrorKind's value (the exit status). Owned references, kept for the life of the
// process: the translator may run while the interpreter shuts down.
PyObject* error_classes[7] = {};

PyObject* classFor(ErrorKind kind) {
  const int index = static_cast<int>(kind);
  if (index >= 2 && index <= 6 && error_classes[index] != nullptr) return error_classes[index];
  return error_classes[1];
}

}  // namespace

void registerErrors() {
  nb::module_ errors = nb::module_::import_("exmode._errors");
  const std::pair<int, const char*> names[] = {
      {1, "Error"},           {2, "UsageError"},       {3, "BadArchiveError"},
      {4, "BadProgramError"}, {5, "UnsupportedError"}, {6, "ExmodeIOError"}};
  for (const auto& [index, name] : names) {
    error_classes[index] = nb::object(errors.attr(name)).release().ptr();
  }
  nb::register_exception_translator([](const std::exception_ptr& error, void*) {
    try {
      std::rethrow_exception(error);
    } catch (const Error& e) {
      PyErr_SetString(classFor(e.kind()), e.what());
    }
  });
}

}  // namespace exmode::python
