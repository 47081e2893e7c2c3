// exmode::Error as Python exceptions: one class per ErrorKind (exmode._errors).
#pragma once

#include <nanobind/nanobind.h>

namespace exmode::python {

// Looks the exception classes up in exmode._errors and registers the translator.
void registerErrors();

}  // namespace exmode::python
