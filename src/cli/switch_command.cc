// `exmode eval|train IN (-o OUT | --in-place) [--sync]`: switch every program, report each
// change.
#include <iostream>

#include "cli/commands.h"
#include "exmode/error.h"
#include "exmode/model.h"

// GCC defines __SANITIZE_ADDRESS__ under -fsanitize=address; clang 14 only answers
// __has_feature(address_sanitizer).
#if defined(__SANITIZE_ADDRESS__)
#define EXMODE_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define EXMODE_SANITIZED 1
#endif
#endif
#ifndef EXMODE_SANITIZED
#define EXMODE_SANITIZED 0
#endif

namespace exmode::cli {

void addLimitOptions(CLI::App& command, ReadLimits& limits) {
  command
      .add_option("--max-program-bytes", limits.max_json_bytes,
                  "Refuse programs with more JSON than this")
      ->capture_default_str();
  command.add_option("--max-nodes", limits.max_nodes, "Refuse graphs with more nodes")
      ->capture_default_str();
  command.add_option("--max-depth", limits.max_depth, "Refuse JSON nested deeper")
      ->check(CLI::Range(1, 100000))
      ->capture_default_str();
}

void addModuleTypesOption(CLI::App& command, std::vector<std::string>& files) {
  command.add_option("--module-types", files,
                     "Also read this list of mode-dependent module types (repeatable; format: "
                     "data/mode_dependent_modules.txt)");
}

void addRulesOption(CLI::App& command, std::vector<std::string>& files) {
  command.add_option("--rules", files,
                     "Also switch by the rules of this file (repeatable; format: docs/RULES.md)");
}

UserRules userRules(const std::vector<std::string>& files) {
  UserRules rules;
  for (const std::string& file : files) rules.addFile(file);
  return rules;
}

ModuleTypeRules moduleTypeRules(const std::vector<std::string>& files) {
  ModuleTypeRules rules = ModuleTypeRules::builtIn();
  for (const std::string& file : files) rules.addFile(file);
  return rules;
}

std::string warningLine(const Finding& f) {
  std::string line = f.node;
  line += "  ";
  line += f.op.empty() ? "-" : f.op;
  line += "  ";
  line += f.module.empty() ? "<root>" : f.module;
  if (!f.module_type.empty()) line += " (" + f.module_type + ")";
  line += "  ";
  line += findingKindName(f.kind);
  line += ": ";
  line += f.reason;
  return line;
}

void addSwitchCommand(CLI::App& app, const std::string& name, const std::string& description,
                      SwitchOptions& options) {
  CLI::App* command = app.add_subcommand(name, description);
  command->add_option("input", options.inputs, "PT2 archives to read (one or many)")->required();
  auto* output = command->add_option(
      "-o,--output", options.output,
      "Archive to write; with several inputs, or ending in /, an existing directory to write "
      "DIR/<input name> into");
  auto* in_place = command->add_flag("--in-place", options.in_place, "Replace each input archive");
  command
      ->add_option("-j,--jobs", options.jobs,
                   "Switch this many files at once (several inputs; 0: one per CPU)")
      ->check(CLI::Range(0, 1024))
      ->capture_default_str();
  output->excludes(in_place);
  command->add_flag("--sync", options.sync,
                    "Flush OUT to disk (fsync) before exiting; --in-place always does");
  command->add_flag("-q,--quiet", options.quiet,
                    "Print only errors (and, with several inputs, the final count)");
  command->add_flag("--strict", options.strict,
                    "Fail (exit 5, nothing written) when the switch cannot be exact (a warning)");
  addModuleTypesOption(*command, options.module_types);
  addRulesOption(*command, options.rules);
  addLimitOptions(*command, options.limits);
  command->callback([command, output, in_place] {
    if (output->count() == 0 && in_place->count() == 0) {
      throw CLI::ValidationError(command->get_name() + ": give -o OUT or --in-place");
    }
  });
}

namespace {

// One archive, as the tool has always switched it: every change, warning and program.
int switchFile(Mode target, const SwitchOptions& options, const ModuleTypeRules& rules,
               const UserRules& user_rules, const std::string& input, const std::string& output) {
  auto model = Model::open(input, options.limits);
  model->setModuleTypeRules(&rules);
  model->setUserRules(&user_rules);
  const std::vector<SwitchReport> reports = target == Mode::kTrain ? model->train() : model->eval();
  std::size_t warnings = 0;
  for (const SwitchReport& report : reports) warnings += report.warnings.size();
  if (!options.quiet) {
    for (const SwitchReport& report : reports) {
      for (const Change& c : report.changes) {
        std::cout << "  " << c.node << "  " << c.op << "  "
                  << (c.module.empty() ? "<root>" : c.module) << "  " << c.before << " -> "
                  << c.after << "\n";
      }
      for (const Finding& f : report.warnings) std::cout << "  warning: " << warningLine(f) << "\n";
      const std::size_t n = report.warnings.size();
      const std::string warned =
          n == 0 ? "" : std::to_string(n) + (n == 1 ? " warning" : " warnings");
      if (report.changes.empty() && report.before == ProgramMode::kNone) {
        std::cout << report.program << ": no mode-sensitive site; nothing changed"
                  << (warned.empty() ? "" : " (" + warned + ")") << "\n";
      } else if (report.changes.empty()) {
        std::cout << report.program << ": already in " << modeName(target)
                  << " mode; nothing changed" << (warned.empty() ? "" : " (" + warned + ")")
                  << "\n";
      } else {
        std::cout << report.program << ": " << programModeName(report.before) << " -> "
                  << programModeName(report.after) << " (" << report.changes.size()
                  << (report.changes.size() == 1 ? " change" : " changes")
                  << (warned.empty() ? "" : ", " + warned) << ")\n";
      }
    }
  }
  if (options.strict && warnings > 0) {
    throw Error(ErrorKind::kUnsupported,
                input + ": --strict: the switch to " + std::string(modeName(target)) +
                    " cannot be exact (" + std::to_string(warnings) +
                    (warnings == 1 ? " warning" : " warnings") + "); nothing written");
  }
  // Both write a temporary file and rename it, so the target is never half written. An
  // in-place switch replaces what may be the only copy, so it is also made durable; a new
  // file is left to the kernel's write-back, as cp and torch.export.save leave it.
  if (options.in_place) {
    if (model->modified()) model->save(input, {.sync = true});
  } else {
    model->save(output, {.sync = options.sync});
  }
  // The process exits next: freeing a large program node by node would take longer than
  // switching it, and the kernel reclaims it at once. Sanitizer builds free it, so leak
  // checks still see every allocation.
#if !EXMODE_SANITIZED
  (void)model.release();
#endif
  return 0;
}

}  // namespace

int runSwitch(Mode target, const SwitchOptions& options) {
  const ModuleTypeRules rules = moduleTypeRules(options.module_types);
  const UserRules user_rules = userRules(options.rules);
  const std::vector<std::string> outputs = plannedOutputs(options);
  if (options.inputs.size() == 1) {
    return switchFile(target, options, rules, user_rules, options.inputs[0], outputs[0]);
  }
  return runSwitchMany(target, options, rules, user_rules, outputs);
}

}  // namespace exmode::cli
