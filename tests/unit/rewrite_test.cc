// The matcher and the rewriter on small graphs.
#include "exmode/rewrite.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

#include "exmode/error.h"
#include "exmode/passes.h"
#include "exmode/pattern.h"
#include "test_programs.h"

namespace exmode::rewrite {
namespace {

using testing::boolInput;
using testing::floatInput;
using testing::intInput;
using testing::makeProgram;
using testing::tensorInput;

std::unique_ptr<Program> chain() {
  // x -> relu -> dropout(0.5, train) -> add_(counter, 1) unrelated
  return Program::parse(
      makeProgram(
          {}, {"b_bn_num_batches_tracked"},
          {{"relu", "aten.relu.default", tensorInput("self", "x"), "act"},
           {"dropout", "aten.dropout.default",
            tensorInput("input", "relu") + ", " + floatInput("p", 0.5) + ", " +
                boolInput("train", true),
            "drop"},
           {"add_", "aten.add_.Tensor",
            tensorInput("self", "b_bn_num_batches_tracked") + ", " + intInput("other", 1), "bn"}},
          "dropout"),
      "t.json");
}

TEST(Pattern, MatchesTargetsConstraintsAndCaptures) {
  auto program = chain();
  const Pattern dropout = Pattern({"aten.dropout.default"})
                              .arg("p", floatArg(), "p")
                              .arg("train", boolArg(true), "train");
  auto matches = matchAll(program->graph(), dropout);
  ASSERT_EQ(matches.size(), 1u);
  EXPECT_EQ(matches[0].root->name(), "dropout");
  EXPECT_EQ(*matches[0].arg("p").asDouble(), 0.5);
  EXPECT_TRUE(
      matchAll(program->graph(), Pattern({"aten.dropout.default"}).arg("train", boolArg(false)))
          .empty());
  EXPECT_TRUE(
      matchAll(program->graph(), Pattern({"aten.dropout.default"}).arg("p", intArg())).empty());
  EXPECT_TRUE(matchAll(program->graph(), Pattern({"aten.dropout.default"}).arg("missing", tensor()))
                  .empty());
  EXPECT_EQ(
      matchAll(program->graph(), Pattern({"aten.dropout.default"}).arg("missing", none())).size(),
      1u);
}

TEST(Pattern, MatchesProducerChains) {
  auto program = chain();
  const Pattern relu = Pattern({"aten.relu.default"}).arg("self", tensor(), "x").as("relu");
  // Matches name their captures by views into the pattern: it must outlive them.
  const Pattern dropout = Pattern({"aten.dropout.default"}).arg("input", producedBy(relu));
  auto matches = matchAll(program->graph(), dropout);
  ASSERT_EQ(matches.size(), 1u);
  EXPECT_EQ(matches[0].node("relu")->name(), "relu");
  EXPECT_EQ(matches[0].arg("x").tensor()->name(), "x");
  const Pattern sigmoid = Pattern({"aten.sigmoid.default"});
  EXPECT_TRUE(matchAll(program->graph(),
                       Pattern({"aten.dropout.default"}).arg("input", producedBy(sigmoid)))
                  .empty());
}

TEST(Pattern, MatchingDoesNotChangeTheGraph) {
  auto program = chain();
  const std::string before = program->toJson();
  matchAll(program->graph(),
           Pattern({"aten.dropout.default", "aten.relu.default"}).arg("input", anyArg()));
  EXPECT_EQ(program->toJson(), before);
}

TEST(Rewriter, SetsInputsAndKeepsUses) {
  auto program = chain();
  Graph& graph = program->graph();
  Rewriter rewriter(*program);
  Node& dropout = *graph.getValue("dropout").producer();
  rewriter.setInput(dropout, "input", rewriter.tensorArg(graph.getValue("x")));
  EXPECT_TRUE(graph.getValue("relu").users().empty());
  EXPECT_EQ(graph.getValue("x").users().size(), 2u);
  rewriter.eraseNode(*graph.getValue("relu").producer());
  EXPECT_EQ(graph.tryGetValue("relu"), nullptr);
  const std::string json = program->toJson();
  EXPECT_EQ(json.find("\"relu\""), std::string::npos);
  EXPECT_THROW(rewriter.setInput(dropout, "nonexistent", rewriter.boolArg(true)), std::logic_error);
}

TEST(Rewriter, RefusesToEraseUsedNodes) {
  auto program = chain();
  Rewriter rewriter(*program);
  EXPECT_THROW(rewriter.eraseNode(*program->graph().getValue("relu").producer()), std::logic_error);
}

TEST(Rewriter, InsertsNodesAndRewiresLaterUses) {
  auto program = chain();
  Graph& graph = program->graph();
  Rewriter rewriter(*program);
  Node& dropout = *graph.getValue("dropout").producer();
  NewNode neg{
      .target = "torch.ops.aten.neg.default",
      .inputs = {{"self", rewriter.tensorArg(graph.getValue("relu")), "1"}},
      .tensor_outputs = {{rewriter.freshName("relu"), graph.getValue("relu").tensorMeta()}}};
  Node& inserted = rewriter.insertBefore(dropout, std::move(neg));
  EXPECT_EQ(inserted.name(), "relu_1");
  rewriter.replaceUses(graph.getValue("relu"), *inserted.output(), &dropout);
  graph.renumber();
  const std::string text = printGraph(graph);
  EXPECT_NE(
      text.find(
          "%relu_1 = aten.neg.default(self=%relu)\n%dropout = aten.dropout.default(input=%relu_1"),
      std::string::npos)
      << text;
  auto reparsed = Program::parse(program->toJson(), "again.json");
  EXPECT_EQ(printGraph(reparsed->graph()), text);
}

// Erased nodes are freed by releaseErased() into a reserve the next insertions draw from;
// an insertion that throws leaves the graph as it was.
TEST(Rewriter, ReusesErasedNodesAndFailedInsertionsChangeNothing) {
  auto program = chain();
  Graph& graph = program->graph();
  Rewriter rewriter(*program);
  const std::string before = printGraph(graph);
  Node& dropout = *graph.getValue("dropout").producer();
  auto neg = [&](std::string_view name) {
    return NewNode{.target = "torch.ops.aten.neg.default",
                   .inputs = {{"self", rewriter.tensorArg(graph.getValue("relu")), "1"}},
                   .tensor_outputs = {{name, graph.getValue("relu").tensorMeta()}}};
  };
  const Node* first = &rewriter.insertBefore(dropout, neg(rewriter.freshName("neg")));
  rewriter.eraseNode(const_cast<Node&>(*first));
  graph.releaseErased();
  EXPECT_EQ(printGraph(graph), before);
  Node& again = rewriter.insertBefore(dropout, neg(rewriter.freshName("neg")));
  EXPECT_EQ(&again, first);  // the same node, emptied and filled again
  EXPECT_EQ(again.name(), "neg");
  EXPECT_TRUE(again.metadataFields().empty());
  const std::string with_neg = printGraph(graph);
  EXPECT_THROW(rewriter.insertBefore(dropout, neg("relu")), std::logic_error);  // name taken
  EXPECT_EQ(printGraph(graph), with_neg);
  // With several outputs, a taken or repeated later name leaves the earlier ones unused.
  for (const char* second : {"relu", "fresh"}) {
    NewNode two = neg("fresh");
    two.tensor_outputs.emplace_back(second, graph.getValue("relu").tensorMeta());
    EXPECT_THROW(rewriter.insertBefore(dropout, std::move(two)), std::logic_error) << second;
    EXPECT_EQ(graph.tryGetValue("fresh"), nullptr) << second;
    EXPECT_EQ(printGraph(graph), with_neg) << second;
  }
  EXPECT_EQ(printGraph(Program::parse(program->toJson(), "again.json")->graph()), with_neg);
}

// Node orders are numbered with gaps: insertions take a number between their neighbours
// until a gap runs out, then the graph is renumbered. Either way order() grows along the
// node list and the target index lists nodes in graph order.
TEST(Rewriter, KeepsOrderAndTargetIndexAcrossManyInsertions) {
  auto program = chain();
  Graph& graph = program->graph();
  Rewriter rewriter(*program);
  ASSERT_EQ(graph.nodesWithTarget("torch.ops.aten.neg.default").size(), 0u);  // index built
  auto insertNeg = [&](Node& before) -> Node& {
    NewNode neg{.target = "torch.ops.aten.neg.default",
                .inputs = {{"self", rewriter.tensorArg(graph.getValue("x")), "1"}},
                .tensor_outputs = {{rewriter.freshName("neg"), graph.getValue("x").tensorMeta()}}};
    return rewriter.insertBefore(before, std::move(neg));
  };
  Node& dropout = *graph.getValue("dropout").producer();
  Node& relu = *graph.getValue("relu").producer();
  // 40 in a row right before dropout, each after the previous one: more than the gap holds.
  std::vector<const Node*> expected;
  for (int i = 0; i < 40; ++i) {
    expected.push_back(&insertNeg(dropout));
    if (i == 10) {  // still within the gap: the index took each node in place
      const std::vector<Node*>& so_far = graph.nodesWithTarget("torch.ops.aten.neg.default");
      EXPECT_EQ(std::vector<const Node*>(so_far.begin(), so_far.end()), expected);
    }
  }
  // And some before the first node, each new one becoming the first.
  Node* first = &relu;
  for (int i = 0; i < 25; ++i) {
    first = &insertNeg(*first);
    expected.insert(expected.begin(), first);
  }
  graph.renumber();
  std::size_t previous = 0;
  std::vector<const Node*> negs_in_order;
  for (const auto& node : graph.nodes()) {
    EXPECT_GT(node->order(), previous) << node->name();
    previous = node->order();
    if (node->target() == "torch.ops.aten.neg.default") negs_in_order.push_back(node.get());
  }
  EXPECT_EQ(negs_in_order, expected);
  const std::vector<Node*>& indexed = graph.nodesWithTarget("torch.ops.aten.neg.default");
  EXPECT_EQ(std::vector<const Node*>(indexed.begin(), indexed.end()), negs_in_order);
  auto reparsed = Program::parse(program->toJson(), "again.json");
  EXPECT_EQ(printGraph(reparsed->graph()), printGraph(graph));
}

TEST(Rewriter, ChangesOutputsAndSignatureTogether) {
  auto program = chain();
  Graph& graph = program->graph();
  Rewriter rewriter(*program);
  rewriter.addBufferMutation(graph.getValue("add_"), "bn.num_batches_tracked");
  ASSERT_EQ(graph.outputs().size(), 2u);
  EXPECT_EQ(graph.outputSpecs()[0].kind, "buffer_mutation");
  EXPECT_EQ(graph.outputSpecs()[0].target, "bn.num_batches_tracked");
  EXPECT_EQ(graph.outputSpecs()[1].kind, "user_output");
  auto reparsed = Program::parse(program->toJson(), "again.json");
  EXPECT_EQ(reparsed->graph().outputSpecs()[0].value()->name(), "add_");
  rewriter.removeOutput(0);
  EXPECT_EQ(graph.outputs().size(), 1u);
  program->verify();
  // Replacing a value that is a graph output moves the output and its spec along.
  rewriter.replaceUses(graph.getValue("dropout"), graph.getValue("relu"));
  EXPECT_EQ(graph.outputs()[0].tensor()->name(), "relu");
  EXPECT_EQ(graph.outputSpecs()[0].value()->name(), "relu");
}

}  // namespace
}  // namespace exmode::rewrite

namespace exmode::rewrite {
namespace {

// Writes each notification as one line, so a test sees their order too.
class RecordingListener final : public Listener {
 public:
  std::vector<std::string> lines;
  void inputSet(const Node& node, std::string_view input) override {
    const NamedArgument* in = node.input(input);
    lines.push_back("set " + std::string(node.name()) + "." + std::string(input) + " " +
                    std::string(in == nullptr ? "?" : in->arg.payload.text));
  }
  void inputRemoved(const Node& node, std::string_view input) override {
    lines.push_back("remove " + std::string(node.name()) + "." + std::string(input));
  }
  void metadataSet(const Node& node, std::string_view key) override {
    lines.push_back("metadata " + std::string(node.name()) + "." + std::string(key));
  }
  void useReplaced(const Node* user, const Value& from, const Value& to) override {
    lines.push_back("use " + std::string(user == nullptr ? "<output>" : user->name()) + " " +
                    std::string(from.name()) + "->" + std::string(to.name()));
  }
  void nodeErased(const Node& node) override {
    lines.push_back("erase " + std::string(node.name()));
  }
  void nodeInserted(const Node& node, const Node& before) override {
    lines.push_back("insert " + std::string(node.name()) + " " + std::string(node.target()) +
                    " before " + std::string(before.name()));
  }
  void outputsChanged() override { lines.push_back("outputs"); }
  void targetSet(const Node& node) override {
    lines.push_back("target " + std::string(node.name()) + " " + std::string(node.target()));
  }
  void nodeOutputsSet(const Node& node) override {
    lines.push_back("node outputs " + std::string(node.name()) + " " +
                    std::to_string(node.outputs().size()));
  }
};

TEST(Listener, HearsEveryChangeOfASwitchInOrder) {
  auto program = Program::parse(testing::bnDropoutTrainProgram(), "bn.json");
  RecordingListener to_eval;
  switchMode(*program, Mode::kEval, "model", nullptr, nullptr, &to_eval);
  // Pass after pass (registry.cc: dropout before batch norm), each change as it is made.
  EXPECT_EQ(to_eval.lines,
            (std::vector<std::string>{"set dropout.train false", "set batch_norm.training false",
                                      "erase add_"}));
  RecordingListener to_train;
  switchMode(*program, Mode::kTrain, "model", nullptr, nullptr, &to_train);
  EXPECT_EQ(to_train.lines,
            (std::vector<std::string>{"set dropout.train true", "set batch_norm.training true",
                                      "insert add_ torch.ops.aten.add_.Tensor before batch_norm"}));
  // A no-op switch tells nothing.
  RecordingListener again;
  switchMode(*program, Mode::kTrain, "model", nullptr, nullptr, &again);
  EXPECT_TRUE(again.lines.empty());
}

TEST(Listener, HearsRewiredUsesAndGraphOutputs) {
  auto program = chain();
  Rewriter rewriter(*program);
  RecordingListener listener;
  rewriter.setListener(&listener);
  Graph& graph = program->graph();
  rewriter.replaceUses(graph.getValue("dropout"), graph.getValue("relu"));
  EXPECT_FALSE(listener.lines.empty());
  for (const std::string& line : listener.lines) EXPECT_EQ(line.rfind("use ", 0), 0U) << line;
  EXPECT_NE(std::find(listener.lines.begin(), listener.lines.end(), "use <output> dropout->relu"),
            listener.lines.end());
}

}  // namespace
}  // namespace exmode::rewrite
