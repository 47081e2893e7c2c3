// The exmode command-line tool: `exmode eval|train IN (-o OUT | --in-place)` and
// `exmode inspect IN [--json]`. Exit statuses are ErrorKind values (see README).
#include <CLI/CLI.hpp>
#include <iostream>

#include "cli/commands.h"
#include "exmode/error.h"

namespace {

int run(int argc, char** argv) {
  CLI::App app{"exmode: switch exported PyTorch programs (.pt2) between train and eval mode"};
  // Answered while parsing, before the missing subcommand is noticed.
  app.set_version_flag("--version", "exmode " EXMODE_VERSION, "Print the version and exit");
  app.require_subcommand(1);
  exmode::cli::SwitchOptions eval_options;
  exmode::cli::SwitchOptions train_options;
  exmode::cli::InspectOptions inspect_options;
  exmode::cli::addSwitchCommand(app, "eval", "Move every program to evaluation mode", eval_options);
  exmode::cli::addSwitchCommand(app, "train", "Move every program to training mode", train_options);
  exmode::cli::addInspectCommand(app, inspect_options);
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::cerr << "exmode: " << e.what() << " (see --help)\n";
    return static_cast<int>(exmode::ErrorKind::kUsage);
  }
  if (app.got_subcommand("eval")) return exmode::cli::runSwitch(exmode::Mode::kEval, eval_options);
  if (app.got_subcommand("train"))
    return exmode::cli::runSwitch(exmode::Mode::kTrain, train_options);
  return exmode::cli::runInspect(inspect_options);
}

}  // namespace

int main(int argc, char** argv) {
  return exmode::cli::reportingErrors([&] { return run(argc, argv); });
}
