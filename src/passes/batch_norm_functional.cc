// Batch norm in the functional IR of ep.run_decompositions() (functional and core ATen).
//
// Train: add = aten.add.Tensor(<bn>.num_batches_tracked, 1)
//        (y, save_mean, save_rstd, new_rm, new_rv) =
//            aten._native_batch_norm_legit_functional.default(x, w, b, rm, rv, True, momentum, eps)
//        new_rm, new_rv and add are graph outputs with buffer_mutation specs for the
//        module's running_mean, running_var and num_batches_tracked (the last call's values:
//        a module called twice reads new_rm of its first call as rm of its second).
// Eval:  (y, e1, e2) = aten._native_batch_norm_legit_no_training.default(x, w, b, rm, rv,
//        momentum, eps), with e1 and e2 empty ([0]); no mutation, no increment.
//
// To eval: later readers of new_rm / new_rv (the next call, the mutation outputs) read rm /
// rv instead, the increments go, the node loses `training` and its last two outputs, and a
// buffer_mutation left naming its own buffer's placeholder (nothing mutated) is removed.
// To train: the reverse, in torch's order: `training` before momentum, the outputs appended,
// every later reader of rm / rv reading the new values, the increment inserted right before
// the node on the counter's chain, and one buffer_mutation per buffer for its last value,
// among the other mutations in input order. momentum and eps are never touched.
//
// The other functional forms of batch_norm_forms.h follow the same rules with their own
// outputs: _batch_norm_with_update_functional (y, save_mean, save_rstd, reserve, new_rm,
// new_rv) <-> _batch_norm_no_update (y, e1, e2, reserve), a target swap (neither has
// `training`); and _native_batch_norm_legit_functional with training=False (what torch
// writes for a decomposed _native_batch_norm_legit in eval: buffer mutations of unchanged
// statistics) is an eval site whose flag is set going to train, like torch's train form.
#include <algorithm>
#include <string>

#include "exmode/error.h"
#include "exmode/passes.h"
#include "exmode/pattern.h"
#include "passes/batch_norm_forms.h"
#include "passes/change.h"
#include "passes/norm_counter.h"
#include "passes/remembered.h"
#include "program/json_text.h"

namespace exmode::passes {

namespace {

using namespace rewrite;

// Marks a node a switch moved to eval: the program came from a train export
// (erased_modules.cc), whose decomposition erases no dropout.
constexpr std::string_view kFromTrain = "exmode_from_train";

const BatchNormForm& formOf(const Node& node) {
  return *batchNormForm(node.target(), NormIr::kFunctional);
}

bool tracksStatistics(const Node& node) {
  for (std::string_view name :
       {std::string_view("running_mean"), std::string_view("running_var")}) {
    const NamedArgument* in = node.input(name);
    if (in == nullptr || in->arg.tensor() == nullptr) return false;
  }
  return true;
}

std::vector<std::string> functionalTargets() {
  std::vector<std::string> targets;
  for (const BatchNormForm& form : batchNormForms()) {
    if (form.ir == NormIr::kFunctional) targets.emplace_back(form.target);
  }
  return targets;
}

// add(counter, 1): one step of a module's num_batches_tracked, functionalized.
const Pattern& incrementPattern() {
  static const Pattern pattern =
      Pattern({"aten.add.Tensor"}).arg("self", tensor(), "self").arg("other", intArg(1));
  return pattern;
}

[[noreturn]] void refuse(const Node& node, const std::string& why) {
  throw Error(ErrorKind::kUnsupported, "node '" + std::string(node.name()) + "' (" +
                                           std::string(shortTarget(node.target())) + "): " + why);
}

Value& tensorInput(const Node& node, std::string_view name) {
  return *node.input(name)->arg.tensor();
}

// The placeholder behind a running statistic: in training the second call of a module reads
// the first call's new value (output 3 or 4), which stands for the same buffer.
const Value* statisticPlaceholder(const Value* value) {
  while (value != nullptr && value->producer() != nullptr) {
    const Node& producer = *value->producer();
    const BatchNormForm* form = batchNormForm(producer.target(), NormIr::kFunctional);
    if (form == nullptr || form->new_statistics == 0 || producer.outputs().size() != form->outputs)
      break;
    if (producer.outputs()[form->new_statistics].tensor() == value) {
      value = producer.input("running_mean")->arg.tensor();
    } else if (producer.outputs()[form->new_statistics + 1].tensor() == value) {
      value = producer.input("running_var")->arg.tensor();
    } else {
      break;
    }
  }
  return value;
}

class BatchNormFunctionalPass final : public ModePass {
 public:
  std::string_view name() const override { return "batch_norm_functional"; }
  const std::vector<std::string>& targets() const override {
    static const std::vector<std::string> all = functionalTargets();
    return all;
  }

  void collectSites(const Graph& graph, std::vector<Site>& sites,
                    SiteDetail detail) const override {
    collectFormSites(graph, NormIr::kFunctional, detail, sites,
                     [](const Node& node, const BatchNormForm& form, SiteDetail d) {
                       const bool tracked = tracksStatistics(node);
                       Site site = normSite(node, tracked && !form.flag.empty(), form.flag, d);
                       if (tracked && form.flag.empty()) site.state = form.mode;
                       return site;
                     });
  }

  void apply(Rewriter& rewriter, Mode target, std::span<Site> sites,
             SwitchReport& report) const override {
    const Site::State wanted = siteState(target);
    // Each buffer's last value, for the mutation outputs going to train (first seen first).
    std::vector<std::pair<const Value*, Value*>> last_values;
    auto setLast = [&](const Value* placeholder, Value* value) {
      for (auto& [p, v] : last_values) {
        if (p == placeholder) {
          v = value;
          return;
        }
      }
      last_values.emplace_back(placeholder, value);
    };
    std::vector<const Node*> previous_site(rewriter.graph().valueCount(), nullptr);
    for (Site& site : sites) {
      if (site.state == wanted || site.state == Site::State::kFixed) {
        notePrevious(rewriter.graph(), site, previous_site);
        continue;
      }
      Node& node = rewriter.mutableNode(*site.node);
      const BatchNormForm& form = formOf(node);
      const std::string_view train_text =
          form.flag.empty() && target == Mode::kEval ? shortTarget(form.target)
          : form.flag.empty()                        ? shortTarget(otherForm(form).target)
                              : std::string_view("training=True, buffer mutations");
      if (target == Mode::kEval) {
        toEval(rewriter, node, form, previous_site);
        report.changes.push_back(
            makeChange(rewriter, node, train_text, shortTarget(otherForm(form).target)));
      } else {
        const std::string_view eval_text =
            form.flag.empty() ? shortTarget(form.target) : std::string_view("training=False");
        toTrain(rewriter, node, form, setLast);
        report.changes.push_back(makeChange(rewriter, node, eval_text, train_text));
      }
      site.state = wanted;
      if (!site.momentum) site.momentum = numberArg(node, "momentum");
    }
    if (target == Mode::kEval) {
      removeIdleMutations(rewriter);
    } else {
      addMutations(rewriter, last_values);
    }
    rewriter.graph().renumber();
  }

 private:
  // Remembers a site left as it is as the last on its counter (see incrementsOf).
  static void notePrevious(const Graph& graph, const Site& site,
                           std::vector<const Node*>& previous_site) {
    const Value* mean = statisticPlaceholder(&tensorInput(*site.node, "running_mean"));
    for (Value* counter : counterCandidates(graph, *site.node, *mean))
      previous_site[counter->index()] = site.node;
  }

  // Batch norm on statistics computed from the buffers (instance norm's decomposition
  // repeats them per sample and writes their mean back with copy) is another op's inside:
  // switching the batch norm alone would leave that write-back, so it is refused.
  static void requireBuffers(const Graph& graph, const Node& node, const Value* mean,
                             const Value* var) {
    for (const Value* p : {mean, var}) {
      const SignatureSpec* spec = graph.inputSpecOf(p);
      if (spec == nullptr || spec->kind != "buffer")
        refuse(node,
               "its running statistics are not buffers of the program but computed from them "
               "(as in instance norm's decomposition), which exmode does not switch");
    }
  }

  static void toEval(Rewriter& rewriter, Node& node, const BatchNormForm& form,
                     std::vector<const Node*>& previous_site) {
    Graph& graph = rewriter.graph();
    const BatchNormForm& to = otherForm(form);
    if (node.outputs().size() != form.outputs)
      refuse(node, "expected " + std::to_string(form.outputs) + " outputs");
    if (savedStatisticsRead(graph, node))
      refuse(node,
             "its saved batch statistics (outputs 1 and 2) are read, and the eval form does "
             "not compute them");
    Value& mean = tensorInput(node, "running_mean");
    Value& var = tensorInput(node, "running_var");
    const Value* mean_placeholder = statisticPlaceholder(&mean);
    requireBuffers(graph, node, mean_placeholder, statisticPlaceholder(&var));
    // The increments, found before the statistics are rewired (the counter is found from the
    // running mean's placeholder).
    Increments increments;
    for (Value* counter : counterCandidates(graph, node, *mean_placeholder)) {
      const Node*& previous = previous_site[counter->index()];
      if (increments.empty())
        increments = incrementsOf(*counter, node, previous, incrementPattern());
      previous = &node;
    }
    // Later readers of the new statistics (the module's next call, the mutation outputs).
    const std::size_t stats = form.new_statistics;
    if (Value* new_mean = node.outputs()[stats].tensor()) rewriter.replaceUses(*new_mean, mean);
    if (Value* new_var = node.outputs()[stats + 1].tensor()) rewriter.replaceUses(*new_var, var);
    for (auto it = increments.rbegin(); it != increments.rend(); ++it) {
      Node& increment = **it;
      rewriter.replaceUses(*increment.output(), *increment.input("self")->arg.tensor());
      rewriter.eraseNode(increment);
    }
    rewriter.setTarget(node, to.target);
    if (!form.flag.empty()) rewriter.removeInput(node, form.flag);
    rewriter.truncateOutputs(node, to.outputs);
    if (remembered::usable(node)) remembered::set(rewriter, node, kFromTrain, "true");
    const RawJson input_meta = tensorInput(node, "input").tensorMeta();
    if (!input_meta.empty()) {
      const RawJson empty = rewriter.keep(emptyTensorMeta(input_meta));
      for (std::size_t i = 1; i <= 2; ++i) {
        if (Value* v = node.outputs()[i].tensor()) rewriter.setTensorMeta(*v, empty);
      }
    }
  }

  template <typename SetLast>
  static void toTrain(Rewriter& rewriter, Node& node, const BatchNormForm& form, SetLast& setLast) {
    Graph& graph = rewriter.graph();
    if (node.outputs().size() != form.outputs)
      refuse(node, "expected " + std::to_string(form.outputs) + " outputs");
    if (node.input(form.momentum) == nullptr) refuse(node, "has no momentum");
    if (savedStatisticsRead(graph, node))
      refuse(node,
             "its saved batch statistics (outputs 1 and 2) are read, and they are empty in "
             "eval");
    Value& mean = tensorInput(node, "running_mean");
    Value& var = tensorInput(node, "running_var");
    const Value* mean_placeholder = statisticPlaceholder(&mean);
    const Value* var_placeholder = statisticPlaceholder(&var);
    requireBuffers(graph, node, mean_placeholder, var_placeholder);
    if (!node.metadataFieldJson("custom").empty() && remembered::usable(node))
      remembered::set(rewriter, node, kFromTrain, std::nullopt);
    // The saved statistics are per channel, like the running ones.
    for (std::size_t i = 1; i <= 2; ++i) {
      if (Value* v = node.outputs()[i].tensor()) rewriter.setTensorMeta(*v, mean.tensorMeta());
    }
    if (!form.flag.empty()) {
      // torch's eval form of a decomposed _native_batch_norm_legit: the new statistics are
      // there already (equal to the old), and so are their mutations.
      rewriter.setInput(node, form.flag, rewriter.boolArg(true));
      const std::size_t stats = form.new_statistics;
      if (Value* v = node.outputs()[stats].tensor()) setLast(mean_placeholder, v);
      if (Value* v = node.outputs()[stats + 1].tensor()) setLast(var_placeholder, v);
    } else {
      const BatchNormForm& to = otherForm(form);
      rewriter.setTarget(node, to.target);
      if (!to.flag.empty())
        rewriter.insertInput(node, {std::string(to.flag), rewriter.boolArg(true), "1"},
                             to.momentum);
      Value& new_mean =
          rewriter.appendOutput(node, rewriter.freshName("getitem"), mean.tensorMeta());
      Value& new_var = rewriter.appendOutput(node, rewriter.freshName("getitem"), var.tensorMeta());
      // Everything after this call sees the updated statistics, as the module's buffers are.
      rewriter.replaceUses(mean, new_mean, &node);
      rewriter.replaceUses(var, new_var, &node);
      setLast(mean_placeholder, &new_mean);
      setLast(var_placeholder, &new_var);
    }
    const auto counters = counterCandidates(graph, node, *mean_placeholder);
    if (counters.empty()) return;
    Value& counter = *counters.front();
    Value& latest = *counterValueBefore(counter, node, incrementPattern());
    NewNode increment;
    increment.target = "torch.ops.aten.add.Tensor";
    increment.inputs.push_back({"self", rewriter.tensorArg(latest), "1"});
    increment.inputs.push_back({"other", rewriter.intArg(1), "1"});
    increment.tensor_outputs.emplace_back(rewriter.freshName("add"), counter.tensorMeta());
    increment.metadata = incrementMetadata(node);
    Node& added = rewriter.insertBefore(node, std::move(increment));
    rewriter.replaceUses(latest, *added.output(), &node);
    setLast(&counter, added.output());
  }

  // A buffer_mutation whose value is its own buffer's placeholder mutates nothing.
  static void removeIdleMutations(Rewriter& rewriter) {
    const Graph& graph = rewriter.graph();
    for (std::size_t i = graph.outputSpecs().size(); i-- > 0;) {
      const SignatureSpec& spec = graph.outputSpecs()[i];
      if (spec.kind != "buffer_mutation") continue;
      const Value* value = spec.value();
      if (value != nullptr && value == graph.bufferInput(spec.target)) rewriter.removeOutput(i);
    }
  }

  static void addMutations(Rewriter& rewriter,
                           const std::vector<std::pair<const Value*, Value*>>& last_values) {
    const Graph& graph = rewriter.graph();
    for (const auto& [placeholder, value] : last_values) {
      const SignatureSpec* input = graph.inputSpecOf(placeholder);
      if (input == nullptr || input->kind != "buffer") continue;
      bool listed = false;  // an existing mutation of the buffer was rewired to `value`
      for (const SignatureSpec& spec : graph.outputSpecs()) {
        listed = listed || (spec.kind == "buffer_mutation" && spec.target == input->target);
      }
      if (!listed) rewriter.addBufferMutation(*value, input->target);
    }
  }
};

}  // namespace

const ModePass& batchNormFunctionalPass() {
  static const BatchNormFunctionalPass pass;
  return pass;
}

}  // namespace exmode::passes
