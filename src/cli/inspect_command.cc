// `exmode inspect IN [--json]`: one line per mode-sensitive site, then the program's mode.
#include <iostream>
#include <string>

#include "cli/child_runner.h"
#include "cli/commands.h"
#include "cli/progress_line.h"
#include "exmode/model.h"
#include "exmode/pattern.h"
#include "program/json_text.h"

namespace exmode::cli {

void addInspectCommand(CLI::App& app, InspectOptions& options) {
  CLI::App* command = app.add_subcommand("inspect", "List the mode-sensitive sites and the mode");
  command->add_option("input", options.inputs, "PT2 archives to read (one or many)")->required();
  command->add_flag("--json", options.json, "Print JSON instead of text");
  addModuleTypesOption(*command, options.module_types);
  addRulesOption(*command, options.rules);
  addLimitOptions(*command, options.limits);
}

namespace {

std::string number(double value) {
  std::string text;
  json::appendDouble(text, value);
  return text;
}

void printText(const std::string& name, const std::vector<Site>& sites,
               const std::vector<Finding>& findings) {
  for (const Site& s : sites) {
    const std::string module = s.node->modulePath();
    std::cout << s.region << s.node->name() << "  " << shortTarget(s.node->target()) << "  "
              << (module.empty() ? "<root>" : module) << "  " << siteStateName(s.state);
    if (s.p) std::cout << "  p=" << number(*s.p);
    if (s.momentum) std::cout << "  momentum=" << number(*s.momentum);
    if (s.eps) std::cout << "  eps=" << number(*s.eps);
    std::cout << "\n";
  }
  for (const Finding& f : findings) {
    std::cout << "warning (" << findingWhenName(f.when) << "): " << warningLine(f) << "\n";
  }
  std::cout << name << ": mode " << programModeName(detectMode(sites)) << " (" << sites.size()
            << (sites.size() == 1 ? " site" : " sites");
  if (!findings.empty()) {
    std::cout << ", " << findings.size() << (findings.size() == 1 ? " warning" : " warnings");
  }
  std::cout << ")\n";
}

void appendFindingJson(std::string& out, const Finding& f) {
  const std::pair<const char*, std::string_view> fields[] = {{"kind", findingKindName(f.kind)},
                                                             {"when", findingWhenName(f.when)},
                                                             {"node", f.node},
                                                             {"op", f.op},
                                                             {"module", f.module},
                                                             {"module_type", f.module_type},
                                                             {"reason", f.reason}};
  out += "{";
  bool first = true;
  for (const auto& [key, value] : fields) {
    if (!first) out += ", ";
    first = false;
    json::appendString(out, key);
    out += ": ";
    json::appendString(out, value);
  }
  out += "}";
}

void appendSiteJson(std::string& out, const Site& s) {
  out += "{\"node\": ";
  json::appendString(out, std::string(s.region) + std::string(s.node->name()));
  out += ", \"op\": ";
  json::appendString(out, shortTarget(s.node->target()));
  out += ", \"module\": ";
  json::appendString(out, s.node->modulePath());
  out += ", \"mode\": ";
  json::appendString(out, siteStateName(s.state));
  const std::pair<const char*, std::optional<double>> numbers[] = {
      {"p", s.p}, {"momentum", s.momentum}, {"eps", s.eps}};
  for (const auto& [key, value] : numbers) {
    if (!value) continue;
    out += ", ";
    json::appendString(out, key);
    out += ": ";
    json::appendDouble(out, *value);
  }
  out += "}";
}

int inspectFile(const InspectOptions& options, const ModuleTypeRules& rules,
                const UserRules& user_rules, const std::string& input) {
  auto model = Model::open(input, options.limits);
  std::string out = "{\"file\": ";
  json::appendString(out, input);
  out += ", \"programs\": [";
  bool first_program = true;
  for (const std::string& name : model->programNames()) {
    const std::vector<Site> sites = collectSites(model->program(name), &user_rules);
    const std::vector<Finding> findings = analyze(model->program(name), sites, rules);
    if (!options.json) {
      printText(name, sites, findings);
      continue;
    }
    if (!first_program) out += ", ";
    first_program = false;
    out += "{\"name\": ";
    json::appendString(out, name);
    out += ", \"mode\": ";
    json::appendString(out, programModeName(detectMode(sites)));
    out += ", \"sites\": [";
    for (std::size_t i = 0; i < sites.size(); ++i) {
      if (i > 0) out += ", ";
      appendSiteJson(out, sites[i]);
    }
    out += "], \"warnings\": [";
    for (std::size_t i = 0; i < findings.size(); ++i) {
      if (i > 0) out += ", ";
      appendFindingJson(out, findings[i]);
    }
    out += "]}";
  }
  if (options.json) std::cout << out << "]}\n";
  return 0;
}

}  // namespace

int runInspect(const InspectOptions& options) {
  const ModuleTypeRules rules = moduleTypeRules(options.module_types);
  const UserRules user_rules = userRules(options.rules);
  const std::vector<std::string>& inputs = options.inputs;
  if (inputs.size() == 1) return inspectFile(options, rules, user_rules, inputs[0]);
  // Many files: each read in a child, as the switches are (child_runner.h), and printed whole in
  // the order given: text under a `==> IN <==` line, JSON as one document per line.
  ProgressLine progress(true);
  int status = 0;
  auto task = [&](std::size_t i, unsigned char&) {
    return reportingErrors([&] { return inspectFile(options, rules, user_rules, inputs[i]); },
                           inputs[i]);
  };
  auto finished = [&](std::size_t i, ChildResult& result) {
    progress.clear();
    status = worseStatus(status, childOutcome(inputs[i], result));
    if (!options.json && !result.out.empty()) std::cout << "==> " << inputs[i] << " <==\n";
    std::cout << result.out << std::flush;
    std::cerr << result.err << std::flush;
  };
  auto advance = [&](std::size_t, std::size_t next) {
    if (next < inputs.size()) progress.show(next, inputs.size(), inputs[next]);
  };
  progress.show(0, inputs.size(), inputs[0]);
  runChildren(inputs.size(), 1, task, finished, advance);
  return status;
}

}  // namespace exmode::cli
