// Nested graphs read as regions: parsed with their own values, written back byte for byte
// while unchanged, switched by the passes with the caller's operands kept in step.
// The programs are torch 2.13's exports (tests/data/regions, from
// tests/data/ir_probes/probe_regions.py's modules): BatchNorm2d under torch.no_grad() in
// eval and train, and Dropout in both branches of torch.cond in train.
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

#include "exmode/error.h"
#include "exmode/passes.h"
#include "exmode/program.h"

namespace exmode {
namespace {

std::string readData(const std::string& name) {
  std::ifstream in(std::string(EXMODE_TEST_DATA_DIR) + "/regions/" + name, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  EXPECT_FALSE(text.str().empty()) << name;
  return text.str();
}

void replaceOnce(std::string& text, const std::string& from, const std::string& to) {
  const std::size_t at = text.find(from);
  ASSERT_NE(at, std::string::npos) << from;
  text.replace(at, from.size(), to);
}

TEST(Regions, ReadsNestedGraphsAsGraphsOfTheirOwn) {
  auto program = Program::parse(readData("nograd_bn_eval.json"), "t.json");
  const Graph& graph = program->graph();
  ASSERT_EQ(graph.regions().size(), 1u);
  const Region& region = graph.regions().front();
  EXPECT_EQ(region.owner->target(), "torch.ops.higher_order.wrap_with_set_grad_enabled");
  EXPECT_EQ(region.name, "submod_1");
  EXPECT_EQ(region.path, "batch_norm/submod_1/");
  EXPECT_EQ(region.input, 1u);
  const Graph& inner = *region.graph;
  EXPECT_EQ(inner.region(), &region);
  EXPECT_EQ(inner.parent(), &graph);
  EXPECT_EQ(inner.inputs().size(), 5u);
  ASSERT_EQ(inner.nodes().size(), 1u);
  EXPECT_EQ(inner.nodes().front()->target(), "torch.ops.aten.batch_norm.default");
  EXPECT_TRUE(graph.nestedNodes().empty());  // nothing is kept verbatim
  // The region's inputs are what the caller passes: their buffers are the caller's.
  const Value* mean = inner.tryGetValue("b_inner_running_mean");
  ASSERT_NE(mean, nullptr);
  EXPECT_EQ(inner.operandOf(3), graph.tryGetValue("b_inner_running_mean"));
  ASSERT_NE(inner.inputSpecOf(mean), nullptr);
  EXPECT_EQ(inner.inputSpecOf(mean)->target, "inner.running_mean");
  EXPECT_EQ(inner.bufferInput("inner.running_mean"), mean);
  EXPECT_EQ(inner.bufferInput("inner.num_batches_tracked"), nullptr);  // not passed in eval
}

TEST(Regions, UnchangedProgramsAreWrittenByteForByte) {
  for (const char* name :
       {"nograd_bn_eval.json", "nograd_bn_train.json", "cond_dropout_train.json"}) {
    const std::string json = readData(name);
    auto program = Program::parse(json, name);
    EXPECT_EQ(program->toJson(), json) << name;
    // A switch to the mode it is in changes nothing either.
    const Mode mode =
        std::string(name).find("eval") != std::string::npos ? Mode::kEval : Mode::kTrain;
    EXPECT_TRUE(switchMode(*program, mode).changes.empty()) << name;
    EXPECT_EQ(program->toJson(), json) << name;
  }
}

// The region's graph as text, for comparing a switched program with torch's export.
std::string regionText(const Program& program) {
  const Region& region = program.graph().regions().front();
  std::string text = printGraph(*region.graph);
  text += "caller:";
  for (const NamedArgument& in : region.owner->inputs()) {
    if (in.arg.tensor() == nullptr) continue;
    text += ' ';
    text += in.arg.tensor()->name();
  }
  return text;
}

TEST(Regions, BatchNormCounterIsPassedInAndOutAsTorchExportsIt) {
  const std::string eval_json = readData("nograd_bn_eval.json");
  const std::string train_json = readData("nograd_bn_train.json");
  auto program = Program::parse(eval_json, "t.json");
  const SwitchReport to_train = switchMode(*program, Mode::kTrain);
  EXPECT_EQ(to_train.before, ProgramMode::kEval);
  EXPECT_EQ(to_train.after, ProgramMode::kTrain);
  ASSERT_EQ(to_train.changes.size(), 1u);
  EXPECT_EQ(to_train.changes[0].node, "batch_norm/submod_1/batch_norm");
  const Graph& inner = *program->graph().regions().front().graph;
  ASSERT_EQ(inner.inputs().size(), 6u);
  EXPECT_EQ(inner.inputs()[0].tensor()->name(), "b_inner_num_batches_tracked");
  // Written and read again, it is torch's train export.
  auto reread = Program::parse(program->toJson(), "t.json");
  auto train = Program::parse(train_json, "train.json");
  EXPECT_EQ(regionText(*reread), regionText(*train));
  // And back: the eval export, operand and input gone.
  const SwitchReport to_eval = switchMode(*reread, Mode::kEval);
  EXPECT_EQ(to_eval.after, ProgramMode::kEval);
  auto back = Program::parse(reread->toJson(), "t.json");
  auto eval = Program::parse(eval_json, "eval.json");
  EXPECT_EQ(regionText(*back), regionText(*eval));
}

TEST(Regions, AnUnchangedBranchKeepsItsText) {
  std::string json = readData("cond_dropout_train.json");
  // The false branch's dropout made an op no pass switches: that branch stays as it is.
  const std::size_t false_at = json.find("\"false_graph_0\"");
  ASSERT_NE(false_at, std::string::npos);
  const std::size_t op_at = json.find("torch.ops.aten.dropout.default", false_at);
  ASSERT_NE(op_at, std::string::npos);
  json.replace(op_at, std::string("torch.ops.aten.dropout.default").size(),
               "torch.ops.aten.identity.default");
  const std::string false_branch =
      json.substr(false_at, json.find("\"outputs\"", op_at) - false_at);
  auto program = Program::parse(json, "t.json");
  ASSERT_EQ(program->graph().regions().size(), 2u);
  const SwitchReport report = switchMode(*program, Mode::kEval);
  ASSERT_EQ(report.changes.size(), 1u);
  EXPECT_EQ(report.changes[0].node, "cond/true_graph_0/dropout");
  const std::string out = program->toJson();
  EXPECT_NE(out.find(false_branch), std::string::npos);
  EXPECT_NE(out.find("\"as_bool\": false"), std::string::npos);
  auto back = Program::parse(out, "t.json");
  switchMode(*back, Mode::kTrain);
  EXPECT_EQ(back->toJson(), json);  // the flag is all that changed, and it changes back
}

TEST(Regions, TrainBatchNormInsideCondIsRefused) {
  // torch does not export it; the eval form (a cond branch holding an eval batch norm with
  // running statistics) is made from the no_grad program by renaming its op.
  std::string json = readData("nograd_bn_eval.json");
  replaceOnce(json, "torch.ops.higher_order.wrap_with_set_grad_enabled",
              "torch.ops.higher_order.cond");
  auto program = Program::parse(json, "t.json");
  const std::string before = program->toJson();
  try {
    switchMode(*program, Mode::kTrain);
    FAIL() << "expected a refusal";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kUnsupported);
    EXPECT_NE(std::string(e.what()).find("input mutation"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("batch_norm/submod_1/batch_norm"), std::string::npos);
  }
  EXPECT_EQ(program->toJson(), before);
}

TEST(Regions, AnIncompleteNestedGraphIsKeptVerbatimAndRefused) {
  std::string json = readData("nograd_bn_eval.json");
  replaceOnce(json, "\"tensor_values\": {\"mul\"", "\"other_values\": {\"mul\"");
  auto program = Program::parse(json, "t.json");
  EXPECT_TRUE(program->graph().regions().empty());
  ASSERT_EQ(program->graph().nestedNodes().size(), 1u);
  EXPECT_EQ(program->toJson(), json);
  EXPECT_THROW(switchMode(*program, Mode::kTrain), Error);
}

TEST(Regions, ErrorsInsideARegionNameIt) {
  std::string json = readData("nograd_bn_eval.json");
  replaceOnce(json, "\"outputs\": [{\"as_tensor\": {\"name\": \"batch_norm\"}}], \"nodes\"",
              "\"outputs\": [{\"as_tensor\": {\"name\": \"nowhere\"}}], \"nodes\"");
  try {
    Program::parse(json, "t.json");
    FAIL() << "expected a bad program";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kBadProgram);
    const std::string what = e.what();
    EXPECT_NE(what.find("t.json: nested graph 'batch_norm/submod_1'"), std::string::npos) << what;
    EXPECT_NE(what.find("nowhere"), std::string::npos) << what;
  }
}

}  // namespace
}  // namespace exmode
