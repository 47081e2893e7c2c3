// What a switch cannot make exact. torch.export freezes Python branches on `self.training`:
// where the graph cannot tell what the other mode computes, exmode says so instead of
// guessing. One analysis over a program's graph and its sites (src/passes/findings.cc)
// finds every such place; switches and `inspect` report them as warnings.
#pragma once

#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "exmode/finding.h"
#include "exmode/passes.h"
#include "exmode/program.h"

namespace exmode {

inline bool concerns(const Finding& finding, Mode target) {
  return finding.when == Finding::When::kBoth ||
         (finding.when == Finding::When::kToTrain) == (target == Mode::kTrain);
}

// Module types whose forward changes by mode where the graph itself shows nothing
// (auxiliary heads, detection heads that decode only in eval, blocks holding a drop path
// whose rate an eval export does not record). Kept as data: the built-in list is
// data/mode_dependent_modules.txt, compiled in; users add files in the same format
// (--module-types FILE, or EXMODE_MODULE_TYPES=FILE[:FILE...]) without a rebuild.
//
// Format: one rule per line, `#` starts a comment:
//   <module type>  <when>  <library>  <reason, the rest of the line>
// <module type> is the class as nn_module_stack names it
// ("torchvision.models.inception.InceptionAux"); `*` matches any run of characters.
// <when> is to-train, to-eval, both, or drop-path (to-train, unless the program remembers
// a drop path exmode removed inside that module).
struct ModuleTypeRule {
  std::string type;
  Finding::When when = Finding::When::kBoth;
  bool drop_path = false;
  std::string library;
  std::string reason;
};

class ModuleTypeRules {
 public:
  // The built-in list, plus the files EXMODE_MODULE_TYPES names (read once).
  static const ModuleTypeRules& builtIn();
  // Adds the rules of `text`; throws Error(kUsage) naming `source` and the line.
  void add(std::string_view text, std::string_view source);
  // Adds the rules of a file; throws Error(kUsage) or Error(kIo) naming it.
  void addFile(const std::filesystem::path& path);
  // The first rule matching `type`, or null.
  const ModuleTypeRule* find(std::string_view type) const;
  const std::vector<ModuleTypeRule>& rules() const { return rules_; }

 private:
  std::vector<ModuleTypeRule> rules_;
};

// Everything in `program` that no switch can make exact, in graph order, whatever the
// direction (`when` says which switches each concerns). `sites` are the program's sites
// (collectSites).
std::vector<Finding> analyze(const Program& program, const std::vector<Site>& sites,
                             const ModuleTypeRules& rules = ModuleTypeRules::builtIn());

// Whether a program in mode `before` already is in `target`: then it is the export itself,
// and a switch to `target` has nothing to report.
inline bool alreadyIn(ProgramMode before, Mode target) {
  return (before == ProgramMode::kTrain && target == Mode::kTrain) ||
         (before == ProgramMode::kEval && target == Mode::kEval);
}

// The findings a switch to `target` reports for a program that was in mode `before`: none
// when it already was in `target` (it is then the export itself), else those that concern
// `target`.
std::vector<Finding> findingsForSwitch(const std::vector<Finding>& findings, ProgramMode before,
                                       Mode target);

}  // namespace exmode
