// The mode passes on small graphs: golden text in, text out, and cases that must not match.
#include "exmode/passes.h"

#include <gtest/gtest.h>

#include "exmode/error.h"
#include "exmode/program.h"
#include "exmode/rewrite.h"
#include "test_programs.h"

namespace exmode {
namespace {

using testing::boolInput;
using testing::floatInput;
using testing::intInput;
using testing::makeProgram;
using testing::noneInput;
using testing::tensorInput;
using testing::TestNode;

std::string switched(const std::string& json, Mode mode, SwitchReport* report = nullptr) {
  // A report's changes are views into its program: keep every program for the test run.
  static std::vector<std::unique_ptr<Program>> programs;
  auto& program = programs.emplace_back(Program::parse(json, "t.json"));
  SwitchReport r = switchMode(*program, mode);
  if (report != nullptr) *report = r;
  return program->toJson();
}

std::string printed(const std::string& json) {
  return printGraph(Program::parse(json, "t.json")->graph());
}

TEST(Passes, TrainToEvalMatchesTheEvalExport) {
  SwitchReport report;
  const std::string eval = switched(testing::bnDropoutTrainProgram(), Mode::kEval, &report);
  EXPECT_EQ(printed(eval), printed(testing::bnDropoutEvalProgram()));
  EXPECT_EQ(report.before, ProgramMode::kTrain);
  EXPECT_EQ(report.after, ProgramMode::kEval);
  ASSERT_EQ(report.changes.size(), 2u);  // in graph order
  EXPECT_EQ(report.changes[0].op, "aten.batch_norm.default");
  EXPECT_EQ(report.changes[0].before, "training=True, num_batches_tracked += 1");
  EXPECT_EQ(report.changes[1].op, "aten.dropout.default");
  EXPECT_EQ(report.changes[1].module, "drop");
  // The erased increment's output leaves tensor_values too.
  EXPECT_EQ(eval.find("\"add_\""), std::string::npos);
}

TEST(Passes, EvalToTrainMatchesTheTrainExport) {
  const std::string train = switched(testing::bnDropoutEvalProgram(), Mode::kTrain);
  EXPECT_EQ(printed(train), printed(testing::bnDropoutTrainProgram()));
  EXPECT_NE(train.find("\"nn_module_stack\": \"L__self__,,M;L__self__bn,bn,torch.nn.Module\"}, "
                       "\"is_hop_single_tensor_return\": null, \"name\": \"add_\""),
            std::string::npos)
      << train;
}

TEST(Passes, SwitchingToTheCurrentModeChangesNothing) {
  for (const auto& [json, mode] : {std::pair{testing::bnDropoutTrainProgram(), Mode::kTrain},
                                   std::pair{testing::bnDropoutEvalProgram(), Mode::kEval}}) {
    SwitchReport report;
    EXPECT_EQ(switched(json, mode, &report), json);
    EXPECT_TRUE(report.changes.empty());
  }
}

TEST(Passes, RoundTripsGiveBackTheProgram) {
  const std::string train = testing::bnDropoutTrainProgram();
  EXPECT_EQ(printed(switched(switched(train, Mode::kEval), Mode::kTrain)), printed(train));
  const std::string eval = testing::bnDropoutEvalProgram();
  EXPECT_EQ(switched(switched(eval, Mode::kTrain), Mode::kEval), eval);
}

std::string bnArgs(const std::string& input, bool training, bool tracked = true) {
  return tensorInput("input", input) + ", " + tensorInput("weight", "p_bn_weight") + ", " +
         tensorInput("bias", "p_bn_bias") + ", " +
         (tracked ? tensorInput("running_mean", "b_bn_running_mean") + ", " +
                        tensorInput("running_var", "b_bn_running_var")
                  : noneInput("running_mean") + ", " + noneInput("running_var")) +
         ", " + boolInput("training", training) + ", " + floatInput("momentum", 0.1) + ", " +
         floatInput("eps", 1e-5) + ", " + boolInput("cudnn_enabled", false);
}

// One batch-norm module called twice: the counter is incremented twice, in a chain.
std::string calledTwice(bool train) {
  std::vector<TestNode> nodes;
  if (train)
    nodes.push_back({"add_", "aten.add_.Tensor",
                     tensorInput("self", "b_bn_num_batches_tracked") + ", " + intInput("other", 1),
                     "bn"});
  nodes.push_back({"batch_norm", "aten.batch_norm.default", bnArgs("x", train), "bn"});
  if (train)
    nodes.push_back({"add__1", "aten.add_.Tensor",
                     tensorInput("self", "add_") + ", " + intInput("other", 1), "bn"});
  nodes.push_back({"batch_norm_1", "aten.batch_norm.default", bnArgs("batch_norm", train), "bn"});
  return makeProgram({"p_bn_weight", "p_bn_bias"},
                     {"b_bn_running_mean", "b_bn_running_var", "b_bn_num_batches_tracked"}, nodes,
                     "batch_norm_1");
}

TEST(Passes, ModuleCalledTwiceCountsTwice) {
  EXPECT_EQ(printed(switched(calledTwice(true), Mode::kEval)), printed(calledTwice(false)));
  EXPECT_EQ(printed(switched(calledTwice(false), Mode::kTrain)), printed(calledTwice(true)));
}

TEST(Passes, SwitchingOneProgramBackAndForthStaysExactAndDoesNotGrow) {
  const auto program = Program::parse(calledTwice(true), "t.json");
  const std::string train = printed(calledTwice(true));
  const std::string eval = printed(calledTwice(false));
  std::size_t values = 0;
  for (int i = 0; i < 20; ++i) {
    switchMode(*program, Mode::kEval);
    EXPECT_EQ(printGraph(program->graph()), eval);
    switchMode(*program, Mode::kTrain);
    EXPECT_EQ(printGraph(program->graph()), train);  // the same names every time
    if (i == 0) values = program->graph().valueCount();
    EXPECT_EQ(program->graph().valueCount(), values) << "after " << i + 1 << " round trips";
  }
  EXPECT_EQ(printed(program->toJson()), train);
}

// A switch that reuses the sites its cache kept gives what one that collects them gives:
// the same program and the same report, every time.
TEST(Passes, SwitchesWithACacheMatchSwitchesWithout) {
  for (const std::string& json : {calledTwice(true), testing::bnDropoutTrainProgram()}) {
    const auto cached = Program::parse(json, "t.json");
    const auto fresh = Program::parse(json, "t.json");
    SwitchCache cache;
    int i = 0;
    // Repeats too: a switch to the mode a program is in changes nothing and keeps the sites.
    for (Mode mode : {Mode::kEval, Mode::kEval, Mode::kTrain, Mode::kTrain, Mode::kEval,
                      Mode::kTrain, Mode::kEval}) {
      ++i;
      const SwitchReport a = switchMode(*cached, mode, "m", &cache);
      const SwitchReport b = switchMode(*fresh, mode, "m");
      EXPECT_NE(cache.graph_id, 0u) << "the switch kept its sites";
      EXPECT_EQ(a.before, b.before);
      EXPECT_EQ(a.after, b.after);
      ASSERT_EQ(a.changes.size(), b.changes.size());
      for (std::size_t k = 0; k < a.changes.size(); ++k) {
        EXPECT_EQ(a.changes[k].node, b.changes[k].node);
        EXPECT_EQ(a.changes[k].before, b.changes[k].before);
        EXPECT_EQ(a.changes[k].after, b.changes[k].after);
      }
      EXPECT_EQ(cached->toJson(), fresh->toJson()) << "switch " << i;
    }
  }
}

// Sites kept for a graph that changed since (here: a flag set by another rewrite) are not
// used: the next switch collects them again and sees the change.
TEST(Passes, ACacheIsNotUsedOnceTheGraphChangedOtherwise) {
  const auto program = Program::parse(testing::bnDropoutTrainProgram(), "t.json");
  SwitchCache cache;
  switchMode(*program, Mode::kEval, "m", &cache);
  {
    rewrite::Rewriter rewriter(*program);
    for (const auto& node : program->graph().nodes()) {
      if (node->target() == "torch.ops.aten.dropout.default")
        rewriter.setInput(*node, "train", rewriter.boolArg(true));
    }
  }
  const SwitchReport report = switchMode(*program, Mode::kEval, "m", &cache);
  EXPECT_EQ(report.before, ProgramMode::kMixed);
  ASSERT_EQ(report.changes.size(), 1u);
  EXPECT_EQ(report.changes[0].op, "aten.dropout.default");
  EXPECT_EQ(program->toJson(), switched(testing::bnDropoutTrainProgram(), Mode::kEval));
  // Nor is a cache kept for another program, even one read from the same text.
  const auto other = Program::parse(testing::bnDropoutTrainProgram(), "t.json");
  EXPECT_EQ(switchMode(*other, Mode::kEval, "m", &cache).changes.size(), 2u);
}

// torch writes one increment per call; a malformed program with two before one call loses
// both going to eval (torch's eval export has none), and gets one back going to train.
TEST(Passes, EvalErasesEveryIncrementOfASite) {
  auto program = [](bool train, int increments) {
    std::vector<TestNode> nodes;
    std::string counter = "b_bn_num_batches_tracked";
    for (int i = 0; i < increments; ++i) {
      const std::string name = i == 0 ? "add_" : "add__" + std::to_string(i);
      nodes.push_back({name, "aten.add_.Tensor",
                       tensorInput("self", counter) + ", " + intInput("other", 1), "bn"});
      counter = name;
    }
    nodes.push_back({"batch_norm", "aten.batch_norm.default", bnArgs("x", train), "bn"});
    return makeProgram({"p_bn_weight", "p_bn_bias"},
                       {"b_bn_running_mean", "b_bn_running_var", "b_bn_num_batches_tracked"}, nodes,
                       "batch_norm");
  };
  const std::string eval = switched(program(true, 2), Mode::kEval);
  EXPECT_EQ(printed(eval), printed(program(false, 0)));
  EXPECT_EQ(printed(switched(eval, Mode::kTrain)), printed(program(true, 1)));
}

TEST(Passes, BatchNormWithoutRunningStatsIsFixed) {
  const std::string json = makeProgram(
      {"p_bn_weight", "p_bn_bias"}, {},
      {{"batch_norm", "aten.batch_norm.default", bnArgs("x", true, false), "bn"}}, "batch_norm");
  auto program = Program::parse(json, "t.json");
  const std::vector<Site> sites = collectSites(program->graph());
  ASSERT_EQ(sites.size(), 1u);
  EXPECT_EQ(sites[0].state, Site::State::kFixed);
  EXPECT_EQ(detectMode(sites), ProgramMode::kNone);
  EXPECT_EQ(switched(json, Mode::kEval), json);
  EXPECT_EQ(switched(json, Mode::kTrain), json);
}

TEST(Passes, MixedProgramsAreDetectedAndFullySwitched) {
  // Batch norm frozen (eval) while dropout trains, as in QAT.
  const std::string json =
      makeProgram({"p_bn_weight", "p_bn_bias"},
                  {"b_bn_running_mean", "b_bn_running_var", "b_bn_num_batches_tracked"},
                  {{"batch_norm", "aten.batch_norm.default", bnArgs("x", false), "bn"},
                   {"dropout", "aten.dropout.default",
                    tensorInput("input", "batch_norm") + ", " + floatInput("p", 0.5) + ", " +
                        boolInput("train", true),
                    "drop"}},
                  "dropout");
  EXPECT_EQ(detectMode(collectSites(Program::parse(json, "t.json")->graph())), ProgramMode::kMixed);
  SwitchReport report;
  switched(json, Mode::kTrain, &report);
  EXPECT_EQ(report.before, ProgramMode::kMixed);
  EXPECT_EQ(report.after, ProgramMode::kTrain);
  ASSERT_EQ(report.changes.size(), 1u);
  EXPECT_EQ(report.changes[0].after, "training=True, num_batches_tracked += 1");
}

TEST(Passes, LeavesLookalikesAlone) {
  // add_(counter, 2) is not the increment; add_(other buffer, 1) is not either.
  const std::string json = makeProgram(
      {"p_bn_weight", "p_bn_bias"},
      {"b_bn_running_mean", "b_bn_running_var", "b_bn_num_batches_tracked", "b_other_count"},
      {{"add_", "aten.add_.Tensor",
        tensorInput("self", "b_bn_num_batches_tracked") + ", " + intInput("other", 2), "bn"},
       {"add__1", "aten.add_.Tensor",
        tensorInput("self", "b_other_count") + ", " + intInput("other", 1), "other"},
       {"batch_norm", "aten.batch_norm.default", bnArgs("x", true), "bn"}},
      "batch_norm");
  auto program = Program::parse(json, "t.json");
  EXPECT_EQ(collectSites(program->graph()).size(), 1u);
  SwitchReport report = switchMode(*program, Mode::kEval);
  ASSERT_EQ(report.changes.size(), 1u);
  EXPECT_EQ(report.changes[0].before, "training=True");  // no increment of its own to erase
  const std::string text = printGraph(program->graph());
  EXPECT_NE(text.find("%add_ = aten.add_.Tensor(self=%b_bn_num_batches_tracked, other=2)"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("%add__1 = aten.add_.Tensor(self=%b_other_count, other=1)"),
            std::string::npos)
      << text;
}

void expectRefused(const std::string& json, ErrorKind kind, const std::string& message_part) {
  auto program = Program::parse(json, "t.json");
  const std::string before = program->toJson();
  for (Mode mode : {Mode::kEval, Mode::kTrain}) {
    try {
      switchMode(*program, mode);
      FAIL() << "switched: " << message_part;
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), kind);
      EXPECT_NE(std::string(e.what()).find("t.json: node "), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(message_part), std::string::npos) << e.what();
    }
    EXPECT_EQ(program->toJson(), before);  // refused before anything changed
  }
  EXPECT_THROW(collectSites(*program), Error);
}

TEST(Passes, RefusesModeFlagsThatAreNotLiterals) {
  // A dropout before the odd node proves nothing is switched when a later node is refused.
  expectRefused(makeProgram({}, {},
                            {{"first", "aten.dropout.default",
                              tensorInput("input", "x") + ", " + floatInput("p", 0.5) + ", " +
                                  boolInput("train", true),
                              "d0"},
                             {"dropout", "aten.dropout.default",
                              tensorInput("input", "first") + ", " + floatInput("p", 0.5) + ", " +
                                  tensorInput("train", "x"),
                              "drop"}},
                            "dropout"),
                ErrorKind::kUnsupported, "'train' is as_tensor, not a literal bool");
  expectRefused(makeProgram({}, {},
                            {{"dropout", "aten.dropout.default",
                              tensorInput("input", "x") + ", " + floatInput("p", 0.5), "drop"}},
                            "dropout"),
                ErrorKind::kBadProgram, "has no 'train' argument");
}

TEST(Passes, RefusesFormsItCannotSwitch) {
  const std::string json =
      makeProgram({}, {},
                  {{"rrelu", "aten.rrelu_with_noise_.default",
                    tensorInput("self", "x") + ", " + tensorInput("noise", "x") + ", " +
                        floatInput("lower", 0.1) + ", " + floatInput("upper", 0.3) + ", " +
                        boolInput("training", true),
                    "act"}},
                  "rrelu");
  auto program = Program::parse(json, "t.json");
  EXPECT_EQ(detectMode(collectSites(*program)), ProgramMode::kTrain);
  EXPECT_TRUE(switchMode(*program, Mode::kTrain).changes.empty());  // already there: fine
  try {
    switchMode(*program, Mode::kEval);
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kUnsupported);
    EXPECT_NE(std::string(e.what()).find("t.json: node 'rrelu' (aten.rrelu_with_noise_.default)"),
              std::string::npos)
        << e.what();
  }
}

// Sites of several batch-norm forms are in graph order, whichever form comes first in the
// table: the counter chains are followed in that order.
TEST(Passes, OlderFormsAreSitesInGraphOrder) {
  const std::string json = makeProgram(
      {}, {},
      {{"legit", "aten._native_batch_norm_legit.default",
        tensorInput("input", "x") + ", " + tensorInput("running_mean", "x") + ", " +
            boolInput("training", false) + ", " + floatInput("momentum", 0.1) + ", " +
            floatInput("eps", 1e-5),
        "bn2"},
       {"cudnn", "aten.cudnn_batch_norm.default",
        tensorInput("input", "legit") + ", " + tensorInput("running_mean", "x") + ", " +
            boolInput("training", false) + ", " + floatInput("exponential_average_factor", 0.1) +
            ", " + floatInput("epsilon", 1e-5),
        "bn"}},
      "cudnn");
  auto program = Program::parse(json, "t.json");
  const std::vector<Site> sites = collectSites(*program);
  ASSERT_EQ(sites.size(), 2u);
  EXPECT_EQ(sites[0].node->name(), "legit");
  EXPECT_EQ(sites[1].node->name(), "cudnn");
  const SwitchReport report = switchMode(*program, Mode::kTrain);
  ASSERT_EQ(report.changes.size(), 2u);
  EXPECT_EQ(report.changes[1].after, "training=True");  // no counter buffer to increment
}

TEST(Passes, DropoutKeepsPExactly) {
  const std::string json =
      makeProgram({}, {},
                  {{"dropout_", "aten.dropout_.default",
                    tensorInput("self", "x") + ", " + floatInput("p", 0.123456789012345) + ", " +
                        boolInput("train", true),
                    "d"},
                   {"feature_dropout", "aten.feature_dropout.default",
                    tensorInput("input", "dropout_") + ", " + floatInput("p", 0.3) + ", " +
                        boolInput("train", true),
                    "d2"}},
                  "feature_dropout");
  const std::string eval = switched(json, Mode::kEval);
  EXPECT_NE(eval.find("{\"as_float\": 0.123456789012345}"), std::string::npos);
  EXPECT_EQ(detectMode(collectSites(Program::parse(eval, "t.json")->graph())), ProgramMode::kEval);
  EXPECT_EQ(switched(eval, Mode::kTrain), json);
}

// Each pass reports its own sites; the report lists all of them in graph order, however
// the families interleave.
TEST(Passes, ReportsChangesOfEveryPassInGraphOrder) {
  const std::string families = "drrddrdrrd";  // d: dropout, r: rrelu
  auto nodeName = [](std::size_t i) { return std::string(1, 'n') += std::to_string(i); };
  std::vector<TestNode> nodes;
  std::string input = "x";
  for (std::size_t i = 0; i < families.size(); ++i) {
    const std::string name = nodeName(i);
    if (families[i] == 'd') {
      nodes.push_back({name, "aten.dropout.default",
                       tensorInput("input", input) + ", " + floatInput("p", 0.5) + ", " +
                           boolInput("train", true),
                       "drop"});
    } else {
      nodes.push_back({name, "aten.rrelu.default",
                       tensorInput("self", input) + ", " + floatInput("lower", 0.125) + ", " +
                           floatInput("upper", 1.0 / 3.0) + ", " + boolInput("training", true),
                       "act"});
    }
    input = name;
  }
  const std::string train = makeProgram({}, {}, nodes, input);
  for (Mode mode : {Mode::kEval, Mode::kTrain}) {
    SwitchReport report;
    const std::string json = mode == Mode::kEval ? train : switched(train, Mode::kEval);
    switched(json, mode, &report);
    ASSERT_EQ(report.changes.size(), families.size());
    for (std::size_t i = 0; i < families.size(); ++i) {
      EXPECT_EQ(report.changes[i].node, nodeName(i)) << modeName(mode);
      EXPECT_EQ(report.changes[i].op,
                families[i] == 'd' ? "aten.dropout.default" : "aten.rrelu.default");
    }
  }
}

}  // namespace
}  // namespace exmode

namespace exmode {
namespace {

std::string attention(const std::string& tail, const std::string& type) {
  return testing::makeProgram(
      {}, {},
      {{"sdpa", "aten.scaled_dot_product_attention.default",
        testing::tensorInput("query", "x") + ", " + testing::tensorInput("key", "x") + ", " +
            testing::tensorInput("value", "x") + tail,
        "attn", type}},
      "sdpa");
}

constexpr const char* kMha = "torch.nn.modules.activation.MultiheadAttention";

TEST(Passes, AttentionDropoutRoundTripsThroughEval) {
  const std::string train = attention(
      ", " + testing::noneInput("attn_mask") + ", " + testing::floatInput("dropout_p", 0.25), kMha);
  SwitchReport report;
  const std::string eval = switched(train, Mode::kEval, &report);
  // As torch's eval export: trailing defaults omitted.
  EXPECT_EQ(printed(eval), printed(attention("", kMha)));
  ASSERT_EQ(report.changes.size(), 1u);
  EXPECT_EQ(report.changes[0].before, "dropout_p=0.25");
  auto sites = collectSites(Program::parse(eval, "t.json")->graph());
  ASSERT_EQ(sites.size(), 1u);
  EXPECT_EQ(sites[0].state, Site::State::kEval);
  EXPECT_EQ(*sites[0].p, 0.25);
  EXPECT_EQ(switched(eval, Mode::kTrain), train);
}

TEST(Passes, AttentionDropoutKeepsLaterArguments) {
  const std::string train = attention(", " + testing::noneInput("attn_mask") + ", " +
                                          testing::floatInput("dropout_p", 0.1) + ", " +
                                          testing::boolInput("is_causal", true),
                                      kMha);
  const std::string eval = switched(train, Mode::kEval);
  EXPECT_NE(printed(eval).find("dropout_p=0.0, is_causal=true"), std::string::npos)
      << printed(eval);
  EXPECT_EQ(switched(eval, Mode::kTrain), train);
}

TEST(Passes, AttentionDropoutOutsideMultiheadAttentionIsSwitchedToo) {
  // timm, Hugging Face and hand-written attention pass `p if self.training else 0.0` as
  // nn.MultiheadAttention does (docs/ATTENTION_DROPOUT.md).
  const std::string user = attention(
      ", " + testing::noneInput("attn_mask") + ", " + testing::floatInput("dropout_p", 0.1),
      "__main__.MyAttention");
  const auto sites = collectSites(Program::parse(user, "t.json")->graph());
  ASSERT_EQ(sites.size(), 1u);
  EXPECT_EQ(sites[0].state, Site::State::kTrain);
  const std::string eval = switched(user, Mode::kEval);
  EXPECT_EQ(eval.find("\"name\": \"dropout_p\""), std::string::npos) << eval;
  EXPECT_EQ(switched(eval, Mode::kTrain), user);
}

TEST(Passes, AttentionDropoutOfAnEvalExportCannotBeRestored) {
  const std::string eval = attention("", kMha);
  SwitchReport report;
  EXPECT_EQ(switched(eval, Mode::kTrain, &report), eval);
  EXPECT_TRUE(report.changes.empty());
  ASSERT_EQ(report.warnings.size(), 1u);
  EXPECT_EQ(report.warnings[0].kind, Finding::Kind::kUnrecorded);
  EXPECT_EQ(report.warnings[0].module, "attn");
  // Nothing to warn about going to eval: the program is the eval export itself.
  switched(eval, Mode::kEval, &report);
  EXPECT_TRUE(report.warnings.empty());
}

}  // namespace
}  // namespace exmode

namespace exmode {
namespace {

std::string instanceNorm(bool use_input_stats, bool tracked) {
  const std::string stats =
      tracked ? testing::tensorInput("running_mean", "b_in_running_mean") + ", " +
                    testing::tensorInput("running_var", "b_in_running_var")
              : testing::noneInput("running_mean") + ", " + testing::noneInput("running_var");
  return testing::makeProgram(
      {},
      tracked ? std::vector<std::string>{"b_in_running_mean", "b_in_running_var"}
              : std::vector<std::string>{},
      {{"instance_norm", "aten.instance_norm.default",
        testing::tensorInput("input", "x") + ", " + testing::noneInput("weight") + ", " +
            testing::noneInput("bias") + ", " + stats + ", " +
            testing::boolInput("use_input_stats", use_input_stats) + ", " +
            testing::floatInput("momentum", 0.2) + ", " + testing::floatInput("eps", 1e-4) + ", " +
            testing::boolInput("cudnn_enabled", false),
        "in"}},
      "instance_norm");
}

TEST(Passes, InstanceNormWithRunningStatsFlipsUseInputStats) {
  EXPECT_EQ(switched(instanceNorm(true, true), Mode::kEval), instanceNorm(false, true));
  EXPECT_EQ(switched(instanceNorm(false, true), Mode::kTrain), instanceNorm(true, true));
  // Without running statistics instance norm is the same in both modes.
  EXPECT_EQ(switched(instanceNorm(true, false), Mode::kEval), instanceNorm(true, false));
}

std::string rrelu(const std::string& tail, const std::string& target = "aten.rrelu.default") {
  return testing::makeProgram(
      {}, {}, {{"rrelu", target, testing::tensorInput("self", "x") + tail, "act"}}, "rrelu");
}

TEST(Passes, RreluDropsAndRestoresTrailingDefaults) {
  const std::string default_train =
      rrelu(", " + testing::floatInput("lower", 0.125) + ", " +
            testing::floatInput("upper", 1.0 / 3.0) + ", " + testing::boolInput("training", true));
  EXPECT_EQ(printed(switched(default_train, Mode::kEval)), printed(rrelu("")));
  EXPECT_EQ(printed(switched(rrelu(""), Mode::kTrain)), printed(default_train));
  const std::string custom_train =
      rrelu(", " + testing::floatInput("lower", 0.1) + ", " + testing::floatInput("upper", 0.3) +
                ", " + testing::boolInput("training", true),
            "aten.rrelu_.default");
  const std::string custom_eval =
      rrelu(", " + testing::floatInput("lower", 0.1) + ", " + testing::floatInput("upper", 0.3),
            "aten.rrelu_.default");
  EXPECT_EQ(switched(custom_train, Mode::kEval), custom_eval);
  EXPECT_EQ(switched(custom_eval, Mode::kTrain), custom_train);
  // A default written another way stays, so the round trip gives back the same bytes.
  std::string odd_train = default_train;
  const std::string canonical = "{\"as_float\": 0.125}";
  odd_train.replace(odd_train.find(canonical), canonical.size(), "{\"as_float\": 0.125000}");
  const std::string odd_eval = switched(odd_train, Mode::kEval);
  EXPECT_NE(odd_eval.find("0.125000"), std::string::npos) << odd_eval;
  EXPECT_EQ(odd_eval.find("0.3333333333333333"), std::string::npos) << odd_eval;
  EXPECT_EQ(switched(odd_eval, Mode::kTrain), odd_train);
}

}  // namespace
}  // namespace exmode

namespace exmode {
namespace {

TEST(Passes, WarnsOfBatchNormThatCannotTrackStatistics) {
  // BatchNorm(momentum=None) exported in eval mode: momentum 0.0.
  std::string eval = testing::bnDropoutEvalProgram();
  const std::string momentum = testing::floatInput("momentum", 0.3);
  eval.replace(eval.find(momentum), momentum.size(), testing::floatInput("momentum", 0.0));
  SwitchReport report;
  switched(eval, Mode::kTrain, &report);
  ASSERT_EQ(report.warnings.size(), 1u);
  EXPECT_EQ(report.warnings[0].kind, Finding::Kind::kInexact);
  EXPECT_EQ(report.warnings[0].module, "bn");
  EXPECT_NE(report.warnings[0].reason.find("momentum 0.0"), std::string::npos);
  switched(testing::bnDropoutEvalProgram(), Mode::kTrain, &report);
  EXPECT_TRUE(report.warnings.empty());
}

}  // namespace
}  // namespace exmode

namespace exmode {
namespace {

// Two batch norms sharing running statistics, as torch exports them: both sites read bn1's
// statistics, but each module counts on its own counter.
std::string sharedStats(bool train) {
  auto args = [&](const std::string& input, const std::string& module) {
    return testing::tensorInput("input", input) + ", " +
           testing::tensorInput("weight", "p_" + module + "_weight") + ", " +
           testing::tensorInput("bias", "p_" + module + "_bias") + ", " +
           testing::tensorInput("running_mean", "b_bn1_running_mean") + ", " +
           testing::tensorInput("running_var", "b_bn1_running_var") + ", " +
           testing::boolInput("training", train) + ", " + testing::floatInput("momentum", 0.1) +
           ", " + testing::floatInput("eps", 1e-5) + ", " +
           testing::boolInput("cudnn_enabled", false);
  };
  std::vector<testing::TestNode> nodes;
  if (train)
    nodes.push_back({"add_", "aten.add_.Tensor",
                     testing::tensorInput("self", "b_bn1_num_batches_tracked") + ", " +
                         testing::intInput("other", 1),
                     "bn1"});
  nodes.push_back({"batch_norm", "aten.batch_norm.default", args("x", "bn1"), "bn1"});
  if (train)
    nodes.push_back({"add__1", "aten.add_.Tensor",
                     testing::tensorInput("self", "b_bn2_num_batches_tracked") + ", " +
                         testing::intInput("other", 1),
                     "bn2"});
  nodes.push_back({"batch_norm_1", "aten.batch_norm.default", args("batch_norm", "bn2"), "bn2"});
  return testing::makeProgram({"p_bn1_weight", "p_bn1_bias", "p_bn2_weight", "p_bn2_bias"},
                              {"b_bn1_running_mean", "b_bn1_running_var",
                               "b_bn1_num_batches_tracked", "b_bn2_num_batches_tracked"},
                              nodes, "batch_norm_1");
}

TEST(Passes, ModulesSharingStatisticsCountOnTheirOwnCounters) {
  EXPECT_EQ(printed(switched(sharedStats(true), Mode::kEval)), printed(sharedStats(false)));
  EXPECT_EQ(printed(switched(sharedStats(false), Mode::kTrain)), printed(sharedStats(true)));
}

}  // namespace
}  // namespace exmode
