// The drop-path pass: each form switched to eval and back, byte for byte; near misses left
// alone; records kept through a re-serialization and beside other custom metadata.
#include <gtest/gtest.h>

#include <memory>
#include <regex>

#include "exmode/error.h"
#include "exmode/passes.h"
#include "exmode/program.h"
#include "passes/remembered.h"
#include "test_programs.h"

namespace exmode {
namespace {

using testing::boolInput;
using testing::floatInput;
using testing::makeProgram;
using testing::tensorInput;
using testing::TestNode;

// Every tensor of the test programs is [2, 3]: x and the multiply's output must agree, and
// the mask's size is its literal argument.
std::string withShapes(std::string json) {
  return std::regex_replace(json, std::regex(R"("sizes": \[\])"),
                            R"("sizes": [{"as_int": 2}, {"as_int": 3}])");
}

std::string ints(const std::string& name, const std::string& list) {
  return "{\"name\": \"" + name + "\", \"arg\": {\"as_ints\": " + list + "}, \"kind\": 1}";
}

// linear -> <drop path of `mask` nodes> -> add(x, <drop path output>)
std::string program(std::vector<TestNode> mask, const std::string& out) {
  std::vector<TestNode> nodes = {
      {"linear", "aten.linear.default",
       tensorInput("input", "x") + ", " + tensorInput("weight", "p_lin_weight"), "lin"}};
  nodes.insert(nodes.end(), mask.begin(), mask.end());
  nodes.push_back(
      {"add", "aten.add.Tensor", tensorInput("self", "x") + ", " + tensorInput("other", out), ""});
  return withShapes(makeProgram({"p_lin_weight"}, {}, nodes, "add"));
}

std::string timm(const std::string& size = "[2, 1]", double p = 0.8, double divisor = 0.8) {
  return program(
      {{"new_empty", "aten.new_empty.default",
        tensorInput("self", "linear") + ", " + ints("size", size) + ", " +
            boolInput("pin_memory", false),
        "drop_path"},
       {"bernoulli_", "aten.bernoulli_.float",
        tensorInput("self", "new_empty") + ", " + floatInput("p", p), "drop_path"},
       {"div_", "aten.div_.Tensor",
        tensorInput("self", "bernoulli_") + ", " + floatInput("other", divisor), "drop_path"},
       {"mul", "aten.mul.Tensor",
        tensorInput("self", "linear") + ", " + tensorInput("other", "div_"), "drop_path"}},
      "mul");
}

std::string torchvisionBatch() {
  return program({{"empty", "aten.empty.memory_format",
                   ints("size", "[1, 1]") +
                       ", {\"name\": \"dtype\", \"arg\": {\"as_scalar_type\": 7}, \"kind\": 2}, "
                       "{\"name\": \"device\", \"arg\": {\"as_device\": {\"type\": \"cpu\", "
                       "\"index\": null}}, \"kind\": 2}, " +
                       boolInput("pin_memory", false),
                   "sd"},
                  {"bernoulli_", "aten.bernoulli_.float",
                   tensorInput("self", "empty") + ", " + floatInput("p", 0.9), "sd"},
                  {"div_", "aten.div_.Tensor",
                   tensorInput("self", "bernoulli_") + ", " + floatInput("other", 0.9), "sd"},
                  {"mul", "aten.mul.Tensor",
                   tensorInput("self", "div_") + ", " + tensorInput("other", "linear"), "sd"}},
                 "mul");
}

std::string huggingFace() {
  return program({{"rand", "aten.rand.default", ints("size", "[2, 1]"), "dp"},
                  {"add_1", "aten.add.Tensor",
                   tensorInput("self", "rand") + ", " + floatInput("other", 0.75), "dp"},
                  {"floor_", "aten.floor_.default", tensorInput("self", "add_1"), "dp"},
                  {"div", "aten.div.Tensor",
                   tensorInput("self", "linear") + ", " + floatInput("other", 0.75), "dp"},
                  {"mul", "aten.mul.Tensor",
                   tensorInput("self", "div") + ", " + tensorInput("other", "floor_"), "dp"}},
                 "mul");
}

std::string evalProgram() { return program({}, "linear"); }

std::vector<std::unique_ptr<Program>>& programs() {
  static std::vector<std::unique_ptr<Program>> kept;  // reports view their programs
  return kept;
}

std::string switched(const std::string& json, Mode mode, SwitchReport* report = nullptr) {
  auto& program = programs().emplace_back(Program::parse(json, "t.json"));
  SwitchReport r = switchMode(*program, mode);
  if (report != nullptr) *report = r;
  return program->toJson();
}

std::string printed(const std::string& json) {
  return printGraph(Program::parse(json, "t.json")->graph());
}

std::size_t dropPathSites(const std::string& json) {
  auto program = Program::parse(json, "t.json");
  std::size_t n = 0;
  for (const Site& site : collectSites(program->graph())) n += site.pass->name() == "drop_path";
  return n;
}

TEST(DropPath, EachFormGoesToEvalAndBackByteForByte) {
  for (const std::string& train : {timm(), torchvisionBatch(), huggingFace()}) {
    SwitchReport report;
    const std::string eval = switched(train, Mode::kEval, &report);
    EXPECT_EQ(printed(eval), printed(evalProgram()));
    ASSERT_EQ(report.changes.size(), 1u);
    EXPECT_EQ(report.changes[0].op, "aten.mul.Tensor");
    EXPECT_EQ(report.changes[0].after, "removed");
    EXPECT_EQ(report.after, ProgramMode::kEval);
    EXPECT_NE(eval.find("exmode_drop_path"), std::string::npos);
    EXPECT_EQ(dropPathSites(eval), 1u);
    EXPECT_EQ(switched(eval, Mode::kTrain), train);
    EXPECT_EQ(switched(switched(switched(eval, Mode::kTrain), Mode::kEval), Mode::kTrain), train);
  }
}

TEST(DropPath, ReportsP) {
  SwitchReport report;
  switched(timm(), Mode::kEval, &report);
  EXPECT_EQ(report.changes[0].before, "drop_path p=0.2");
  auto program = Program::parse(timm(), "t.json");
  const auto sites = collectSites(program->graph());
  ASSERT_EQ(sites.size(), 1u);
  EXPECT_EQ(sites[0].p, 0.2);
  EXPECT_EQ(sites[0].state, Site::State::kTrain);
  std::vector<const Node*> members;
  sites[0].pass->siteMembers(sites[0], members);
  EXPECT_EQ(members.size(), 4u);
}

TEST(DropPath, NearMissesAreLeftAlone) {
  for (const std::string& json :
       {timm("[2, 3]"), timm("[2, 1]", 0.8, 0.7), timm("[3, 1]"), timm("[2, 1, 1]")}) {
    EXPECT_EQ(dropPathSites(json), 0u);
    EXPECT_EQ(switched(json, Mode::kEval), json);
  }
  // Unscaled (timm's scale_by_keep=False): the multiply reads bernoulli_ itself.
  const std::string unscaled =
      program({{"new_empty", "aten.new_empty.default",
                tensorInput("self", "linear") + ", " + ints("size", "[2, 1]"), ""},
               {"bernoulli_", "aten.bernoulli_.float",
                tensorInput("self", "new_empty") + ", " + floatInput("p", 0.8), ""},
               {"mul", "aten.mul.Tensor",
                tensorInput("self", "linear") + ", " + tensorInput("other", "bernoulli_"), ""}},
              "mul");
  EXPECT_EQ(dropPathSites(unscaled), 0u);
  // The mask read twice.
  std::string twice = timm();
  twice.replace(twice.find(tensorInput("self", "x")), tensorInput("self", "x").size(),
                tensorInput("self", "div_"));
  EXPECT_EQ(dropPathSites(twice), 0u);
}

TEST(DropPath, TheRecordSurvivesAReserialization) {
  const std::string eval = switched(timm(), Mode::kEval);
  const std::string again = Program::parse(eval, "t.json")->toJson();
  EXPECT_EQ(switched(again, Mode::kTrain), timm());
}

TEST(DropPath, OtherCustomMetadataIsKept) {
  std::string train = timm();
  const std::string anchor = "\"nn_module_stack\": \"L__self__,,M;L__self__,,torch.nn.Module\"";
  const std::size_t at = train.rfind(anchor);  // the add's metadata
  ASSERT_NE(at, std::string::npos);
  train.insert(at + anchor.size(), ", \"custom\": \"{\\\"a\\\": 1}\"");
  const std::string eval = switched(train, Mode::kEval);
  EXPECT_NE(eval.find("\"custom\": \"{\\\"a\\\": 1, \\\"exmode_drop_path\\\": {"),
            std::string::npos);
  EXPECT_EQ(switched(eval, Mode::kTrain), train);
}

TEST(DropPath, AnEvalExportHasNothingToRestore) {
  EXPECT_EQ(dropPathSites(evalProgram()), 0u);
  EXPECT_EQ(switched(evalProgram(), Mode::kTrain), evalProgram());
}

TEST(DropPath, ABrokenRecordIsABadProgram) {
  std::string eval = switched(timm(), Mode::kEval);
  const std::string x = R"(\"x\": \"linear\")";
  ASSERT_NE(eval.find(x), std::string::npos);
  eval.replace(eval.find(x), x.size(), R"(\"x\": \"nothere\")");
  try {
    dropPathSites(eval);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kBadProgram);
    EXPECT_NE(std::string(e.what()).find("exmode_drop_path"), std::string::npos) << e.what();
  }
}

TEST(Remembered, GetAndSetOneKey) {
  auto program = Program::parse(evalProgram(), "t.json");
  rewrite::Rewriter rewriter(*program);
  Node& add = rewriter.mutableNode(*program->graph().nodes().back());
  const std::string before = program->toJson();
  EXPECT_FALSE(passes::remembered::get(add, "k"));
  passes::remembered::set(rewriter, add, "k", "[1, 2]");
  passes::remembered::set(rewriter, add, "j", "{\"b\": \"c\"}");
  EXPECT_EQ(passes::remembered::get(add, "k"), "[1, 2]");
  EXPECT_EQ(passes::remembered::get(add, "j"), "{\"b\": \"c\"}");
  passes::remembered::set(rewriter, add, "k", "3");
  EXPECT_EQ(passes::remembered::get(add, "k"), "3");
  EXPECT_EQ(add.metadataField("custom"), "{\"k\": 3, \"j\": {\"b\": \"c\"}}");
  passes::remembered::set(rewriter, add, "k", std::nullopt);
  EXPECT_EQ(add.metadataField("custom"), "{\"j\": {\"b\": \"c\"}}");
  passes::remembered::set(rewriter, add, "j", std::nullopt);
  EXPECT_EQ(program->toJson(), before);
}

}  // namespace
}  // namespace exmode
