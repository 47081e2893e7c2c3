// The program IR: a typed view of one serialized ExportedProgram (`models/<name>.json`,
// schema torch/_export/serde/schema.py, major version 8).
//
// The IR models what the mode switch reads or changes: graph inputs and outputs, nodes
// (target, named inputs, outputs), values with their uses and tensor metadata, and the
// graph signature. Everything else is kept as JSON text (re-serialized once at parse time,
// with torch's separators) and written back unchanged, in its original order.
#pragma once

#include <cstdint>
#include <deque>
#include <list>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace exmode {

class Node;
class Value;
class ProgramReader;
class ProgramWriter;
namespace rewrite {
class Rewriter;
}

// JSON text of a part the IR does not model, owned by the program (its arena).
using RawJson = std::string_view;

// A value's name token inside raw JSON text: where to splice the current name on output.
struct Ref {
  Value* value = nullptr;
  std::uint32_t offset = 0;  // offset of the opening quote of the name string
  std::uint32_t length = 0;  // length of the quoted string token
};

// JSON text with the value references found in it. Written out with each reference
// replaced by its value's current name, so rewires need no re-parse.
struct RefText {
  RawJson text;
  std::vector<Ref> refs;
};

// One `Argument` tagged union: `kind` is the tag ("as_tensor", "as_float", ...), `payload`
// the tagged value. Tensor-like kinds list the values they reference in payload.refs.
struct Argument {
  std::string kind;
  RefText payload;

  bool isNone() const { return kind == "as_none"; }
  // The single value of an `as_tensor` (or present `as_optional_tensor`); null otherwise.
  Value* tensor() const;
  std::optional<bool> asBool() const;
  std::optional<double> asDouble() const;  // as_float (also as_int) payloads
  std::optional<std::int64_t> asInt() const;
};

struct NamedArgument {
  std::string name;
  Argument arg;
  RawJson kind;  // the ArgumentKind field ("1", "2") or empty when absent
  // Fields the schema may add later, kept in order and written after `kind`.
  std::vector<std::pair<std::string, RawJson>> extra = {};
};

// What defines a value: a graph input or a node output.
class Value {
 public:
  const std::string& name() const { return name_; }
  Node* producer() const { return producer_; }  // null for graph inputs
  // Nodes reading this value, once per reference, in no particular order.
  const std::vector<Node*>& users() const { return users_; }
  // Tensor metadata from `tensor_values` (raw TensorMeta), empty if it has none.
  RawJson tensorMeta() const { return tensor_meta_; }

 private:
  friend class Graph;
  friend class ProgramReader;
  friend class ProgramWriter;
  friend class rewrite::Rewriter;
  std::string name_;
  Node* producer_ = nullptr;
  std::vector<Node*> users_;
  RawJson tensor_meta_;
  bool erased_ = false;
};

class Node {
 public:
  const std::string& name() const { return name_; }
  // The operator, e.g. "torch.ops.aten.batch_norm.default".
  const std::string& target() const { return target_; }
  const std::vector<NamedArgument>& inputs() const { return inputs_; }
  const std::vector<Argument>& outputs() const { return outputs_; }
  // The named input, or null when absent (arguments left at their default are omitted).
  const NamedArgument* input(std::string_view name) const;
  // The value of a single-tensor output; null otherwise.
  Value* output() const;
  // Raw `metadata` object text (stack_trace, nn_module_stack, ...).
  RawJson metadata() const { return metadata_; }
  // One string field of the metadata, unescaped; empty when absent.
  std::string metadataField(std::string_view key) const;
  // The module path of the innermost nn_module_stack entry ("" for the root module).
  std::string modulePath() const;
  // The class of that module, e.g. "torch.nn.modules.activation.MultiheadAttention".
  std::string moduleType() const;
  // Position in the graph's node order; valid after Graph::renumber().
  std::size_t order() const { return order_; }

 private:
  friend class Graph;
  friend class ProgramReader;
  friend class ProgramWriter;
  friend class rewrite::Rewriter;
  std::string name_;
  std::string target_;
  std::vector<NamedArgument> inputs_;
  std::vector<Argument> outputs_;
  RawJson metadata_;
  // All members of the node object in source order (key, raw value). Modeled members are
  // written from the fields above; the rest verbatim.
  std::vector<std::pair<std::string, RawJson>> members_;
  std::size_t order_ = 0;
  std::list<std::unique_ptr<Node>>::iterator self_;
};

// One entry of the graph signature: the union tag (e.g. "buffer", "user_output"), the
// payload with its value references, and the state-dict name it names, if any
// (parameter_name, buffer_name, tensor_constant_name, custom_obj_name, user_input_name).
struct SignatureSpec {
  std::string kind;
  RefText payload;
  std::string target;
  Value* value() const { return payload.refs.empty() ? nullptr : payload.refs.front().value; }
};

// A node inside a nested graph.
struct NestedNode {
  const Node* owner = nullptr;  // the top-level node whose argument holds the graph
  std::string target;
};

// The graph of one program and its signature. Owns nodes and values. All mutation goes
// through rewrite::Rewriter, which keeps uses, tensor_values and the signature in step.
class Graph {
 public:
  using NodeList = std::list<std::unique_ptr<Node>>;

  const NodeList& nodes() const { return nodes_; }
  const std::vector<Argument>& inputs() const { return inputs_; }
  const std::vector<Argument>& outputs() const { return outputs_; }
  const std::vector<SignatureSpec>& inputSpecs() const { return input_specs_; }
  const std::vector<SignatureSpec>& outputSpecs() const { return output_specs_; }

  Value* tryGetValue(std::string_view name) const;
  Value& getValue(std::string_view name) const;  // throws Error(kBadProgram)
  // The input spec whose placeholder is `value`, or null.
  const SignatureSpec* inputSpecOf(const Value* value) const;
  // The placeholder of the buffer with this state-dict name, or null.
  Value* bufferInput(std::string_view buffer_name) const;
  // Nodes with the given target, in graph order. Built on demand, kept current by the
  // rewriter; the anchor index of the pattern matcher.
  const std::vector<Node*>& nodesWithTarget(std::string_view target) const;
  // Nodes of nested graphs (as_graph arguments of higher-order ops such as torch.cond,
  // autocast and no_grad regions), with the top-level node that holds them. Nested graphs
  // are kept verbatim; this list lets passes see what they contain.
  const std::vector<NestedNode>& nestedNodes() const { return nested_nodes_; }
  // Recomputes Node::order() after insertions.
  void renumber();
  // A fresh value name `base`, `base_1`, `base_2`, ... not used in the graph.
  std::string freshName(std::string_view base) const;

 private:
  friend class ProgramReader;
  friend class ProgramWriter;
  friend class rewrite::Rewriter;
  NodeList nodes_;
  std::vector<Argument> inputs_;
  std::vector<Argument> outputs_;
  std::vector<SignatureSpec> input_specs_;
  std::vector<SignatureSpec> output_specs_;
  std::deque<Value> value_storage_;
  std::unordered_map<std::string_view, Value*> values_;
  // tensor_values in source order, then values added by rewrites.
  std::vector<Value*> tensor_value_order_;
  mutable std::unordered_map<std::string, std::vector<Node*>> by_target_;
  mutable bool by_target_valid_ = false;
  // Members of the graph and signature objects in source order (key, raw value).
  std::vector<std::pair<std::string, RawJson>> graph_members_;
  std::vector<std::pair<std::string, RawJson>> signature_members_;
  std::vector<NestedNode> nested_nodes_;
};

struct SchemaVersion {
  std::int64_t major = 0;
  std::int64_t minor = 0;
};

// The schema major this build reads and writes.
inline constexpr std::int64_t kSupportedSchemaMajor = 8;

// One ExportedProgram: the graph plus every other field, kept verbatim.
class Program {
 public:
  // Parses and verifies program JSON. `source_name` names the file (and record) in errors.
  // Throws Error(kBadProgram) with one line saying what is wrong.
  static std::unique_ptr<Program> parse(std::string_view json, std::string source_name);

  Graph& graph() { return graph_; }
  const Graph& graph() const { return graph_; }
  SchemaVersion schemaVersion() const { return schema_version_; }
  const std::string& sourceName() const { return source_name_; }
  // Module paths (fqn) of the module call graph, in order.
  const std::vector<std::string>& moduleCallGraphFqns() const { return module_fqns_; }

  // Checks the graph invariants; throws Error(kBadProgram) naming the first violation.
  void verify() const;
  // Serializes the program; verifies first.
  std::string toJson() const;
  // Keeps `text` alive as long as the program and returns a view of it.
  RawJson keep(std::string text);

 private:
  friend class ProgramReader;
  friend class ProgramWriter;
  std::string source_name_;
  std::deque<std::string> arena_;
  Graph graph_;
  SchemaVersion schema_version_;
  std::vector<std::string> module_fqns_;
  std::vector<std::pair<std::string, RawJson>> top_members_;
  std::vector<std::pair<std::string, RawJson>> graph_module_members_;
};

// Every op target starts with this.
inline constexpr std::string_view kOpTargetPrefix = "torch.ops.";
// "torch.ops.aten.dropout.default" -> "aten.dropout.default".
std::string_view shortTarget(std::string_view target);

// A one-line-per-node text form of a graph for tests and debugging, e.g.
//   %batch_norm = aten.batch_norm.default(input=%conv2d, ..., training=true, momentum=0.3)
std::string printGraph(const Graph& graph);

}  // namespace exmode
