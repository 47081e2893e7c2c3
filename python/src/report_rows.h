// What a switch or an inspection found, as the Python dicts both bindings return (the rows of
// `exmode inspect --json` and of a switch's report).
#pragma once

#include <nanobind/nanobind.h>

#include <optional>
#include <string>
#include <vector>

#include "exmode/findings.h"
#include "exmode/passes.h"

namespace exmode::python {

namespace nb = nanobind;

// Plain copies of a SwitchReport: Change holds views into the program's text, which must not
// outlive the lock they were made under.
struct ChangeRow {
  std::string node, op, module, before, after;
};
struct ReportRow {
  std::string program, before, after;
  std::vector<ChangeRow> changes;
  std::vector<Finding> warnings;
};
ReportRow reportRow(const SwitchReport& report);
nb::dict reportDict(const ReportRow& row);

// One program's sites and warnings, as `inspect --json` lists them.
struct SiteRow {
  std::string node, op, module, mode;
  std::optional<double> p, momentum, eps;
};
struct ProgramRow {
  std::string name, mode;
  std::vector<SiteRow> sites;
  std::vector<Finding> warnings;
};
ProgramRow programRow(const std::string& name, const Program& program, const ModuleTypeRules& rules,
                      const UserRules* user_rules);
nb::dict programDict(const ProgramRow& row);

nb::list findingList(const std::vector<Finding>& findings);
Mode parseMode(const std::string& mode);
inline nb::str text(std::string_view s) { return nb::str(s.data(), s.size()); }

}  // namespace exmode::python
