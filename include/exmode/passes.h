// Mode passes: one per family of mode-sensitive ops, each in its own file under
// src/passes/, registered in one explicit list (src/passes/registry.cc).
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "exmode/finding.h"
#include "exmode/program.h"
#include "exmode/rewrite.h"

namespace exmode {

class ModePass;
class ModuleTypeRules;
class UserRules;

enum class Mode { kTrain, kEval };
std::string_view modeName(Mode mode);

// A program's mode: every site agrees (train / eval), they disagree (mixed), or the
// program has no mode-sensitive site (none).
enum class ProgramMode { kTrain, kEval, kMixed, kNone };
std::string_view programModeName(ProgramMode mode);

// One mode-sensitive node.
struct Site {
  enum class State { kTrain, kEval, kFixed };  // kFixed: behaves the same in both modes
  const Node* node = nullptr;
  const ModePass* pass = nullptr;  // the pass that found it (set by the collectors)
  State state = State::kFixed;
  // The nested graph holding the node, as reports name it (Region::path: "<owner>/<graph>/"),
  // empty in the program's own graph. Set by collectSites(const Program&).
  std::string_view region;
  std::optional<double> p;         // dropout probability
  std::optional<double> momentum;  // batch-norm momentum
  std::optional<double> eps;       // batch-norm eps
  // Where the node's mode flag was among its inputs: a hint for Rewriter::setInput.
  std::size_t flag_input = 0;
  // Batch norm: what its counter increment needs, found on the site's first switch and kept
  // with the site (SwitchCache). A switch changes no graph input and no site's metadata, so
  // while the graph changes only through switches these stay right, and toggling a model
  // reads none of the site's own text again.
  struct Increment {
    // The counters the increment may be on (see batch_norm.cc).
    absl::InlinedVector<Value*, 2> counters;
    bool counters_known = false;
    // The metadata an inserted increment gets (the site's stack trace and module stack).
    absl::InlinedVector<std::pair<std::string_view, RawJson>, 2> metadata;
    bool metadata_known = false;
    // The name the last inserted increment got (program text), tried first next time: when
    // it is still what Graph::freshName would give (batch_norm.cc checks), it is kept,
    // found with one lookup instead of a search and without new text.
    std::string_view name;
  } increment;
};
std::string_view siteStateName(Site::State state);

// How much of a Site collectSites fills in: everything, or only the node and its state
// (what a switch needs to know the mode it starts from, without parsing p, momentum, eps).
enum class SiteDetail { kFull, kState };

// One change a switch made.
// Views into the program's text (or static text): valid while the program lives. A large
// switch makes hundreds of thousands of these, so they copy nothing.
struct Change {
  std::string_view node;    // node name; inside a nested graph prefixed by its Region::path
  std::string_view op;      // short target, e.g. "aten.batch_norm.default"
  std::string_view module;  // module path from nn_module_stack
  std::string_view before;  // e.g. "training=True"
  std::string_view after;
  const Node* site = nullptr;  // the node changed
};

struct SwitchReport {
  std::string program;  // program name
  ProgramMode before = ProgramMode::kNone;
  ProgramMode after = ProgramMode::kNone;
  std::vector<Change> changes;
  // What the switch cannot make exact (see findings.h): empty when the program already was
  // in the target mode.
  std::vector<Finding> warnings;
};

class ModePass {
 public:
  virtual ~ModePass() = default;
  virtual std::string_view name() const = 0;
  // The op targets this pass looks at (full form, "torch.ops.aten.dropout.default").
  virtual const std::vector<std::string>& targets() const = 0;
  // Appends this family's sites in graph order. Pure.
  virtual void collectSites(const Graph& graph, std::vector<Site>& sites,
                            SiteDetail detail) const = 0;
  // Moves every site of this family to `target`, appending what it changed (and what it
  // could not change) to `report`, and setting the state of each site it moved. `sites`
  // are what this pass's collectSites found (at SiteDetail::kState or more) before the
  // switch changed anything: passes never erase sites, and each changes only its own, so
  // they stay valid while the others run.
  virtual void apply(rewrite::Rewriter& rewriter, Mode target, std::span<Site> sites,
                     SwitchReport& report) const = 0;
  // The nodes a site of this pass consists of (its node, and for a multi-node site such as a
  // drop path its mask ops), so that the findings analysis does not report them as
  // unexplained random ops. Appends to `out`.
  virtual void siteMembers(const Site& site, std::vector<const Node*>& out) const {
    out.push_back(site.node);
  }
};

// The registered passes, in the order they run.
const std::vector<const ModePass*>& modePasses();

// All sites of a program, sorted by graph order. Throws Error naming the node (and, for the
// Program overload, the file) when a mode-sensitive node has no literal mode flag. With
// `rules` (user_rules.h), the sites of its op rules too, and attention sites with the p its
// attention_dropout rules give them.
std::vector<Site> collectSites(const Graph& graph, const UserRules* rules = nullptr);
std::vector<Site> collectSites(const Program& program, const UserRules* rules = nullptr);
ProgramMode detectMode(const std::vector<Site>& sites);

// The sites one switch of a program found, kept for its next switch. A switch changes no
// site but its state, which the passes keep current; so while the program changes only
// through switches (its graph's id() and version() are those recorded here), these are what
// collecting the sites again would give. Anything else that changes the graph makes the
// next switch collect them anew. Model keeps one per program: toggling a loaded model
// between modes matches its graph once.
struct SwitchCache {
  std::uint64_t graph_id = 0;  // the graph's id() (0: nothing kept) and version() after the
  std::uint64_t version = 0;   // switch
  std::vector<Site> sites;     // every pass's sites, pass after pass
  std::vector<std::size_t> pass_sites;  // where each pass's sites start, then the end
  // The structural findings (findings.h) of the program, which a switch does not change,
  // and the rules they were found with.
  std::vector<Finding> structural;
  const ModuleTypeRules* rules = nullptr;
  const UserRules* user_rules = nullptr;  // the user rules the sites were collected with
};

// Moves every site of `program` to `target`. Idempotent: a program already in `target` is
// left unchanged and the report lists no change. The result is verified when it is written
// (Program::toJson). Errors (a node exmode cannot switch) are raised before anything
// changes: every pass's sites are collected first, and functional_ir, which refuses
// programs, runs first. With a `cache`, sites it holds for this program's current graph
// are used instead of collected, and the sites of this switch are kept in it. The report's
// warnings are found with `rules` (null: ModuleTypeRules::builtIn()). `listener` hears of
// every change the passes make (rewrite.h), for a host that replays them on its own graph.
// `user_rules` (user_rules.h; null: none) adds the passes of its op rules, run after the
// built-in ones, and the train-mode p of its attention_dropout rules.
SwitchReport switchMode(Program& program, Mode target, std::string program_name = {},
                        SwitchCache* cache = nullptr, const ModuleTypeRules* rules = nullptr,
                        rewrite::Listener* listener = nullptr,
                        const UserRules* user_rules = nullptr);

}  // namespace exmode
