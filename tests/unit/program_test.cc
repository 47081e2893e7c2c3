// Parsing, verifying and writing program JSON.
#include "exmode/program.h"

#include <gtest/gtest.h>
#include <simdjson.h>

#include <limits>

#include "exmode/error.h"
#include "exmode/passes.h"
#include "program/json_text.h"
#include "test_programs.h"

namespace exmode {
namespace {

using testing::bnDropoutTrainProgram;

// Two JSON texts hold the same document.
bool sameJson(const std::string& a, const std::string& b) {
  simdjson::dom::parser pa, pb;
  simdjson::dom::element ea, eb;
  if (pa.parse(a).get(ea) || pb.parse(b).get(eb)) return false;
  return simdjson::to_string(ea) == simdjson::to_string(eb);
}

TEST(JsonText, WithMembersReplacesAndAppendsInTorchsLayout) {
  EXPECT_EQ(json::withMembers(R"({"dtype":7, "sizes": [{"as_int": 4}], "layout": 7})",
                              {{"sizes", R"([{"as_int": 0}])"}, {"requires_grad", "false"}}),
            R"({"dtype": 7, "sizes": [{"as_int": 0}], "layout": 7, "requires_grad": false})");
  EXPECT_EQ(json::withMembers("[1, 2]", {{"dtype", "12"}}), std::nullopt);
  EXPECT_EQ(json::withMembers("{\"a\": ", {{"dtype", "12"}}), std::nullopt);
}

TEST(Program, ParsesGraph) {
  auto program = Program::parse(bnDropoutTrainProgram(), "t.json");
  const Graph& graph = program->graph();
  EXPECT_EQ(graph.nodes().size(), 3u);
  EXPECT_EQ(graph.inputs().size(), 6u);
  const Value& bn = graph.getValue("batch_norm");
  EXPECT_EQ(bn.producer()->target(), "torch.ops.aten.batch_norm.default");
  ASSERT_EQ(bn.users().size(), 1u);
  EXPECT_EQ(bn.users()[0]->name(), "dropout");
  EXPECT_EQ(bn.producer()->modulePath(), "bn");
  EXPECT_EQ(graph.bufferInput("bn.num_batches_tracked"),
            graph.tryGetValue("b_bn_num_batches_tracked"));
  EXPECT_EQ(program->schemaVersion().major, 8);
}

// bufferInput(prefix, suffix, near) answers what bufferInput(prefix + suffix) does: for a
// buffer listed right after `near`, further on, and when two specs share a name (the index
// keeps the first).
TEST(Program, FindsBuffersByNameInPieces) {
  std::string json = testing::makeProgram(
      {},
      {"b_a_running_mean", "b_a_running_var", "b_a_num_batches_tracked", "b_b_running_mean",
       "b_x_1", "b_x_2", "b_x_3", "b_x_4", "b_b_num_batches_tracked"},
      {}, "x");
  auto program = Program::parse(json, "t.json");
  const Graph& graph = program->graph();
  auto near = [&](const std::string& placeholder) {
    return graph.inputSpecOf(graph.tryGetValue(placeholder));
  };
  const Value* a = graph.tryGetValue("b_a_num_batches_tracked");
  const Value* b = graph.tryGetValue("b_b_num_batches_tracked");
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(graph.bufferInput("a.", "num_batches_tracked", near("b_a_running_mean")), a);
  EXPECT_EQ(graph.bufferInput("a", ".num_batches_tracked", nullptr), a);
  EXPECT_EQ(graph.bufferInput("b.", "num_batches_tracked", near("b_b_running_mean")), b);
  EXPECT_EQ(graph.bufferInput("b.", "num_batches_tracked", near("b_a_running_mean")), b);
  EXPECT_EQ(graph.bufferInput("c.", "num_batches_tracked", near("b_a_running_mean")), nullptr);

  // The spec right after b's running mean now repeats a's counter's name.
  const std::string from = "\"buffer_name\": \"x.1\"";
  json.replace(json.find(from), from.size(), "\"buffer_name\": \"a.num_batches_tracked\"");
  auto repeated = Program::parse(json, "t.json");
  const Graph& graph2 = repeated->graph();
  const SignatureSpec* b_mean = graph2.inputSpecOf(graph2.tryGetValue("b_b_running_mean"));
  EXPECT_EQ(graph2.bufferInput("a.num_batches_tracked"),
            graph2.tryGetValue("b_a_num_batches_tracked"));
  EXPECT_EQ(graph2.bufferInput("a.", "num_batches_tracked", b_mean),
            graph2.tryGetValue("b_a_num_batches_tracked"));
}

TEST(Program, WritesBackTheSameJson) {
  const std::string input = bnDropoutTrainProgram();
  auto program = Program::parse(input, "t.json");
  const std::string output = program->toJson();
  EXPECT_TRUE(sameJson(input, output));
  EXPECT_EQ(input, output);  // torch's separators, so even the bytes agree
}

TEST(Program, KeepsFieldsItDoesNotModel) {
  std::string input = bnDropoutTrainProgram();
  const std::string from = "{\"name\": \"p\", \"arg\": {\"as_float\": 0.3}, \"kind\": 1}";
  const std::string to =
      "{\"name\": \"p\", \"arg\": {\"as_float\": 0.3}, \"kind\": 1, \"future\": [1, {\"x\": "
      "null}]}";
  input.replace(input.find(from), from.size(), to);
  auto program = Program::parse(input, "t.json");
  EXPECT_EQ(program->toJson(), input);  // also the top-level "future_field" of the fixture
}

TEST(Program, KeepsUnknownFieldsOfChangedNodesAndTensorArguments) {
  // The dropout node changes (train flag); its untouched input keeps a field the schema
  // may add to TensorArgument, and the changed node keeps an unknown member.
  std::string input = bnDropoutTrainProgram();
  const std::string from =
      "{\"name\": \"input\", \"arg\": {\"as_tensor\": {\"name\": \"batch_norm\"}}";
  const std::string to =
      "{\"name\": \"input\", \"arg\": {\"as_tensor\": {\"name\": \"batch_norm\", \"future\": [1, "
      "2]}}";
  input.replace(input.find(from), from.size(), to);
  auto program = Program::parse(input, "t.json");
  switchMode(*program, Mode::kEval);
  const std::string output = program->toJson();
  EXPECT_NE(output.find(to), std::string::npos) << output;
  EXPECT_NE(output.find("\"train\", \"arg\": {\"as_bool\": false}"), std::string::npos) << output;
  EXPECT_EQ(Program::parse(output, "out.json")->toJson(), output);
}

// Nodes share member lists when their members are the same; a node whose members differ
// (an unknown member, another order) keeps its own, also once it is changed and written
// from its fields, and however many distinct lists a program has.
TEST(Program, ChangedNodesKeepTheirOwnMembers) {
  std::vector<testing::TestNode> nodes;
  std::string input = "x";
  constexpr int kNodes = 12;
  for (int i = 0; i < kNodes; ++i) {
    const std::string name = std::string(1, 'd') += std::to_string(i);
    nodes.push_back({name, "aten.dropout.default",
                     testing::tensorInput("input", input) + ", " + testing::floatInput("p", 0.5) +
                         ", " + testing::boolInput("train", true),
                     "drop"});
    input = name;
  }
  std::string json = testing::makeProgram({}, {}, nodes, input);
  auto tail = [](int i) {
    return "\"is_hop_single_tensor_return\": null, \"name\": \"" +
           (std::string(1, 'd') += std::to_string(i)) + "\"}";
  };
  std::vector<std::string> own(kNodes);
  for (int i = 0; i < kNodes; ++i) {
    // Even nodes keep torch's members; odd ones get an unknown member of their own, and
    // every third of those has it before the name.
    own[i] = tail(i);
    if (i % 2 == 1) {
      const std::string future = "\"future\": [" + std::to_string(i) + "]";
      own[i] = i % 3 == 0 ? "\"is_hop_single_tensor_return\": null, " + future + ", \"name\": \"" +
                                (std::string(1, 'd') += std::to_string(i)) + "\"}"
                          : tail(i).substr(0, tail(i).size() - 1) + ", " + future + "}";
    }
    const std::size_t at = json.find(tail(i));
    ASSERT_NE(at, std::string::npos) << tail(i);
    json.replace(at, tail(i).size(), own[i]);
  }
  auto program = Program::parse(json, "t.json");
  EXPECT_EQ(program->toJson(), json);
  switchMode(*program, Mode::kEval);
  const std::string eval = program->toJson();
  for (int i = 0; i < kNodes; ++i) EXPECT_NE(eval.find(own[i]), std::string::npos) << own[i];
  EXPECT_EQ(eval.find("\"as_bool\": true"), std::string::npos) << eval;
  switchMode(*program, Mode::kTrain);
  EXPECT_EQ(program->toJson(), json);
}

TEST(Program, SerializesUnchangedStretchesAsOneChunk) {
  const std::string input = bnDropoutTrainProgram();
  auto program = Program::parse(input, "t.json");
  const SerializedProgram unchanged = program->serialize();
  EXPECT_EQ(unchanged.join(), input);
  switchMode(*program, Mode::kEval);
  const SerializedProgram changed = program->serialize();
  EXPECT_EQ(changed.size, changed.join().size());
  EXPECT_LT(changed.chunks.size(), 12u);  // a few per changed node, not one per value
}

TEST(Program, PrintsGraph) {
  auto program = Program::parse(bnDropoutTrainProgram(), "t.json");
  const std::string text = printGraph(program->graph());
  EXPECT_NE(text.find("%dropout = aten.dropout.default(input=%batch_norm, p=0.3, train=true)"),
            std::string::npos)
      << text;
}

void expectBadProgram(const std::string& json, const std::string& message_part) {
  try {
    Program::parse(json, "bad.json");
    FAIL() << "accepted: " << message_part;
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kBadProgram);
    const std::string what = e.what();
    EXPECT_NE(what.find("bad.json: "), std::string::npos) << what;
    EXPECT_NE(what.find(message_part), std::string::npos) << what;
    EXPECT_EQ(what.find('\n'), std::string::npos) << what;
  }
}

void replaceOnce(std::string& s, const std::string& from, const std::string& to) {
  const auto at = s.find(from);
  ASSERT_NE(at, std::string::npos) << from;
  s.replace(at, from.size(), to);
}

// The train fixture with one piece of text replaced.
std::string fixtureWith(const std::string& from, const std::string& to) {
  std::string json = bnDropoutTrainProgram();
  const auto at = json.find(from);
  EXPECT_NE(at, std::string::npos) << from;
  if (at != std::string::npos) json.replace(at, from.size(), to);
  return json;
}

TEST(Program, RejectsBadPrograms) {
  expectBadProgram("{\"graph_module\": ", "malformed JSON");
  expectBadProgram("[1, 2]", "not a JSON object");
  expectBadProgram(bnDropoutTrainProgram() + " {}", "content after the program");
  expectBadProgram(testing::makeProgram({}, {}, {}, "x", 99), "unsupported schema version 99.20");
  const std::string dropout_outputs = "\"outputs\": [{\"as_tensor\": {\"name\": \"dropout\"}}]";
  const std::string input = "{\"name\": \"input\", \"arg\": {\"as_tensor\": {\"name\": ";
  const struct {
    std::string from, to, message;
  } edits[] = {
      // Repeated modelled fields: Python's json keeps the last, so torch would read another
      // program than the one exmode switched.
      {dropout_outputs + ", \"metadata\"", dropout_outputs + ", \"outputs\": [], \"metadata\"",
       "repeats field 'outputs'"},
      {"{\"name\": \"input\", \"arg\"", "{\"name\": \"input\", \"name\": \"x\", \"arg\"",
       "repeats field 'name'"},
      {input + "\"batch_norm\"}}", input + "\"nowhere\"}}", "'nowhere', which is not defined"},
      {"{\"as_float\": 0.3}", "{\"as_quaternion\": 0.3}", "unknown argument kind 'as_quaternion'"},
      {dropout_outputs + ", \"nodes\"",
       "\"outputs\": [{\"as_tensor\": {\"name\": \"missing\"}}], \"nodes\"", "'missing'"},
      {dropout_outputs + ", \"metadata\"",
       "\"outputs\": [{\"as_tensor\": {\"name\": \"batch_norm\"}}], \"metadata\"", "defined twice"},
      {"\"graph_module\"", "\"graph_modulo\"", "graph_module"},
  };
  for (const auto& edit : edits) expectBadProgram(fixtureWith(edit.from, edit.to), edit.message);
}

TEST(Program, EnforcesReadLimits) {
  const std::string json = bnDropoutTrainProgram();
  EXPECT_NO_THROW(Program::parse(json, "t.json", {}));
  auto refused = [&](ReadLimits limits, const std::string& message_part) {
    try {
      Program::parse(json, "t.json", limits);
      ADD_FAILURE() << "accepted: " << message_part;
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::kBadProgram);
      EXPECT_NE(std::string(e.what()).find(message_part), std::string::npos) << e.what();
    }
  };
  refused({.max_json_bytes = json.size() - 1}, "bytes of JSON, more than the limit of");
  refused({.max_nodes = 2}, "more than 2 nodes");
  std::string maps = "{\"as_int\": 1}";
  for (int i = 0; i < 40; ++i) maps = "{\"as_string_to_argument\": {\"k\": " + maps + "}}";
  std::string nested = json;
  replaceOnce(nested, "{\"as_float\": 0.3}", maps);
  EXPECT_NO_THROW(Program::parse(nested, "t.json", {.max_depth = 128}));
  EXPECT_NO_THROW(Program::parse(json, "t.json", {.max_depth = 60}));
  try {
    Program::parse(nested, "t.json", {.max_depth = 60});
    ADD_FAILURE() << "accepted 80 levels with a limit of 60";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("nested too deeply"), std::string::npos) << e.what();
  }
}

TEST(Program, RejectsDeepNestingWithoutCrashing) {
  const std::string deep = std::string(100000, '[') + std::string(100000, ']');
  expectBadProgram(deep, "not a JSON object");
  // Deep text the IR keeps verbatim (metadata), which simdjson skips without bounding its
  // depth, and deep argument maps, which the reader walks itself, are both refused.
  std::string in_metadata = bnDropoutTrainProgram();
  replaceOnce(in_metadata, "\"metadata\": {", "\"metadata\": {\"deep\": " + deep + ", ");
  expectBadProgram(in_metadata, "nested too deeply");
  std::string maps;
  for (int i = 0; i < 100000; ++i) maps += "{\"as_string_to_argument\": {\"k\": ";
  maps += "{\"as_int\": 1}";
  for (int i = 0; i < 100000; ++i) maps += "}}";
  std::string in_argument = bnDropoutTrainProgram();
  replaceOnce(in_argument, "{\"as_float\": 0.3}", maps);
  expectBadProgram(in_argument, "nested too deeply");
}

}  // namespace
}  // namespace exmode

namespace exmode {
namespace {

TEST(JsonText, WritesFloatsAsPythonRepr) {
  const std::pair<double, const char*> cases[] = {{0.0, "0.0"},
                                                  {1e-4, "0.0001"},
                                                  {1e-5, "1e-05"},
                                                  {1e16, "1e+16"},
                                                  {1e15, "1000000000000000.0"},
                                                  {0.1, "0.1"},
                                                  {-2.5, "-2.5"},
                                                  {1.5e300, "1.5e+300"},
                                                  {1.0 / 3.0, "0.3333333333333333"}};
  for (const auto& [value, text] : cases) {
    std::string out;
    json::appendDouble(out, value);
    EXPECT_EQ(out, text);
  }
  std::string special;
  json::appendDouble(special, std::numeric_limits<double>::infinity());
  json::appendDouble(special, std::numeric_limits<double>::quiet_NaN());
  EXPECT_EQ(special, "\"Infinity\"\"NaN\"");
}

TEST(JsonText, EscapesLikeEnsureAscii) {
  std::string out;
  json::appendString(out, "a\"\\\n\x01\x7f \xc2\xb5 \xf0\x9f\x99\x82");
  EXPECT_EQ(out, "\"a\\\"\\\\\\n\\u0001\\u007f \\u00b5 \\ud83d\\ude42\"");
}

}  // namespace
}  // namespace exmode
