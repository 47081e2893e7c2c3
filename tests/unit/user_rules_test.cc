// User rules (user_rules.h): the file format, its errors, and switches driven by rules.
#include "exmode/user_rules.h"

#include <gtest/gtest.h>

#include <filesystem>

#include "exmode/error.h"
#include "exmode/findings.h"
#include "exmode/passes.h"
#include "passes/user_rules_internal.h"
#include "test_programs.h"

namespace exmode {
namespace {

UserRules parsed(const std::string& text) {
  UserRules rules;
  rules.add(text, "r.txt");
  return rules;
}

// The message of the error parsing `text` raises, or "" when it parses.
std::string errorOf(const std::string& text) {
  try {
    parsed(text);
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kUsage) << e.what();
    return e.what();
  }
  return "";
}

TEST(UserRules, ReadsEveryForm) {
  const UserRules rules = parsed(
      "# custom ops\n"
      "\n"
      "op mylib.noisy.default train train=True eval=False if p!=0.0  # trailing comment\n"
      "op torch.ops.mylib.mix.default mode train=\"train me\" eval=\"eval\" if scale==2\n"
      "op mylib::jitter train train=true eval=none\n"
      "attention_dropout encoder.layer.*.attention p=0.1\n");
  ASSERT_EQ(rules.opRules().size(), 3u);
  const OpRule& noisy = rules.opRules()[0];
  EXPECT_EQ(noisy.target, "torch.ops.mylib.noisy.default");
  EXPECT_EQ(noisy.argument, "train");
  EXPECT_EQ(noisy.train.kind, RuleLiteral::Kind::kBool);
  EXPECT_TRUE(noisy.train.boolean);
  EXPECT_FALSE(noisy.eval.boolean);
  ASSERT_EQ(noisy.conditions.size(), 1u);
  EXPECT_EQ(noisy.conditions[0].argument, "p");
  EXPECT_FALSE(noisy.conditions[0].equal);
  EXPECT_EQ(noisy.conditions[0].value.kind, RuleLiteral::Kind::kFloat);
  EXPECT_EQ(noisy.where, "r.txt:3");
  const OpRule& mix = rules.opRules()[1];
  EXPECT_EQ(mix.target, "torch.ops.mylib.mix.default");
  EXPECT_EQ(mix.train.kind, RuleLiteral::Kind::kString);
  EXPECT_EQ(mix.train.string, "train me");
  EXPECT_EQ(mix.conditions[0].value.kind, RuleLiteral::Kind::kInt);
  EXPECT_EQ(mix.conditions[0].value.integer, 2);
  EXPECT_EQ(rules.opRules()[2].target, "torch.ops.mylib.jitter.default");
  EXPECT_EQ(rules.opRules()[2].eval.kind, RuleLiteral::Kind::kNone);
  ASSERT_EQ(rules.attentionDropoutRules().size(), 1u);
  EXPECT_EQ(rules.attentionDropoutRules()[0].p, 0.1);
  EXPECT_EQ(rules.passes().size(), 3u);
  // The canonical text reads back as the same rules.
  EXPECT_EQ(parsed(rules.text()).text(), rules.text());
}

TEST(UserRules, NamesTheLineOfEachMistake) {
  struct Case {
    std::string text;
    std::string message;
  };
  const Case cases[] = {
      {"\n\nswitch mylib.x.default train train=True eval=False\n",
       "r.txt:3: unknown keyword 'switch'"},
      {"op mylib.x train train=True eval=False\n", "r.txt:1: 'mylib.x' is not an op target"},
      {"op my-lib.x.default train train=True eval=False\n", "r.txt:1: 'my-lib.x.default' is not"},
      {"op aten.dropout.default train train=True eval=False\n",
       "r.txt:1: aten.dropout.default is switched by exmode's built-in dropout pass"},
      {"op mylib.x.default train train=Yes eval=False\n", "r.txt:1: 'Yes' is not a literal"},
      {"op mylib.x.default train train=\"open eval=False\n", "r.txt:1: a string is not closed"},
      {"op mylib.x.default train train=1.5e999 eval=0\n", "r.txt:1: '1.5e999' is not a literal"},
      {"op mylib.x.default train eval=False\n", "r.txt:1: missing train=<literal>"},
      {"op mylib.x.default train train=True\n", "r.txt:1: missing eval=<literal>"},
      {"op mylib.x.default train=True eval=False\n",
       "r.txt:1: missing the argument that carries the mode"},
      {"op\n", "r.txt:1: missing the target"},
      {"op mylib.x.default train train=True eval=True\n",
       "r.txt:1: train and eval values are the same"},
      {"op mylib.x.default train train=True eval=False colour=red\n",
       "r.txt:1: unknown field 'colour=red'"},
      {"op mylib.x.default train train=True train=False eval=False\n",
       "r.txt:1: 'train=' given twice"},
      {"op mylib.x.default train train=True eval=False if\n", "r.txt:1: 'if' without a condition"},
      {"op mylib.x.default train train=True eval=False if p<0\n",
       "r.txt:1: 'p<0' is not a condition"},
      {"op mylib.x.default train train=True eval=False if train==True\n",
       "r.txt:1: a condition on the mode argument itself"},
      {"op mylib.x.default train train=True eval=False\nop mylib.x.default t train=1 eval=0\n",
       "r.txt:2: a second rule for mylib.x.default (the first is at r.txt:1)"},
      {"attention_dropout p=0.1\n", "r.txt:1: missing the module path pattern"},
      {"attention_dropout enc.*\n", "r.txt:1: missing p=<float>"},
      {"attention_dropout enc.* q=0.1\n", "r.txt:1: unknown field 'q=0.1'"},
      {"attention_dropout enc.* p=0.1 extra\n", "r.txt:1: unknown field 'extra'"},
      {"attention_dropout enc.* p=high\n", "r.txt:1: 'high' is not a number"},
      {"attention_dropout enc.* p=1.5\n", "r.txt:1: p=1.5 is not in (0, 1]"},
      {"attention_dropout enc.* p=0.1\nattention_dropout enc.* p=0.2\n",
       "r.txt:2: a second attention_dropout rule for 'enc.*' (the first is at r.txt:1)"},
      {"drop_path blocks.* p=0.1\n", "r.txt:1: drop_path rules are not supported"},
  };
  for (const Case& c : cases) {
    const std::string message = errorOf(c.text);
    EXPECT_EQ(message.rfind(c.message, 0), 0u) << c.text << "gave: " << message;
    EXPECT_EQ(message.find('\n'), std::string::npos) << message;
  }
}

TEST(UserRules, AnUnreadableFileIsAUsageErrorNamingIt) {
  UserRules rules;
  try {
    rules.addFile("/nonexistent/rules.txt");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kUsage);
    EXPECT_EQ(std::string(e.what()).rfind("/nonexistent/rules.txt: cannot read the rule file", 0),
              0u)
        << e.what();
  }
  EXPECT_THROW(rules.addFile(std::filesystem::temp_directory_path()), Error);
}

TEST(UserRules, SetsAddedTogetherRefuseDuplicates) {
  UserRules a = parsed("op mylib.x.default train train=True eval=False\n");
  UserRules b;
  b.add("op mylib.x.default mode train=1 eval=0\n", "s.txt");
  try {
    a.add(b);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "s.txt:1: a second rule for mylib.x.default (the first is at r.txt:1)");
  }
}

TEST(UserRules, PathPatterns) {
  using passes::pathMatch;
  EXPECT_TRUE(pathMatch("encoder.layer.*.attention", "encoder.layer.0.attention"));
  EXPECT_TRUE(pathMatch("encoder.layer.*.attention", "encoder.layer.11.attention"));
  EXPECT_FALSE(pathMatch("encoder.layer.*.attention", "encoder.layer.0.x.attention"));
  EXPECT_FALSE(pathMatch("encoder.layer.*.attention", "encoder.layer.0.attention.self"));
  EXPECT_TRUE(pathMatch("**.attention", "encoder.layer.0.attention"));
  EXPECT_TRUE(pathMatch("**.b.*", "a.b.c.b.d"));
  EXPECT_TRUE(pathMatch("*_attn", "self_attn"));
  EXPECT_FALSE(pathMatch("*", "a.b"));
  EXPECT_TRUE(pathMatch("**", "a.b"));
}

// A program with one custom-op node reading x.
std::string customOp(const std::string& inputs, const std::string& target = "mylib.noisy.default") {
  return testing::makeProgram(
      {}, {}, {{"noisy", target, testing::tensorInput("x", "x") + inputs, "", ""}}, "noisy");
}

TEST(UserRules, AnOpRuleMakesSitesThatSwitchBothWays) {
  const UserRules rules = parsed("op mylib.noisy.default train train=True eval=False if p!=0\n");
  const std::string eval =
      customOp(", " + testing::floatInput("p", 0.3) + ", " + testing::boolInput("train", false));
  auto program = Program::parse(eval, "t.json");
  EXPECT_TRUE(collectSites(*program).empty());  // not a site without the rule
  std::vector<Site> sites = collectSites(*program, &rules);
  ASSERT_EQ(sites.size(), 1u);
  EXPECT_EQ(sites[0].state, Site::State::kEval);
  SwitchCache cache;
  SwitchReport report =
      switchMode(*program, Mode::kTrain, "model", &cache, nullptr, nullptr, &rules);
  EXPECT_EQ(report.before, ProgramMode::kEval);
  EXPECT_EQ(report.after, ProgramMode::kTrain);
  ASSERT_EQ(report.changes.size(), 1u);
  EXPECT_EQ(report.changes[0].before, "train=False");
  EXPECT_EQ(report.changes[0].after, "train=True");
  EXPECT_EQ(program->toJson(), customOp(", " + testing::floatInput("p", 0.3) + ", " +
                                        testing::boolInput("train", true)));
  report = switchMode(*program, Mode::kEval, "model", &cache, nullptr, nullptr, &rules);
  EXPECT_EQ(report.changes.size(), 1u);
  EXPECT_EQ(program->toJson(), eval);
  // Where the condition fails, the node is not a site.
  auto zero = Program::parse(
      customOp(", " + testing::floatInput("p", 0.0) + ", " + testing::boolInput("train", false)),
      "t.json");
  EXPECT_TRUE(collectSites(*zero, &rules).empty());
}

TEST(UserRules, ANoneValueRemovesAndInsertsTheArgument) {
  const UserRules rules = parsed("op mylib.noisy.default train train=True eval=none\n");
  auto program = Program::parse(customOp(""), "t.json");
  SwitchReport report =
      switchMode(*program, Mode::kTrain, "model", nullptr, nullptr, nullptr, &rules);
  ASSERT_EQ(report.changes.size(), 1u);
  EXPECT_EQ(report.changes[0].before, "train=none");
  const NamedArgument* train = program->graph().nodes().front()->input("train");
  ASSERT_NE(train, nullptr);
  EXPECT_EQ(train->arg.asBool(), true);
  EXPECT_EQ(train->kind, "2");  // a keyword: torch.export.load places it by its name
  switchMode(*program, Mode::kEval, "model", nullptr, nullptr, nullptr, &rules);
  EXPECT_EQ(program->toJson(), customOp(""));
}

TEST(UserRules, StringValuesAndConditions) {
  const UserRules rules =
      parsed("op mylib.noisy.default mode train=\"train\" eval=\"eval\" if scale==2\n");
  const std::string eval = customOp(R"(, {"name": "mode", "arg": {"as_string": "eval"}, "kind": 1})"
                                    ", " +
                                    testing::intInput("scale", 2));
  auto program = Program::parse(eval, "t.json");
  switchMode(*program, Mode::kTrain, "model", nullptr, nullptr, nullptr, &rules);
  EXPECT_NE(program->toJson().find(R"("as_string": "train")"), std::string::npos);
}

TEST(UserRules, AValueThatIsNeitherModeIsRefused) {
  const UserRules rules = parsed("op mylib.noisy.default mode train=1 eval=0\n");
  auto program = Program::parse(customOp(", " + testing::intInput("mode", 2)), "t.json");
  try {
    switchMode(*program, Mode::kTrain, "model", nullptr, nullptr, nullptr, &rules);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kUnsupported);
    EXPECT_NE(std::string(e.what()).find("neither the train value 1 nor the eval value 0 of the "
                                         "rule at r.txt:1"),
              std::string::npos)
        << e.what();
  }
  auto missing = Program::parse(customOp(""), "t.json");
  EXPECT_THROW(collectSites(*missing, &rules), Error);
}

std::string sdpa(const std::string& tail, const std::string& module) {
  return testing::makeProgram(
      {}, {},
      {{"sdpa", "aten.scaled_dot_product_attention.default",
        testing::tensorInput("query", "x") + ", " + testing::tensorInput("key", "x") + ", " +
            testing::tensorInput("value", "x") + tail,
        module, "mylib.Attention"}},
      "sdpa");
}

TEST(UserRules, AttentionDropoutRuleMakesTheSwitchToTrainExact) {
  const UserRules rules = parsed("attention_dropout encoder.layer.*.attention p=0.1\n");
  const std::string eval = sdpa("", "encoder.layer.3.attention");
  auto program = Program::parse(eval, "t.json");
  // Without the rule: a fixed site, warned on the way to train.
  std::vector<Site> plain = collectSites(*program);
  ASSERT_EQ(plain.size(), 1u);
  EXPECT_EQ(plain[0].state, Site::State::kFixed);
  EXPECT_EQ(analyze(*program, plain).size(), 1u);
  std::vector<Site> sites = collectSites(*program, &rules);
  EXPECT_EQ(sites[0].state, Site::State::kEval);
  EXPECT_EQ(sites[0].p, 0.1);
  EXPECT_TRUE(analyze(*program, sites).empty());
  const SwitchReport report =
      switchMode(*program, Mode::kTrain, "model", nullptr, nullptr, nullptr, &rules);
  EXPECT_TRUE(report.warnings.empty());
  EXPECT_EQ(program->toJson(), sdpa(", " + testing::noneInput("attn_mask") + ", " +
                                        testing::floatInput("dropout_p", 0.1),
                                    "encoder.layer.3.attention"));
  // Outside the pattern nothing changes, and the warning stays.
  auto other = Program::parse(sdpa("", "decoder.layer.3.attention"), "t.json");
  const SwitchReport kept =
      switchMode(*other, Mode::kTrain, "model", nullptr, nullptr, nullptr, &rules);
  EXPECT_TRUE(kept.changes.empty());
  EXPECT_EQ(kept.warnings.size(), 1u);
}

TEST(UserRules, ARuleNeverOverridesWhatTheProgramHolds) {
  const UserRules rules = parsed("attention_dropout ** p=0.3\n");
  const std::string train =
      sdpa(", " + testing::noneInput("attn_mask") + ", " + testing::floatInput("dropout_p", 0.2),
           "attn");
  auto program = Program::parse(train, "t.json");
  switchMode(*program, Mode::kEval, "model", nullptr, nullptr, nullptr, &rules);
  switchMode(*program, Mode::kTrain, "model", nullptr, nullptr, nullptr, &rules);
  EXPECT_EQ(program->toJson(), train);  // p 0.2 remembered, not the rule's 0.3
}

TEST(UserRules, RulesWithDifferentPOverOneSiteAreAnError) {
  const UserRules rules = parsed("attention_dropout encoder.* p=0.1\nattention_dropout ** p=0.2\n");
  auto program = Program::parse(sdpa("", "encoder.attn"), "t.json");
  EXPECT_THROW(switchMode(*program, Mode::kTrain, "model", nullptr, nullptr, nullptr, &rules),
               Error);
}

TEST(UserRules, FunctionalAttentionDropoutGetsTheRulesP) {
  // Hugging Face eager attention: dropout(w, p=0.0 if not training else p, training) inside
  // the attention module, recorded as dropout(w, 0.0, False) by an eval export.
  const UserRules rules = parsed("attention_dropout *.attention p=0.1\n");
  auto dropout = [](double p, bool train) {
    return testing::makeProgram(
        {}, {},
        {{"dropout", "aten.dropout.default",
          testing::tensorInput("input", "x") + ", " + testing::floatInput("p", p) + ", " +
              testing::boolInput("train", train),
          "layer.attention", "mylib.Attention"}},
        "dropout");
  };
  auto program = Program::parse(dropout(0.0, false), "t.json");
  EXPECT_EQ(analyze(*program, collectSites(*program)).size(), 1u);  // unrecorded without it
  const SwitchReport report =
      switchMode(*program, Mode::kTrain, "model", nullptr, nullptr, nullptr, &rules);
  EXPECT_TRUE(report.warnings.empty());
  ASSERT_EQ(report.changes.size(), 2u);
  EXPECT_EQ(report.changes[1].after, "p=0.1");
  EXPECT_EQ(program->toJson(), dropout(0.1, true));
}

}  // namespace
}  // namespace exmode
