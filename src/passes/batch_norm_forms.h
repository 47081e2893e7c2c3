// The forms of batch norm exmode switches, one table for the two passes that switch them:
// batch_norm.cc (in-place forms: the running statistics and num_batches_tracked are updated
// by the node and an add_ inside the graph) and batch_norm_functional.cc (functional forms:
// the new statistics are extra outputs, written back by buffer_mutation specs).
//
// A form's mode is either its literal `training` argument (flagged forms) or its target
// (`_batch_norm_with_update` trains, `_batch_norm_no_update` does not). A flagless form names
// the form of the other mode; a flagged one switches by its flag, except the functional IR's
// _native_batch_norm_legit_functional, whose eval form is _native_batch_norm_legit_no_training.
#pragma once

#include <cstddef>
#include <span>
#include <string_view>

#include "exmode/passes.h"
#include "exmode/program.h"

namespace exmode::passes {

enum class NormIr { kInPlace, kFunctional };

struct BatchNormForm {
  std::string_view target;  // full form, "torch.ops.aten.batch_norm.default"
  NormIr ir;
  // The literal bool deciding the mode, or empty when the target does.
  std::string_view flag;
  // Flagless forms: the mode the target stands for (kFixed: never switched).
  Site::State mode = Site::State::kFixed;
  // The target of the other mode's form: flagless forms, and the functional train form
  // going to eval. Empty: the flag alone switches.
  std::string_view other;
  std::string_view momentum = "momentum";  // cudnn and miopen say exponential_average_factor
  std::size_t outputs = 1;
  // Outputs 1 and 2 are the saved batch mean and inverse std when there are three or more:
  // [C] in training, empty ([0]) otherwise.
  // Functional train forms: the index of the new running mean (the new running var follows).
  std::size_t new_statistics = 0;
};

// Every form, in-place ones first.
std::span<const BatchNormForm> batchNormForms();

// The form of `target` (full form) in `ir`, or null.
const BatchNormForm* batchNormForm(std::string_view target, NormIr ir);

// Whether a form of this IR can reach `form` of the other mode.
const BatchNormForm& otherForm(const BatchNormForm& form);

// Two eval forms are written by both IRs (_batch_norm_no_update and
// _native_batch_norm_legit_no_training): whose a node is, and so which train form it
// becomes, is read from the node. run_decompositions() records `from_node` in the metadata
// of every node it writes, torch.export.export in none: with it the node is the functional
// IR's. Without it (an older archive may not have it) it is the default IR's, unless the
// program is functional (buffer_mutation outputs and no in-place aten op). Either train form
// behaves the same; this picks the one torch writes.
bool isFunctionalIrNode(const Graph& graph, const Node& node);

// Whether a node of `form`'s target is of that form (see isFunctionalIrNode).
bool formApplies(const BatchNormForm& form, const Graph& graph, const Node& node);

// The saved batch statistics (outputs 1 and 2 of multi-output forms) are read: a switch
// would change what they hold, so it is refused.
bool savedStatisticsRead(const Graph& graph, const Node& node);

// Appends, in graph order, a site made by `make` for every node of a form of `ir` that
// formApplies to: the collectSites of both batch-norm passes.
using FormSiteMaker = Site (*)(const Node& node, const BatchNormForm& form, SiteDetail detail);
void collectFormSites(const Graph& graph, NormIr ir, SiteDetail detail, std::vector<Site>& sites,
                      FormSiteMaker make);

// The tensor metadata of an empty ([0]) output like the input (metadata that is not a JSON
// object, which torch never writes, is kept as it is).
std::string emptyTensorMeta(std::string_view input_meta);

}  // namespace exmode::passes
