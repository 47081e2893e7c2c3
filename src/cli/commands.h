// The tool's subcommands.
#pragma once

#include <CLI/CLI.hpp>
#include <string>

#include "exmode/passes.h"
#include "exmode/program.h"

namespace exmode::cli {

struct SwitchOptions {
  std::string input;
  ReadLimits limits;
  std::string output;
  bool in_place = false;
  bool sync = false;  // fsync the output; --in-place always does
  bool quiet = false;
};

struct InspectOptions {
  std::string input;
  ReadLimits limits;
  bool json = false;
};

// --max-program-bytes, --max-nodes, --max-depth: bounds on the programs read.
void addLimitOptions(CLI::App& command, ReadLimits& limits);
void addSwitchCommand(CLI::App& app, const std::string& name, const std::string& description,
                      SwitchOptions& options);
void addInspectCommand(CLI::App& app, InspectOptions& options);

int runSwitch(Mode target, const SwitchOptions& options);
int runInspect(const InspectOptions& options);

}  // namespace exmode::cli
