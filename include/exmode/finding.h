// One thing a switch cannot make exact (see findings.h for the analysis that finds them).
#pragma once

#include <string>
#include <string_view>

namespace exmode {

struct Finding {
  enum class Kind {
    kUnusedState,          // parameters or buffers of a module that no node reads
    kRandomOp,             // a random op that is not part of a site exmode switches
    kUnrecorded,           // a site whose train-mode parameters the program does not hold
    kMergedDropout,        // an eval export may have merged a dropout's input and output
    kModeDependentModule,  // a module type known to change what forward does by mode
    kInexact,              // a site exmode switches, but not exactly
  };
  // Which switches a finding concerns.
  enum class When { kToTrain, kToEval, kBoth };
  Kind kind = Kind::kInexact;
  When when = When::kBoth;
  std::string node;         // the node (or placeholder) it is about
  std::string op;           // its short target; empty for a placeholder
  std::string module;       // module path; empty for the root module
  std::string module_type;  // the module's class; empty when the graph does not say
  std::string reason;       // one line, no trailing period
};

// "unused-state", "random-op", "unrecorded", "merged-dropout", "mode-dependent-module",
// "inexact".
std::string_view findingKindName(Finding::Kind kind);
// "to-train", "to-eval", "both".
std::string_view findingWhenName(Finding::When when);

}  // namespace exmode
