// The tool's subcommands.
#pragma once

#include <CLI/CLI.hpp>
#include <functional>
#include <string>
#include <vector>

#include "exmode/findings.h"
#include "exmode/passes.h"
#include "exmode/program.h"
#include "exmode/user_rules.h"

namespace exmode::cli {

struct SwitchOptions {
  std::vector<std::string> inputs;  // one archive, or many (batch_switch.cc)
  ReadLimits limits;
  std::vector<std::string> module_types;  // extra module type lists (findings.h)
  std::vector<std::string> rules;         // user rule files (user_rules.h)
  bool strict = false;                    // refuse to write when a warning is found
  std::string output;
  bool in_place = false;
  bool sync = false;  // fsync the output; --in-place always does
  bool quiet = false;
  unsigned jobs = 1;  // -j: files switched at once when there are many; 0: one per CPU
};

struct InspectOptions {
  std::vector<std::string> inputs;
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
// The archive each input is written to: the input itself with --in-place, else -o's file, or
// DIR/<name of the input> when -o names a directory (always so with several inputs). Throws
// Error(kUsage), before anything is written, when the plan is unsafe or ambiguous.
std::vector<std::string> plannedOutputs(const SwitchOptions& options);
// `exmode eval|train A B ... (-o DIR | --in-place)`: each input in a child process of its
// own, one summary line per file, a final count; the exit status of the worst failure.
int runSwitchMany(Mode target, const SwitchOptions& options, const ModuleTypeRules& rules,
                  const UserRules& user_rules, const std::vector<std::string>& outputs);
// The one line of a switch summed over an archive's programs, without the file name:
// "train -> eval (3 changes, 1 warning)", "already in eval mode; nothing changed", ...
std::string archiveSummary(Mode target, const std::vector<SwitchReport>& reports);
struct ChildResult;
// A child's exit status, with the line its end did not print added to result.err (a signal,
// no process to be had, no result): 0 only for a task that succeeded.
int childOutcome(const std::string& input, ChildResult& result);
// The status of a run of many files: an internal error (1, a bug) first, else the highest, so
// that it depends neither on the order of the files nor on -j.
int worseStatus(int a, int b);
// Runs `body`, turning an escaping exception into the line `exmode: ...` on stderr and its
// exit status, as main() does; `file` (if not empty) is named in an internal error's line.
int reportingErrors(const std::function<int()>& body, const std::string& file = "");
int runInspect(const InspectOptions& options);

}  // namespace exmode::cli
