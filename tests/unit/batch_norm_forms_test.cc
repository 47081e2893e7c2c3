// The table of batch-norm forms (src/passes/batch_norm_forms.h) and the IR a shared eval
// form is read as.
#include "passes/batch_norm_forms.h"

#include <gtest/gtest.h>

#include <set>
#include <string>

#include "exmode/error.h"
#include "exmode/passes.h"
#include "exmode/program.h"
#include "test_programs.h"

namespace exmode {
namespace {

using passes::BatchNormForm;
using passes::batchNormForm;
using passes::batchNormForms;
using passes::NormIr;
using passes::otherForm;
using testing::boolInput;
using testing::floatInput;
using testing::intInput;
using testing::makeProgram;
using testing::tensorInput;

constexpr std::string_view kPrefix = "torch.ops.aten.";

TEST(BatchNormForms, EveryTargetIsOnceInEachIr) {
  std::set<std::pair<std::string, NormIr>> seen;
  for (const BatchNormForm& form : batchNormForms()) {
    EXPECT_TRUE(form.target.starts_with(kPrefix)) << form.target;
    EXPECT_TRUE(seen.insert({std::string(form.target), form.ir}).second) << form.target;
    EXPECT_EQ(batchNormForm(form.target, form.ir), &form);
  }
  EXPECT_EQ(batchNormForm("torch.ops.aten.relu.default", NormIr::kInPlace), nullptr);
  // Only the two eval forms both IRs write are in both.
  std::set<std::string> both;
  for (const auto& [target, ir] : seen) {
    if (ir == NormIr::kInPlace && seen.count({target, NormIr::kFunctional})) both.insert(target);
  }
  EXPECT_EQ(both,
            (std::set<std::string>{"torch.ops.aten._batch_norm_no_update.default",
                                   "torch.ops.aten._native_batch_norm_legit_no_training.default"}));
}

TEST(BatchNormForms, EachModeReachesTheOther) {
  for (const BatchNormForm& form : batchNormForms()) {
    SCOPED_TRACE(std::string(form.target));
    if (form.flag.empty() && form.mode == Site::State::kFixed) {
      EXPECT_TRUE(form.other.empty());  // no_stats: never switched
      continue;
    }
    const BatchNormForm& other = otherForm(form);
    EXPECT_EQ(other.ir, form.ir);
    if (form.flag.empty()) {
      // A flagless form goes to the other mode's form, flagged (training=True) or not.
      EXPECT_NE(&other, &form);
      if (other.flag.empty()) {
        EXPECT_NE(other.mode, form.mode);
        EXPECT_EQ(&otherForm(other), &form);
      }
    }
    // Functional train forms hold the new statistics last; eval forms drop them.
    if (form.new_statistics != 0) {
      EXPECT_EQ(form.new_statistics + 2, form.outputs);
      EXPECT_EQ(other.outputs, form.outputs - 2);
      EXPECT_EQ(other.new_statistics, 0u);
    }
  }
}

TEST(BatchNormForms, OutputCountsAndArgumentNamesAreTorchs) {
  auto in_place = [](std::string_view op) {
    return batchNormForm(std::string(kPrefix) + std::string(op), NormIr::kInPlace);
  };
  auto functional = [](std::string_view op) {
    return batchNormForm(std::string(kPrefix) + std::string(op), NormIr::kFunctional);
  };
  EXPECT_EQ(in_place("batch_norm.default")->outputs, 1u);
  EXPECT_EQ(in_place("cudnn_batch_norm.default")->outputs, 4u);
  EXPECT_EQ(in_place("cudnn_batch_norm.default")->momentum, "exponential_average_factor");
  EXPECT_EQ(in_place("miopen_batch_norm.default")->outputs, 3u);
  EXPECT_EQ(in_place("miopen_batch_norm.default")->momentum, "exponential_average_factor");
  EXPECT_EQ(in_place("_batch_norm_with_update.default")->outputs, 4u);
  EXPECT_EQ(in_place("_batch_norm_with_update.default")->mode, Site::State::kTrain);
  EXPECT_EQ(in_place("_native_batch_norm_legit_no_training.default")->other,
            "torch.ops.aten._native_batch_norm_legit.default");
  EXPECT_EQ(functional("_native_batch_norm_legit_functional.default")->outputs, 5u);
  EXPECT_EQ(functional("_native_batch_norm_legit_functional.default")->flag, "training");
  EXPECT_EQ(functional("_batch_norm_with_update_functional.default")->outputs, 6u);
  EXPECT_EQ(functional("_batch_norm_no_update.default")->outputs, 4u);
  EXPECT_EQ(functional("_batch_norm_no_update.default")->other,
            "torch.ops.aten._batch_norm_with_update_functional.default");
}

std::string formArgs(const std::string& input, bool training, std::string_view momentum) {
  return tensorInput("input", input) + ", " + tensorInput("weight", "p_bn_weight") + ", " +
         tensorInput("bias", "p_bn_bias") + ", " +
         tensorInput("running_mean", "b_bn_running_mean") + ", " +
         tensorInput("running_var", "b_bn_running_var") + ", " + boolInput("training", training) +
         ", " + floatInput(std::string(momentum), 0.1) + ", " +
         floatInput(momentum == "momentum" ? "eps" : "epsilon", 1e-5);
}

std::string formProgram(const std::string& op, bool train, std::string_view momentum,
                        const std::vector<testing::TestNode>& extra = {}) {
  std::vector<testing::TestNode> nodes;
  if (train)
    nodes.push_back({"add_", "aten.add_.Tensor",
                     tensorInput("self", "b_bn_num_batches_tracked") + ", " + intInput("other", 1),
                     "bn"});
  nodes.push_back({"bn", op, formArgs("x", train, momentum), "bn"});
  nodes.insert(nodes.end(), extra.begin(), extra.end());
  return makeProgram({"p_bn_weight", "p_bn_bias"},
                     {"b_bn_running_mean", "b_bn_running_var", "b_bn_num_batches_tracked"}, nodes,
                     "bn");
}

// The in-place flagged forms switch like aten.batch_norm: flag and increment, both ways.
TEST(BatchNormForms, DeviceFormsSwitchByFlagAndIncrement) {
  for (const auto& [op, momentum] :
       {std::pair{"aten.cudnn_batch_norm.default", "exponential_average_factor"},
        std::pair{"aten.miopen_batch_norm.default", "exponential_average_factor"},
        std::pair{"aten.native_batch_norm.default", "momentum"},
        std::pair{"aten._native_batch_norm_legit.default", "momentum"}}) {
    SCOPED_TRACE(op);
    const std::string train = formProgram(op, true, momentum);
    const std::string eval = formProgram(op, false, momentum);
    auto program = Program::parse(train, "t.json");
    EXPECT_EQ(detectMode(collectSites(*program)), ProgramMode::kTrain);
    const SwitchReport report = switchMode(*program, Mode::kEval);
    ASSERT_EQ(report.changes.size(), 1u);
    EXPECT_EQ(report.changes[0].before, "training=True, num_batches_tracked += 1");
    EXPECT_EQ(program->toJson(), Program::parse(eval, "e.json")->toJson());
    // Back: the increment again (its text may be laid out otherwise), and eval once more.
    const SwitchReport back = switchMode(*program, Mode::kTrain);
    ASSERT_EQ(back.changes.size(), 1u);
    EXPECT_EQ(back.changes[0].after, "training=True, num_batches_tracked += 1");
    switchMode(*program, Mode::kEval);
    EXPECT_EQ(program->toJson(), Program::parse(eval, "e.json")->toJson());
  }
}

// A shared eval form is the functional IR's when run_decompositions() wrote it (its
// metadata has from_node), the default IR's otherwise; each IR's pass then takes it to its
// own train form.
TEST(BatchNormForms, SharedEvalFormsFollowTheirIr) {
  const std::string no_update =
      tensorInput("input", "x") + ", " + tensorInput("weight", "p_bn_weight") + ", " +
      tensorInput("bias", "p_bn_bias") + ", " + tensorInput("running_mean", "b_bn_running_mean") +
      ", " + tensorInput("running_var", "b_bn_running_var") + ", " + floatInput("momentum", 0.1) +
      ", " + floatInput("eps", 1e-5);
  const std::string exported =
      makeProgram({"p_bn_weight", "p_bn_bias"},
                  {"b_bn_running_mean", "b_bn_running_var", "b_bn_num_batches_tracked"},
                  {{"bn", "aten._batch_norm_no_update.default", no_update, "bn"}}, "bn");
  std::string decomposed = exported;
  const std::string stack = "\"metadata\": {\"stack_trace\"";
  ASSERT_NE(decomposed.find(stack), std::string::npos);
  decomposed.replace(decomposed.find(stack), stack.size(),
                     "\"metadata\": {\"from_node\": \"[]\", \"stack_trace\"");
  auto in_default = Program::parse(exported, "t.json");
  auto in_functional = Program::parse(decomposed, "t.json");
  const Node& node =
      *in_default->graph().nodesWithTarget("torch.ops.aten._batch_norm_no_update.default")[0];
  EXPECT_FALSE(passes::isFunctionalIrNode(in_default->graph(), node));
  const std::vector<Site> functional_sites = collectSites(*in_functional);
  ASSERT_EQ(functional_sites.size(), 1u);
  EXPECT_EQ(functional_sites[0].pass->name(), "batch_norm_functional");
  const std::vector<Site> sites = collectSites(*in_default);
  ASSERT_EQ(sites.size(), 1u);
  EXPECT_EQ(sites[0].pass->name(), "batch_norm");
  // The default IR's train form: the target swapped, the increment inserted.
  switchMode(*in_default, Mode::kTrain);
  const std::string json = in_default->toJson();
  EXPECT_NE(json.find("aten._batch_norm_with_update.default"), std::string::npos);
  EXPECT_NE(json.find("aten.add_.Tensor"), std::string::npos);
  EXPECT_EQ(json.find("_batch_norm_no_update"), std::string::npos);
  // The functional IR's checks torch's output count (this test program has one output).
  EXPECT_THROW(switchMode(*in_functional, Mode::kTrain), Error);
}

}  // namespace
}  // namespace exmode
