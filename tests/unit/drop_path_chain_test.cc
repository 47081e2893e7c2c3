// The decomposed chains of drop_path_chain.h (in-place dropout, feature dropout, alpha
// dropout, drop path after run_decompositions()): matched, switched to eval and back byte
// for byte, members found from the last node alone, near misses left alone; a chain whose
// output only the graph output reads.
#include "passes/drop_path_chain.h"

#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <regex>

#include "exmode/passes.h"
#include "exmode/program.h"
#include "test_programs.h"

namespace exmode {
namespace {

using testing::floatInput;
using testing::intInput;
using testing::makeProgram;
using testing::tensorInput;
using testing::TestNode;

// Every tensor is [2, 3, 4]: x and the chain's output agree; masks are their literal sizes.
std::string withShapes(std::string json) {
  return std::regex_replace(json, std::regex(R"("sizes": \[\])"),
                            R"("sizes": [{"as_int": 2}, {"as_int": 3}, {"as_int": 4}])");
}

std::string ints(const std::string& name, const std::string& list) {
  return "{\"name\": \"" + name + "\", \"arg\": {\"as_ints\": " + list + "}, \"kind\": 1}";
}

TestNode linear() {
  return {"linear", "aten.linear.default",
          tensorInput("input", "x") + ", " + tensorInput("weight", "p_lin_weight"), "lin"};
}

// linear -> <chain> -> relu(<chain output>), or the chain's output as the graph output.
std::string program(std::vector<TestNode> chain, const std::string& out, bool tail = false) {
  std::vector<TestNode> nodes = {linear()};
  nodes.insert(nodes.end(), chain.begin(), chain.end());
  if (tail) return withShapes(makeProgram({"p_lin_weight"}, {}, nodes, out));
  nodes.push_back({"relu", "aten.relu.default", tensorInput("self", out), ""});
  return withShapes(makeProgram({"p_lin_weight"}, {}, nodes, "relu"));
}

std::vector<TestNode> maskChain(TestNode start, double keep = 0.7, double divisor = 0.7) {
  return {start,
          {"bernoulli", "aten.bernoulli.p",
           tensorInput("self", start.name) + ", " + floatInput("p", keep), "drop"},
          {"div", "aten.div.Scalar",
           tensorInput("self", "bernoulli") + ", " + floatInput("other", divisor), "drop"},
          {"mul", "aten.mul.Tensor",
           tensorInput("self", "linear") + ", " + tensorInput("other", "div"), "drop"}};
}

TestNode emptyLike(const std::string& of = "linear") {
  return {"empty_like", "aten.empty_like.default", tensorInput("self", of), "drop"};
}
TestNode newEmpty(const std::string& size) {
  return {"new_empty", "aten.new_empty.default",
          tensorInput("self", "linear") + ", " + ints("size", size), "drop"};
}
TestNode emptyPermuted(const std::string& size, const std::string& layout) {
  return {"empty_permuted", "aten.empty_permuted.default",
          ints("size", size) + ", " + ints("physical_layout", layout), "drop"};
}

std::vector<TestNode> alphaChain(TestNode start, double p = 0.3, double nudge = 0) {
  const double alpha = 1.7580993408473766;
  const double a = 1.0 / std::sqrt((alpha * alpha * p + 1) * (1 - p)) + nudge;
  const std::string s = start.name;
  return {start,
          {"bernoulli", "aten.bernoulli.p", tensorInput("self", s) + ", " + floatInput("p", 1 - p),
           "drop"},
          {"minus", "aten.add.Scalar",
           tensorInput("self", "bernoulli") + ", " + intInput("other", -1), "drop"},
          {"scaled", "aten.mul.Scalar",
           tensorInput("self", "minus") + ", " + floatInput("other", alpha * a), "drop"},
          {"shift", "aten.add.Scalar",
           tensorInput("self", "scaled") + ", " + floatInput("other", alpha * a * p), "drop"},
          {"keepmul", "aten.mul.Scalar",
           tensorInput("self", "bernoulli") + ", " + floatInput("other", a), "drop"},
          {"t", "aten.mul.Tensor",
           tensorInput("self", "linear") + ", " + tensorInput("other", "keepmul"), "drop"},
          {"y", "aten.add.Tensor", tensorInput("self", "t") + ", " + tensorInput("other", "shift"),
           "drop"}};
}

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

std::vector<Site> chainSites(const std::string& json, std::vector<std::unique_ptr<Program>>& keep) {
  auto& program = keep.emplace_back(Program::parse(json, "t.json"));
  std::vector<Site> out;
  for (const Site& site : collectSites(program->graph())) {
    if (site.pass->name() == "drop_path") out.push_back(site);
  }
  return out;
}

std::size_t chainCount(const std::string& json) {
  std::vector<std::unique_ptr<Program>> keep;
  return chainSites(json, keep).size();
}

const std::string kEval = program({}, "linear");

TEST(DecomposedChains, EachFormGoesToEvalAndBackByteForByte) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {program(maskChain(emptyLike()), "mul"), "dropout p=0.3"},
      {program(maskChain(emptyPermuted("[2, 3, 4]", "[0, 1, 2]")), "mul"), "dropout p=0.3"},
      {program(maskChain(newEmpty("[2, 3, 1]")), "mul"), "feature_dropout p=0.3"},
      {program(maskChain(newEmpty("[2, 1, 1]")), "mul"), "drop_path p=0.3"},
      {program(alphaChain(emptyLike()), "y"), "alpha_dropout p=0.3"},
      {program(alphaChain(newEmpty("[2, 3, 1]")), "y"), "feature_alpha_dropout p=0.3"},
  };
  for (const auto& [train, text] : cases) {
    SwitchReport report;
    const std::string eval = switched(train, Mode::kEval, &report);
    EXPECT_EQ(printed(eval), printed(kEval)) << text;
    ASSERT_EQ(report.changes.size(), 1u) << text;
    EXPECT_EQ(report.changes[0].before, text);
    EXPECT_EQ(report.changes[0].after, "removed");
    EXPECT_EQ(chainCount(eval), 1u) << text;
    EXPECT_EQ(switched(eval, Mode::kTrain), train) << text;
    EXPECT_EQ(switched(switched(switched(eval, Mode::kTrain), Mode::kEval), Mode::kTrain), train)
        << text;
  }
}

TEST(DecomposedChains, MembersAreFoundFromTheLastNode) {
  for (const auto& [json, n] : std::vector<std::pair<std::string, std::size_t>>{
           {program(maskChain(emptyLike()), "mul"), 4u},
           {program(alphaChain(emptyLike()), "y"), 8u}}) {
    std::vector<std::unique_ptr<Program>> keep;
    const auto sites = chainSites(json, keep);
    ASSERT_EQ(sites.size(), 1u);
    std::vector<const Node*> members;
    sites[0].pass->siteMembers(sites[0], members);
    EXPECT_EQ(members.size(), n);
    EXPECT_EQ(std::count_if(members.begin(), members.end(),
                            [](const Node* m) { return m->name() == "linear"; }),
              0);
  }
}

TEST(DecomposedChains, NearMissesAreLeftAlone) {
  const std::vector<std::string> misses = {
      program(maskChain(emptyLike(), 0.7, 0.6), "mul"),      // divisor is not keep
      program(maskChain(newEmpty("[2, 1, 4]")), "mul"),      // not a mask shape
      program(maskChain(newEmpty("[2, 3, 4, 1]")), "mul"),   // another rank
      program(maskChain(emptyLike("p_lin_weight")), "mul"),  // a mask like another tensor
      program(maskChain(emptyPermuted("[2, 3, 4]", "[2, 1, 0]")), "mul"),  // permuted layout
      program(alphaChain(emptyLike(), 0.3, 1e-6), "y"),                    // constants off
      program(alphaChain(newEmpty("[2, 1, 1]")), "y"),  // alpha dropout per sample
  };
  for (const std::string& json : misses) {
    EXPECT_EQ(chainCount(json), 0u) << json;
    EXPECT_EQ(switched(json, Mode::kEval), json);
  }
  // The mask read by a node outside the chain.
  std::vector<TestNode> chain = maskChain(emptyLike());
  chain.push_back({"other", "aten.relu.default", tensorInput("self", "bernoulli"), ""});
  EXPECT_EQ(chainCount(program(chain, "mul")), 0u);
}

TEST(DecomposedChains, AChainReadOnlyByTheGraphOutput) {
  const std::string train = program(maskChain(newEmpty("[2, 3, 1]")), "mul", /*tail=*/true);
  const std::string eval = switched(train, Mode::kEval);
  EXPECT_EQ(printed(eval), printed(program({}, "linear", true)));
  EXPECT_EQ(chainCount(eval), 1u);
  // The last node is re-created in front of the chain, under a fresh name.
  const std::string back = switched(eval, Mode::kTrain);
  EXPECT_EQ(std::regex_replace(printed(back), std::regex("%linear_1"), "%linear"), printed(train));
  EXPECT_EQ(printed(switched(back, Mode::kEval)),
            std::regex_replace(printed(eval), std::regex("%linear"), "%linear_1"));
}

TEST(DecomposedChains, FormsHaveNames) {
  using passes::drop_path::Form;
  for (Form f : {Form::kDropPath, Form::kDropout, Form::kFeatureDropout, Form::kAlphaDropout,
                 Form::kFeatureAlphaDropout}) {
    EXPECT_EQ(passes::drop_path::formNamed(passes::drop_path::formName(f)), f);
  }
  EXPECT_FALSE(passes::drop_path::formNamed("dropblock"));
  EXPECT_EQ(passes::drop_path::dropP(0.7), 0.3);
}

}  // namespace
}  // namespace exmode
