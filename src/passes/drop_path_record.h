// The record a drop path leaves when it goes to eval (see drop_path.cc): what restoring it
// takes, as JSON text kept in the first reader's custom metadata (passes/remembered.h).
//
// {"keep": 0.8, "x": "<value the readers read now>", "after": "<node before the chain>" | null,
//  "readers": [["<node>", "<input>", <reference index in the input>], ...],
//  "nodes": [{"target": ..., "inputs": [<NamedArgument>...], "output": "<name>",
//             "tensor_meta": <TensorMeta>, "metadata": {...}}, ...],
//  "form": "dropout", "outputs": [[<graph output index>, <reference index>], ...]}
//
// "form" (drop_path_chain.h) is written for the forms other than drop path, and "outputs"
// when graph outputs read the chain's output; records without them (earlier builds) are drop
// paths read by nodes alone. A record read only by graph outputs is kept on the node before
// the chain ("after"), since no node reads its value.
//
// Written with torch's separators, so that torch.export.save writes it back as it is.
#pragma once

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "exmode/program.h"
#include "passes/drop_path_chain.h"

namespace exmode::passes::drop_path {

inline constexpr std::string_view kRecordKey = "exmode_drop_path";

struct RecordInput {
  std::string name;
  std::string arg_kind;               // "as_tensor", "as_float", ...
  std::string payload;                // the payload's JSON text
  std::optional<std::string> tensor;  // the value an as_tensor names
  std::string kind;                   // ArgumentKind ("1", "2"), empty when absent
  std::vector<std::pair<std::string, std::string>> extra;
};

struct RecordNode {
  std::string target;
  std::vector<RecordInput> inputs;
  std::string output;
  std::string tensor_meta;
  std::vector<std::pair<std::string, std::string>> metadata;  // key, JSON string token
};

struct RecordReader {
  std::string node;
  std::string input;
  std::size_t ref = 0;
};

struct RecordOutput {
  std::size_t output = 0;  // index into the graph's outputs
  std::size_t ref = 0;
  bool operator==(const RecordOutput&) const = default;
};

struct Record {
  Form form = Form::kDropPath;
  double keep = 0;
  std::string x;
  std::optional<std::string> after;
  std::vector<RecordReader> readers;
  std::vector<RecordOutput> outputs;
  std::vector<RecordNode> nodes;  // graph order, the chain's output last
};

// Whether a record can hold this argument kind: literals, and a single tensor reference.
bool recordable(const Argument& arg);

// The record of `chain` (graph order, its output last), whose output the `readers` and the
// graph `outputs` read.
std::string writeRecord(Form form, double keep, const Value& x, const Node* after,
                        const std::vector<const Node*>& chain,
                        const std::vector<RecordReader>& readers,
                        const std::vector<RecordOutput>& outputs);

// The module paths of the nodes in `record` (their innermost nn_module_stack entries).
std::vector<std::string> recordedModules(const Record& record);

// The record in `json`; nullopt when it is not one this build writes.
std::optional<Record> parseRecord(std::string_view json);

}  // namespace exmode::passes::drop_path
