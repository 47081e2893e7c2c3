// The tool's subcommands.
#pragma once

#include <CLI/CLI.hpp>
#include <string>
#include <vector>

#include "exmode/findings.h"
#include "exmode/passes.h"
#include "exmode/program.h"
#include "exmode/user_rules.h"

namespace exmode::cli {

struct SwitchOptions {
  std::string input;
  ReadLimits limits;
  std::vector<std::string> module_types;  // extra module type lists (findings.h)
  std::vector<std::string> rules;         // user rule files (user_rules.h)
  bool strict = false;                    // refuse to write when a warning is found
  std::string output;
  bool in_place = false;
  bool sync = false;  // fsync the output; --in-place always does
  bool quiet = false;
};

struct InspectOptions {
  std::string input;
  ReadLimits limits;
  std::vector<std::string> module_types;
  std::vector<std::string> rules;
  bool json = false;
};

// --max-program-bytes, --max-nodes, --max-depth: bounds on the programs read.
void addLimitOptions(CLI::App& command, ReadLimits& limits);
// --module-types FILE (repeatable): module type lists added to the built-in one.
void addModuleTypesOption(CLI::App& command, std::vector<std::string>& files);
// --rules FILE (repeatable): user rule files (user_rules.h, docs/RULES.md).
void addRulesOption(CLI::App& command, std::vector<std::string>& files);
// The rules of `files`, read before any input is opened.
UserRules userRules(const std::vector<std::string>& files);
// The built-in module type list plus `files`.
ModuleTypeRules moduleTypeRules(const std::vector<std::string>& files);
// "  warning: node  op  module (type)  kind: reason" without the indent and newline.
std::string warningLine(const Finding& finding);
void addSwitchCommand(CLI::App& app, const std::string& name, const std::string& description,
                      SwitchOptions& options);
void addInspectCommand(CLI::App& app, InspectOptions& options);

int runSwitch(Mode target, const SwitchOptions& options);
int runInspect(const InspectOptions& options);

}  // namespace exmode::cli
