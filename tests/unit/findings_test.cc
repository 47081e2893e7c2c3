// The findings analysis and the module type list (findings.h).
#include "exmode/findings.h"

#include <gtest/gtest.h>

#include "exmode/error.h"
#include "test_programs.h"

namespace exmode {
namespace {

using testing::TestNode;

std::vector<Finding> findingsOf(const std::string& json,
                                const ModuleTypeRules& rules = ModuleTypeRules::builtIn()) {
  auto program = Program::parse(json, "t.json");
  return analyze(*program, collectSites(*program), rules);
}

TEST(ModuleTypeRules, ReadsTheFormatAndMatchesGlobs) {
  ModuleTypeRules rules;
  rules.add(
      "# comment\n"
      "\n"
      "pkg.models.Aux  both  pkg  runs only in training\n"
      "  pkg.blocks.*Block   drop-path   pkg   holds a drop path  \n"
      "pkg.Head  to-eval  pkg  decodes boxes only in eval\n",
      "rules.txt");
  ASSERT_EQ(rules.rules().size(), 3u);
  EXPECT_EQ(rules.find("pkg.models.Aux")->when, Finding::When::kBoth);
  const ModuleTypeRule* block = rules.find("pkg.blocks.ResBlock");
  ASSERT_NE(block, nullptr);
  EXPECT_TRUE(block->drop_path);
  EXPECT_EQ(block->when, Finding::When::kToTrain);
  EXPECT_EQ(block->reason, "holds a drop path");
  EXPECT_EQ(rules.find("pkg.Head")->when, Finding::When::kToEval);
  EXPECT_EQ(rules.find("pkg.models.Aux2"), nullptr);
  EXPECT_EQ(rules.find("other.blocks.ResBlock"), nullptr);
}

TEST(ModuleTypeRules, NamesTheLineOfAMalformedRule) {
  ModuleTypeRules rules;
  try {
    rules.add("a.B  both  lib  fine\nc.D  sometimes  lib  reason\n", "mine.txt");
    FAIL() << "accepted a bad <when>";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kUsage);
    EXPECT_NE(std::string(e.what()).find("mine.txt:2: 'sometimes'"), std::string::npos) << e.what();
  }
  EXPECT_THROW(rules.add("only.a.type  both\n", "mine.txt"), Error);
  EXPECT_THROW(rules.addFile("/nonexistent/exmode/rules.txt"), Error);
}

TEST(ModuleTypeRules, TheBuiltInListIsCompiledIn) {
  const ModuleTypeRules& rules = ModuleTypeRules::builtIn();
  EXPECT_GT(rules.rules().size(), 100u);
  EXPECT_NE(rules.find("torchvision.models.inception.Inception3"), nullptr);
  const ModuleTypeRule* block = rules.find("timm.models.vision_transformer.Block");
  ASSERT_NE(block, nullptr);
  EXPECT_TRUE(block->drop_path);
}

// x -> fc (linear) -> out; `aux` has parameters that no node reads.
std::string withUnreadHead() {
  const std::vector<TestNode> nodes = {
      {"linear", "aten.linear.default",
       testing::tensorInput("input", "x") + ", " + testing::tensorInput("weight", "p_fc_weight"),
       "fc", "torch.nn.modules.linear.Linear"},
      {"dropout", "aten.dropout.default",
       testing::tensorInput("input", "linear") + ", " + testing::floatInput("p", 0.1) + ", " +
           testing::boolInput("train", false),
       "drop", "torch.nn.modules.dropout.Dropout"},
  };
  return testing::makeProgram({"p_fc_weight", "p_fc_bias", "p_aux_weight", "p_aux_bias"}, {}, nodes,
                              "dropout");
}

TEST(Findings, StateOfAModuleThatDidNotRunIsOneFinding) {
  const auto findings = findingsOf(withUnreadHead());
  ASSERT_EQ(findings.size(), 1u);
  const Finding& f = findings[0];
  EXPECT_EQ(f.kind, Finding::Kind::kUnusedState);
  EXPECT_EQ(f.when, Finding::When::kBoth);
  EXPECT_EQ(f.module, "aux");
  EXPECT_EQ(f.node, "p_aux_weight");
  EXPECT_NE(f.reason.find("2 parameters and buffers"), std::string::npos) << f.reason;
  // fc ran (a node is in it): its unread bias is dead state, not a branch.
}

TEST(Findings, ACounterBesideReadStatisticsIsNotUnusedState) {
  EXPECT_TRUE(findingsOf(testing::bnDropoutEvalProgram()).empty());
  EXPECT_TRUE(findingsOf(testing::bnDropoutTrainProgram()).empty());
}

std::string withNoise(bool train) {
  const std::vector<TestNode> nodes = {
      {"dropout", "aten.dropout.default",
       testing::tensorInput("input", "x") + ", " + testing::floatInput("p", 0.3) + ", " +
           testing::boolInput("train", train),
       "drop", "torch.nn.modules.dropout.Dropout"},
      {"randn_like", "aten.randn_like.default", testing::tensorInput("self", "dropout"), "", "M"},
      {"add", "aten.add.Tensor",
       testing::tensorInput("self", "dropout") + ", " + testing::tensorInput("other", "randn_like"),
       "", "M"},
  };
  return testing::makeProgram({}, {}, nodes, "add");
}

TEST(Findings, RandomOpsOutsideSitesConcernTheSwitchToEval) {
  const auto findings = findingsOf(withNoise(true));
  ASSERT_EQ(findings.size(), 1u);
  EXPECT_EQ(findings[0].kind, Finding::Kind::kRandomOp);
  EXPECT_EQ(findings[0].when, Finding::When::kToEval);
  EXPECT_EQ(findings[0].op, "aten.randn_like.default");

  auto program = Program::parse(withNoise(true), "t.json");
  SwitchReport to_train = switchMode(*program, Mode::kTrain);
  EXPECT_TRUE(to_train.warnings.empty());  // already in train: the export itself
  SwitchReport to_eval = switchMode(*program, Mode::kEval);
  ASSERT_EQ(to_eval.warnings.size(), 1u);
  EXPECT_EQ(to_eval.warnings[0].kind, Finding::Kind::kRandomOp);
  // Back to train: the noise is the train export's own, and the dropout's two readers were
  // its own too, as the dropout pass remembered going to eval.
  SwitchReport back = switchMode(*program, Mode::kTrain);
  EXPECT_TRUE(back.warnings.empty()) << back.warnings[0].reason;
}

TEST(Findings, AnEvalExportsDropoutWithSeveralReadersMayBeMerged) {
  // Read as an eval export: nothing reads x after the dropout, its output has two readers.
  const auto findings = findingsOf(withNoise(false));
  ASSERT_EQ(findings.size(), 2u);
  EXPECT_EQ(findings[0].kind, Finding::Kind::kMergedDropout);
  EXPECT_EQ(findings[0].when, Finding::When::kToTrain);
  EXPECT_EQ(findings[1].kind, Finding::Kind::kRandomOp);
}

TEST(Findings, ADropoutWhoseInputIsReadLaterIsNotMerged) {
  const std::vector<TestNode> nodes = {
      {"feature_dropout", "aten.feature_dropout.default",
       testing::tensorInput("input", "x") + ", " + testing::floatInput("p", 0.5) + ", " +
           testing::boolInput("train", false),
       "drop", "torch.nn.modules.dropout.Dropout2d"},
      {"add", "aten.add.Tensor",
       testing::tensorInput("self", "feature_dropout") + ", " + testing::tensorInput("other", "x"),
       "", "M"},
  };
  EXPECT_TRUE(findingsOf(testing::makeProgram({}, {}, nodes, "add")).empty());
}

TEST(Findings, AFunctionalDropoutWithPZeroInEvalHasNoTrainModeP) {
  auto dropout = [](const std::string& type) {
    return testing::makeProgram(
        {}, {},
        {{"dropout", "aten.dropout.default",
          testing::tensorInput("input", "x") + ", " + testing::floatInput("p", 0.0) + ", " +
              testing::boolInput("train", false),
          "attn", type}},
        "dropout");
  };
  const auto functional = findingsOf(dropout("pkg.SelfAttention"));
  ASSERT_EQ(functional.size(), 1u);
  EXPECT_EQ(functional[0].kind, Finding::Kind::kUnrecorded);
  EXPECT_EQ(functional[0].module_type, "pkg.SelfAttention");
  // An nn.Dropout(0.0) module has p 0.0 in both modes.
  EXPECT_TRUE(findingsOf(dropout("torch.nn.modules.dropout.Dropout")).empty());
}

TEST(Findings, ListedModuleTypesAreFoundOncePerModule) {
  const std::vector<TestNode> nodes = {
      {"relu", "aten.relu.default", testing::tensorInput("self", "x"), "head", "pkg.Aux"},
      {"relu_1", "aten.relu.default", testing::tensorInput("self", "relu"), "head", "pkg.Aux"},
  };
  const std::string json = testing::makeProgram({}, {}, nodes, "relu_1");
  EXPECT_TRUE(findingsOf(json).empty());
  ModuleTypeRules rules;
  rules.add("pkg.Aux  to-eval  pkg  returns an extra output only in training\n", "r.txt");
  const auto findings = findingsOf(json, rules);
  ASSERT_EQ(findings.size(), 1u);
  EXPECT_EQ(findings[0].kind, Finding::Kind::kModeDependentModule);
  EXPECT_EQ(findings[0].when, Finding::When::kToEval);
  EXPECT_EQ(findings[0].module, "head");
  EXPECT_EQ(findings[0].node, "relu");
  EXPECT_NE(findings[0].reason.find("(pkg)"), std::string::npos);

  auto program = Program::parse(json, "t.json");
  EXPECT_EQ(switchMode(*program, Mode::kEval, {}, nullptr, &rules).warnings.size(), 1u);
  EXPECT_TRUE(switchMode(*program, Mode::kTrain, {}, nullptr, &rules).warnings.empty());
}

TEST(Findings, ASwitchWithACacheReportsWhatAFreshOneReports) {
  auto cached = Program::parse(withNoise(true), "t.json");
  auto fresh_json = withNoise(true);
  SwitchCache cache;
  for (int round = 0; round < 3; ++round) {
    for (Mode mode : {Mode::kEval, Mode::kTrain}) {
      auto fresh = Program::parse(fresh_json, "t.json");
      const SwitchReport expected = switchMode(*fresh, mode);
      fresh_json = fresh->toJson();
      const SwitchReport got = switchMode(*cached, mode, {}, &cache);
      ASSERT_EQ(got.warnings.size(), expected.warnings.size()) << round;
      for (std::size_t i = 0; i < got.warnings.size(); ++i) {
        EXPECT_EQ(got.warnings[i].node, expected.warnings[i].node);
        EXPECT_EQ(got.warnings[i].reason, expected.warnings[i].reason);
      }
    }
  }
}

TEST(Findings, NamesOfKindsAndDirections) {
  EXPECT_EQ(findingKindName(Finding::Kind::kUnusedState), "unused-state");
  EXPECT_EQ(findingKindName(Finding::Kind::kMergedDropout), "merged-dropout");
  EXPECT_EQ(findingWhenName(Finding::When::kToTrain), "to-train");
  const std::vector<Finding> all = {{.when = Finding::When::kToTrain},
                                    {.when = Finding::When::kToEval},
                                    {.when = Finding::When::kBoth}};
  EXPECT_EQ(findingsForSwitch(all, ProgramMode::kEval, Mode::kTrain).size(), 2u);
  EXPECT_EQ(findingsForSwitch(all, ProgramMode::kNone, Mode::kEval).size(), 2u);
  EXPECT_TRUE(findingsForSwitch(all, ProgramMode::kTrain, Mode::kTrain).empty());
  EXPECT_EQ(findingsForSwitch(all, ProgramMode::kMixed, Mode::kTrain).size(), 2u);
}

}  // namespace
}  // namespace exmode
