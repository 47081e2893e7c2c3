#include "report_rows.h"

#include <nanobind/stl/string.h>

#include "exmode/error.h"

namespace exmode::python {

namespace {

nb::dict findingDict(const Finding& f) {
  nb::dict d;
  d["kind"] = text(findingKindName(f.kind));
  d["when"] = text(findingWhenName(f.when));
  d["node"] = text(f.node);
  d["op"] = text(f.op);
  d["module"] = text(f.module);
  d["module_type"] = text(f.module_type);
  d["reason"] = text(f.reason);
  return d;
}

}  // namespace

nb::list findingList(const std::vector<Finding>& findings) {
  nb::list out;
  for (const Finding& f : findings) out.append(findingDict(f));
  return out;
}

Mode parseMode(const std::string& mode) {
  if (mode == "train") return Mode::kTrain;
  if (mode == "eval") return Mode::kEval;
  throw Error(ErrorKind::kUsage, "mode must be \"train\" or \"eval\", not \"" + mode + "\"");
}

ReportRow reportRow(const SwitchReport& report) {
  ReportRow row{report.program,
                std::string(programModeName(report.before)),
                std::string(programModeName(report.after)),
                {},
                report.warnings};
  for (const Change& c : report.changes) {
    row.changes.push_back({std::string(c.node), std::string(c.op), std::string(c.module),
                           std::string(c.before), std::string(c.after)});
  }
  return row;
}

nb::dict reportDict(const ReportRow& row) {
  nb::list changes;
  for (const ChangeRow& c : row.changes) {
    nb::dict d;
    d["node"] = c.node;
    d["op"] = c.op;
    d["module"] = c.module;
    d["before"] = c.before;
    d["after"] = c.after;
    changes.append(d);
  }
  nb::dict report;
  report["program"] = row.program;
  report["before"] = row.before;
  report["after"] = row.after;
  report["changes"] = changes;
  report["warnings"] = findingList(row.warnings);
  return report;
}

ProgramRow programRow(const std::string& name, const Program& program, const ModuleTypeRules& rules,
                      const UserRules* user_rules) {
  const std::vector<Site> sites = collectSites(program, user_rules);
  ProgramRow row{
      name, std::string(programModeName(detectMode(sites))), {}, analyze(program, sites, rules)};
  for (const Site& s : sites) {
    row.sites.push_back({std::string(s.region) + std::string(s.node->name()),
                         std::string(shortTarget(s.node->target())), s.node->modulePath(),
                         std::string(siteStateName(s.state)), s.p, s.momentum, s.eps});
  }
  return row;
}

nb::dict programDict(const ProgramRow& row) {
  nb::list sites;
  for (const SiteRow& s : row.sites) {
    nb::dict d;
    d["node"] = s.node;
    d["op"] = s.op;
    d["module"] = s.module;
    d["mode"] = s.mode;
    if (s.p) d["p"] = *s.p;
    if (s.momentum) d["momentum"] = *s.momentum;
    if (s.eps) d["eps"] = *s.eps;
    sites.append(d);
  }
  nb::dict program;
  program["name"] = row.name;
  program["mode"] = row.mode;
  program["sites"] = sites;
  program["warnings"] = findingList(row.warnings);
  return program;
}

}  // namespace exmode::python
