#include "rules_binding.h"

#include <nanobind/stl/string.h>

#include <string>

namespace nb = nanobind;

namespace exmode::python {

std::unique_ptr<const UserRules> keptRules(const UserRules* rules) {
  if (rules == nullptr || rules->empty()) return nullptr;
  return std::make_unique<const UserRules>(*rules);
}

void bindRules(nb::module_& m) {
  nb::class_<UserRules>(m, "Rules", "User rules (docs/RULES.md)")
      .def(nb::init<>())
      .def(
          "add_file", [](UserRules& r, const std::string& path) { r.addFile(path); },
          nb::arg("path"))
      .def(
          "add_text",
          [](UserRules& r, const std::string& text, const std::string& source) {
            r.add(text, source);
          },
          nb::arg("text"), nb::arg("source"))
      .def(
          "add_rules", [](UserRules& r, const UserRules& other) { r.add(other); }, nb::arg("other"))
      .def("empty", &UserRules::empty)
      .def("text", &UserRules::text);
}

}  // namespace exmode::python
