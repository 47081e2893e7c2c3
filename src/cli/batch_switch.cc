// `exmode eval|train A B ... (-o DIR | --in-place) [-j N]`: many archives, each switched in a
// child process of its own (child_runner.h), its output printed whole, in the order given.
#include <string.h>  // strsignal
#include <unistd.h>

#include <algorithm>
#include <iostream>
#include <optional>

#include "cli/child_runner.h"
#include "cli/commands.h"
#include "cli/progress_line.h"
#include "exmode/error.h"
#include "exmode/model.h"

namespace exmode::cli {
namespace {

// What a child leaves in its note: how a switch that succeeded ended.
enum Note : unsigned char { kNotDone = 0, kSwitched = 1, kUnchanged = 2 };

std::string counted(std::size_t n, const char* one, const char* many) {
  return std::to_string(n) + " " + (n == 1 ? one : many);
}

// The mode all programs that have one share, or mixed.
ProgramMode combined(const std::vector<SwitchReport>& reports, ProgramMode SwitchReport::*field) {
  std::optional<ProgramMode> mode;
  for (const SwitchReport& r : reports) {
    const ProgramMode m = r.*field;
    if (m == ProgramMode::kNone) continue;
    if (mode && *mode != m) return ProgramMode::kMixed;
    mode = m;
  }
  return mode.value_or(ProgramMode::kNone);
}

// One file's switch, in its child: a summary line and the warnings on stdout, or the error
// on stderr (with the warnings under it when --strict refused them).
int switchOneOfMany(Mode target, const SwitchOptions& options, const ModuleTypeRules& rules,
                    const UserRules& user_rules, const std::string& input,
                    const std::string& output, unsigned char& note) {
  auto model = Model::open(input, options.limits);
  model->setModuleTypeRules(&rules);
  model->setUserRules(&user_rules);
  const std::vector<SwitchReport> reports = target == Mode::kTrain ? model->train() : model->eval();
  std::vector<const Finding*> warnings;
  for (const SwitchReport& r : reports) {
    for (const Finding& f : r.warnings) warnings.push_back(&f);
  }
  if (options.strict && !warnings.empty()) {
    std::cerr << "exmode: " << input << ": --strict: the switch to " << modeName(target)
              << " cannot be exact (" << counted(warnings.size(), "warning", "warnings")
              << "); nothing written\n";
    if (!options.quiet) {
      for (const Finding* f : warnings) std::cerr << "  warning: " << warningLine(*f) << "\n";
    }
    return static_cast<int>(ErrorKind::kUnsupported);
  }
  if (options.in_place) {
    if (model->modified()) model->save(input, {.sync = true});
  } else {
    model->save(output, {.sync = options.sync});
  }
  if (!options.quiet) {
    std::cout << input << ": " << archiveSummary(target, reports) << "\n";
    for (const Finding* f : warnings) std::cout << "  warning: " << warningLine(*f) << "\n";
  }
  note = model->modified() ? kSwitched : kUnchanged;
  // The child exits next; the kernel frees the model faster than its destructor would.
  (void)model.release();
  return 0;
}

void writeOut(const std::string& text, std::ostream& stream) {
  if (text.empty()) return;
  stream << text;
  stream.flush();
}

}  // namespace

int worseStatus(int a, int b) {
  if (a == 1 || b == 1) return 1;
  return std::max(a, b);
}

int childOutcome(const std::string& input, ChildResult& result) {
  if (!result.not_run.empty()) {
    result.err += "exmode: " + input + ": not processed: " + result.not_run + "\n";
  } else if (result.signal != 0) {
    result.err += "exmode: " + input + ": internal error: ended by signal " +
                  std::to_string(result.signal) + " (" + ::strsignal(result.signal) + ")\n";
  }
  return result.status;
}

std::string archiveSummary(Mode target, const std::vector<SwitchReport>& reports) {
  std::size_t changes = 0;
  std::size_t warnings = 0;
  for (const SwitchReport& r : reports) {
    changes += r.changes.size();
    warnings += r.warnings.size();
  }
  const std::string warned = warnings == 0 ? "" : counted(warnings, "warning", "warnings");
  if (changes == 0) {
    const bool no_site = combined(reports, &SwitchReport::before) == ProgramMode::kNone;
    return (no_site ? std::string("no mode-sensitive site")
                    : "already in " + std::string(modeName(target)) + " mode") +
           "; nothing changed" + (warned.empty() ? "" : " (" + warned + ")");
  }
  return std::string(programModeName(combined(reports, &SwitchReport::before))) + " -> " +
         std::string(programModeName(combined(reports, &SwitchReport::after))) + " (" +
         counted(changes, "change", "changes") + (warned.empty() ? "" : ", " + warned) + ")";
}

int runSwitchMany(Mode target, const SwitchOptions& options, const ModuleTypeRules& rules,
                  const UserRules& user_rules, const std::vector<std::string>& outputs) {
  const std::vector<std::string>& inputs = options.inputs;
  unsigned jobs = options.jobs;
  if (jobs == 0) jobs = static_cast<unsigned>(std::max(1L, ::sysconf(_SC_NPROCESSORS_ONLN)));
  ProgressLine progress(!options.quiet);
  std::size_t switched = 0;
  std::size_t unchanged = 0;
  std::size_t failed = 0;
  int status = 0;

  auto task = [&](std::size_t i, unsigned char& note) {
    return reportingErrors(
        [&] {
          return switchOneOfMany(target, options, rules, user_rules, inputs[i], outputs[i], note);
        },
        inputs[i]);
  };
  auto finished = [&](std::size_t i, ChildResult& result) {
    childOutcome(inputs[i], result);
    if (result.status == 0 && result.note == kNotDone) {
      result.status = 1;
      result.err += "exmode: " + inputs[i] + ": internal error: exited without a result\n";
    }
    if (result.status == 0) {
      ++(result.note == kSwitched ? switched : unchanged);
    } else {
      ++failed;
      status = worseStatus(status, result.status);
    }
    progress.clear();
    writeOut(result.out, std::cout);
    writeOut(result.err, std::cerr);
  };
  auto advance = [&](std::size_t, std::size_t next) {
    if (next < inputs.size()) progress.show(next, inputs.size(), inputs[next]);
  };

  progress.show(0, inputs.size(), inputs[0]);
  runChildren(inputs.size(), jobs, task, finished, advance);
  progress.clear();
  std::cout << counted(inputs.size(), "file", "files") << ": " << switched << " switched, "
            << unchanged << " unchanged, " << failed << " failed\n";
  std::cout.flush();
  return status;
}

}  // namespace exmode::cli
