// The program IR: a typed view of one serialized ExportedProgram (`models/<name>.json`,
// schema torch/_export/serde/schema.py, major version 8).
//
// The IR models what the mode switch reads or changes: graph inputs and outputs, nodes
// (target, named inputs, outputs), values with their uses and tensor metadata, and the
// graph signature. Everything else is kept as JSON text (re-serialized once at parse time,
// with torch's separators) and written back unchanged, in its original order.
#pragma once

#include <absl/container/flat_hash_map.h>
#include <absl/container/inlined_vector.h>

#include <cstdint>
#include <deque>
#include <list>
#include <memory>
#include <optional>
#include <span>
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

// JSON text owned by the program: a view into the source document, or into the program's
// arena for text a rewrite created.
using RawJson = std::string_view;
// What simdjson may read past the end of a document (Program::parseInPlace).
inline constexpr std::size_t kJsonPadding = 64;

// A value's name token inside raw JSON text: where to splice the current name on output.
struct Ref {
  Value* value = nullptr;
  std::uint32_t offset = 0;  // offset of the opening quote of the name string
  std::uint32_t length = 0;  // length of the quoted string token
};

// Most payloads reference one value: kept inline, without an allocation.
using Refs = absl::InlinedVector<Ref, 1>;

// JSON text with the value references found in it. Written out with each reference
// replaced by its value's current name, so rewires need no re-parse.
struct RefText {
  RawJson text;
  Refs refs;
};

// How the IR writes back what it read: an item (node, argument, signature entry) that
// still has its `source` text is written as that text, byte for byte. The rewriter clears
// `source` of every item it changes (and of the node holding it); such items are written
// from their fields, with torch's separators.

// One `Argument` tagged union: `kind` is the tag ("as_tensor", "as_float", ...), `payload`
// the tagged value. Tensor-like kinds list the values they reference in payload.refs.
struct Argument {
  std::string_view kind;
  RefText payload;
  RawJson source;  // the whole {"<kind>": <payload>} text, until changed

  bool isNone() const { return kind == "as_none"; }
  // The single value of an `as_tensor` (or present `as_optional_tensor`); null otherwise.
  Value* tensor() const;
  std::optional<bool> asBool() const;
  std::optional<double> asDouble() const;  // as_float (also as_int) payloads
  std::optional<std::int64_t> asInt() const;
};

struct NamedArgument {
  std::string_view name;
  Argument arg;
  RawJson kind;  // the ArgumentKind field ("1", "2") or empty when absent
  // Fields the schema may add later, kept in order and written after `kind`.
  std::vector<std::pair<std::string_view, RawJson>> extra = {};
  RawJson source = {};  // the whole {"name": ..., "arg": ...} text, until changed
};

// What defines a value: a graph input or a node output.
class Value {
 public:
  std::string_view name() const { return name_; }
  Node* producer() const { return producer_; }  // null for graph inputs
  // Nodes reading this value, once per reference, in no particular order.
  std::span<Node* const> users() const { return {users_.data(), users_.size()}; }
  // Tensor metadata from `tensor_values` (raw TensorMeta), empty if it has none.
  RawJson tensorMeta() const { return tensor_meta_; }
  // A symbol listed in sym_*_values that no node defines.
  bool isDeclaredSymbol() const { return declared_symbol_; }
  // Position in the graph's value storage (dense, for side tables).
  std::size_t index() const { return index_; }

 private:
  friend class Graph;
  friend class ProgramReader;
  friend class ProgramWriter;
  friend class rewrite::Rewriter;
  std::string_view name_;
  Node* producer_ = nullptr;
  // Most values have one reader: kept inline, without an allocation.
  absl::InlinedVector<Node*, 1> users_;
  RawJson tensor_meta_;
  RawJson tensor_entry_;     // the `"name": {...}` member of tensor_values it was read from
  std::uint32_t index_ = 0;  // position in the graph's value storage
  bool erased_ = false;
  bool declared_symbol_ = false;  // listed in sym_*_values, defined by no node
  bool indexed_ = false;          // the one Graph::tryGetValue() finds by this name
};

class Node {
 public:
  std::string_view name() const { return name_; }
  // The operator, e.g. "torch.ops.aten.batch_norm.default".
  std::string_view target() const { return target_; }
  const std::vector<NamedArgument>& inputs() const { return inputs_; }
  std::span<const Argument> outputs() const { return {outputs_.data(), outputs_.size()}; }
  // The named input, or null when absent (arguments left at their default are omitted).
  const NamedArgument* input(std::string_view name) const;
  // The value of a single-tensor output; null otherwise.
  Value* output() const;
  // The `metadata` object's members (key, JSON text of the value), in order.
  std::span<const std::pair<std::string_view, RawJson>> metadataFields() const {
    return metadata_fields_;
  }
  // One string field of the metadata, unescaped; empty when absent.
  std::string metadataField(std::string_view key) const;
  // The same field as JSON text (a quoted string token, escapes kept); empty when absent.
  RawJson metadataFieldJson(std::string_view key) const;
  // The module path of the innermost nn_module_stack entry ("" for the root module).
  std::string modulePath() const;
  // The same, as a view into the metadata text; a view with no data (data() == nullptr)
  // when the stack holds escapes and only modulePath() can give it.
  std::string_view modulePathView() const;
  // The class of that module, e.g. "torch.nn.modules.activation.MultiheadAttention".
  std::string moduleType() const;
  // A number that grows along the graph's node order (not a dense index: nodes are
  // numbered with gaps so that an insertion rarely renumbers); valid after
  // Graph::renumber().
  std::size_t order() const { return order_; }

 private:
  friend class Graph;
  friend class ProgramReader;
  friend class ProgramWriter;
  friend class rewrite::Rewriter;
  std::string_view name_;
  std::string_view target_;
  std::vector<NamedArgument> inputs_;
  // Inline: almost every node has one output, and a switch that reuses an erased node
  // rewrites it without reaching into a second, cold allocation.
  absl::InlinedVector<Argument, 1> outputs_;
  RawJson metadata_;  // the metadata object's text, until changed (then written from fields)
  // The metadata's members (key, raw string token), read with the node: metadata is a
  // flat dict[str, str] that passes query per site.
  // Inline: torch writes four or five members, and a large program has a million nodes.
  absl::InlinedVector<std::pair<std::string_view, RawJson>, 5> metadata_fields_;
  // All members of the node object in source order (key, raw value). Modeled members are
  // written from the fields above; the rest verbatim. Torch writes the same six for almost
  // every node: the list is shared (Graph::member_lists_, or static for inserted nodes).
  std::span<const std::pair<std::string_view, RawJson>> members_;
  RawJson source_;  // the node's whole text, until changed
  // modulePathView(), computed once (passes ask for it several times per site).
  mutable std::string_view module_path_;
  mutable bool module_path_known_ = false;
  std::size_t order_ = 0;
  bool erased_ = false;
  std::list<std::unique_ptr<Node>>::iterator self_;
};

// One entry of the graph signature: the union tag (e.g. "buffer", "user_output"), the
// payload with its value references, and the state-dict name it names, if any
// (parameter_name, buffer_name, tensor_constant_name, custom_obj_name, user_input_name).
struct SignatureSpec {
  std::string_view kind;
  RefText payload;
  std::string_view target;
  RawJson source;  // the whole {"<kind>": {...}} text, until changed
  Value* value() const { return payload.refs.empty() ? nullptr : payload.refs.front().value; }
};

// A node inside a nested graph exmode keeps verbatim (one it does not read as a Region).
struct NestedNode {
  const Node* owner = nullptr;  // the top-level node whose argument holds the graph
  std::string_view target;
};

class Graph;

// A nested graph: the `as_graph` argument of a higher-order op (torch.cond branches,
// wrap_with_set_grad_enabled and wrap_with_autocast bodies, ...), read as a Graph of its
// own (inputs, outputs, nodes, tensor_values; no signature). Its values are its own: torch
// names them independently of the enclosing graph. While it is unchanged (its graph's
// version() is 0) it is written back as the text it was read from.
struct Region {
  Node* owner = nullptr;  // the node of the enclosing graph whose input holds it
  std::size_t input = 0;  // the index of that input in owner->inputs()
  std::string_view name;  // the GraphArgument's name, e.g. "true_graph_0"
  std::unique_ptr<Graph> graph;
  // How reports name what is inside it: "<owner>/<name>/", prefixed by the enclosing
  // region's path (empty for the top-level graph).
  std::string path;
  RawJson text;    // the graph object's source text
  RawJson before;  // the GraphArgument's text before the graph object ({"name": ..., "graph": )
  RawJson after;   // and after it
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
  // Every value defined so far; Value::index_ indexes it.
  std::size_t valueCount() const { return value_storage_.size(); }
  // The input spec whose placeholder is `value`, or null. Indexed on first use.
  const SignatureSpec* inputSpecOf(const Value* value) const;
  // The placeholder of the buffer with this state-dict name, or null. Indexed on first use.
  Value* bufferInput(std::string_view buffer_name) const;
  // The same for the name `prefix` + `suffix`. When `near` is one of this graph's input
  // specs, the few specs after it are compared first (torch lists a module's buffers
  // together: running_mean, running_var, num_batches_tracked), so that usually no name is
  // built or hashed; the answer is the same either way.
  Value* bufferInput(std::string_view prefix, std::string_view suffix,
                     const SignatureSpec* near) const;
  // Nodes with the given target, in graph order; the anchor index of the pattern matcher.
  // Built on demand, and rebuilt on the next call after a rewrite inserted nodes or a switch
  // released erased ones (erased nodes still listed until then are skipped).
  const std::vector<Node*>& nodesWithTarget(std::string_view target) const;
  // Nodes of nested graphs exmode keeps verbatim (an as_graph argument that is not a
  // complete graph, or one inside another argument), at every depth, with the top-level
  // node that holds them: this list lets passes see what they contain.
  const std::vector<NestedNode>& nestedNodes() const { return nested_nodes_; }
  // The nested graphs of this graph's nodes, in node order (regions.cc). Their own nested
  // graphs are theirs.
  const std::deque<Region>& regions() const { return regions_; }
  std::deque<Region>& regions() { return regions_; }
  // For a region's graph: the region and the graph that holds it; null for a program's
  // graph.
  const Region* region() const { return region_; }
  const Graph* parent() const { return parent_; }
  // What the caller passes for input `input` of this region's graph: the value in the
  // parent graph, or null when the caller's operands do not map one to one onto the
  // region's inputs (regions.cc says how each higher-order op passes them).
  Value* operandOf(std::size_t input) const;
  // The node after / before `node` in graph order, or null at the end / start.
  const Node* nextNode(const Node& node) const;
  const Node* previousNode(const Node& node) const;
  // Recomputes Node::order() after insertions that found no gap to take (a no-op
  // otherwise: erasing keeps the order of the nodes left).
  void renumber();
  // The spacing of Node::order() after a renumbering: room for 20 insertions in a row at
  // one place, and for 50 million nodes times the gap in 64 bits.
  static constexpr std::size_t kOrderGap = std::size_t{1} << 20;
  // Frees the nodes erased since the last call (keeping them for later insertions) and
  // recycles the storage of their output values; pointers to either become invalid. Called
  // at the end of each switch, so toggling a program does not grow its memory.
  void releaseErased();
  // A fresh value name `base`, `base_1`, `base_2`, ... not used in the graph (nor, in a
  // region's graph, in the graphs enclosing it).
  std::string freshName(std::string_view base) const;
  // Data derived from a graph (a switch's sites, see SwitchCache) is current while the
  // graph's id() and version() are those it was derived at. No two graphs of a process share
  // an id; the version grows with every change the rewriter makes.
  std::uint64_t id() const { return id_; }
  std::uint64_t version() const { return version_; }

 private:
  friend class ProgramReader;
  friend class ProgramWriter;
  friend class rewrite::Rewriter;
  void indexInputSpecs() const;
  bool nameTaken(std::string_view name) const;
  // Storage for a value a rewrite defines: a recycled slot, or a new one.
  Value& newValue();
  // Marks the graph changed (a new version()).
  void touch() { ++version_; }
  static std::uint64_t newId();
  std::uint64_t id_ = newId();
  std::uint64_t version_ = 0;
  NodeList nodes_;
  std::vector<Argument> inputs_;
  std::vector<Argument> outputs_;
  std::vector<SignatureSpec> input_specs_;
  std::vector<SignatureSpec> output_specs_;
  // The source text of the graph's inputs and of the input specs, written as it is while
  // no rewrite touches them (a switch never does): a large program has a million of each.
  RawJson inputs_source_;
  RawJson input_specs_source_;
  std::deque<Value> value_storage_;
  // Open-addressing maps (abseil's SwissTable): value lookups by name are the reader's
  // hottest operation.
  absl::flat_hash_map<std::string_view, Value*> values_;
  // tensor_values in source order, then values added by rewrites.
  std::vector<Value*> tensor_value_order_;
  mutable absl::flat_hash_map<std::string_view, std::vector<Node*>> by_target_;
  mutable bool by_target_valid_ = false;
  bool order_stale_ = false;  // nodes were inserted since the last renumber()
  // Erased nodes stay allocated until releaseErased(), so the target index can skip them
  // while a switch runs. They are then kept for the nodes later rewrites insert (which set
  // every field): switching back and forth erases and inserts the same number of nodes, and
  // list splices move them without allocating.
  NodeList erased_nodes_;
  NodeList spare_nodes_;
  mutable bool by_target_has_erased_ = false;
  // Values erased since the last releaseErased(), and slots of value_storage_ free for
  // reuse (a value keeps its index, so dense side tables stay as small as the graph).
  std::vector<Value*> erased_values_;
  std::vector<Value*> free_values_;
  // Input specs by placeholder and buffer placeholders by state-dict name.
  mutable absl::flat_hash_map<const Value*, std::size_t> input_spec_index_;
  mutable absl::flat_hash_map<std::string_view, Value*> buffer_index_;
  mutable bool input_specs_indexed_ = false;
  mutable bool buffer_names_repeat_ = false;  // two buffer specs with one name
  // The last suffix freshName() gave out per base name.
  mutable absl::flat_hash_map<std::string, std::size_t> fresh_suffix_;
  // The distinct member lists of nodes (Node::members_), kept once each.
  std::deque<std::vector<std::pair<std::string_view, RawJson>>> member_lists_;
  // Members of the graph and signature objects in source order (key, raw value).
  std::vector<std::pair<std::string_view, RawJson>> graph_members_;
  std::vector<std::pair<std::string_view, RawJson>> signature_members_;
  std::vector<NestedNode> nested_nodes_;
  std::deque<Region> regions_;
  const Region* region_ = nullptr;
  const Graph* parent_ = nullptr;
};

struct SchemaVersion {
  std::int64_t major = 0;
  std::int64_t minor = 0;
};

// The schema major this build reads and writes.
inline constexpr std::int64_t kSupportedSchemaMajor = 8;

// A serialized program as a sequence of byte ranges (views into the program's source and
// arena, and text the writer made), so unchanged text is never copied. Valid while the
// Program lives and is not changed.
struct SerializedProgram {
  std::vector<std::string_view> chunks;
  // The writer's own text; each string on the heap so that chunks stay valid when the
  // SerializedProgram is moved (a moved short string would take its bytes with it).
  std::vector<std::unique_ptr<std::string>> owned;
  std::size_t size = 0;
  std::string join() const;
};

// Bounds on a program read from a file. The defaults are far above real models (a program
// of a million nodes is about 1.7 GB of JSON and nests 10 levels deep) and keep a hostile
// file from exhausting memory or the stack; exceeding one is an Error(kBadProgram).
struct ReadLimits {
  std::uint64_t max_json_bytes = 0xFFFFFFFFull - kJsonPadding;  // simdjson's own limit is 4 GiB
  std::uint64_t max_nodes = 50'000'000;
  int max_depth = 256;  // JSON nesting depth
};

// One ExportedProgram: the graph plus every other field, kept verbatim.
class Program {
 public:
  // Parses and verifies program JSON, keeping a copy of it. `source_name` names the file
  // (and record) in errors. Throws Error(kBadProgram) with one line saying what is wrong.
  static std::unique_ptr<Program> parse(std::string_view json, std::string source_name,
                                        const ReadLimits& limits = {});
  // As parse(), without the copy: `json` must outlive the program and be followed by at
  // least kJsonPadding readable bytes (such as a record inside a mapped archive).
  static std::unique_ptr<Program> parseInPlace(std::string_view json, std::string source_name,
                                               const ReadLimits& limits = {});

  Graph& graph() { return graph_; }
  const Graph& graph() const { return graph_; }
  SchemaVersion schemaVersion() const { return schema_version_; }
  const std::string& sourceName() const { return source_name_; }
  // Module paths (fqn) of the module call graph, in order.
  const std::vector<std::string_view>& moduleCallGraphFqns() const { return module_fqns_; }
  // The JSON text of a top-level member ("verifiers", "torch_version"), empty when absent.
  RawJson topMember(std::string_view key) const {
    for (const auto& [k, v] : top_members_) {
      if (k == key) return v;
    }
    return {};
  }

  // Checks the graph invariants; throws Error(kBadProgram) naming the first violation.
  void verify() const;
  // Serializes the program; verifies first.
  std::string toJson() const;
  SerializedProgram serialize() const;
  // Keeps `text` alive as long as the program and returns a view of it.
  RawJson keep(std::string_view text);

 private:
  friend class ProgramReader;
  friend class ProgramWriter;
  static std::unique_ptr<Program> read(std::unique_ptr<Program> program, const ReadLimits& limits);
  std::string source_name_;
  std::string owned_source_;  // the copy parse() makes, padded
  RawJson source_;            // the JSON the program was read from
  // Text kept by keep(): small pieces packed into blocks (rewrites keep many short names
  // and arguments), large ones in their own allocation. Never moved, freed with the program.
  std::vector<std::unique_ptr<char[]>> arena_blocks_;  // the last one is being filled
  std::size_t arena_used_ = 0;                         // bytes used in the last block
  std::vector<std::unique_ptr<char[]>> arena_large_;
  Graph graph_;
  SchemaVersion schema_version_;
  std::vector<std::string_view> module_fqns_;
  std::vector<std::pair<std::string_view, RawJson>> top_members_;
  std::vector<std::pair<std::string_view, RawJson>> graph_module_members_;
};

// Every op target starts with this.
inline constexpr std::string_view kOpTargetPrefix = "torch.ops.";
// "torch.ops.aten.dropout.default" -> "aten.dropout.default".
std::string_view shortTarget(std::string_view target);

// The region holding `graph`'s nodes as reports name them: Region::path, or "" at the top.
std::string_view regionPath(const Graph& graph);

// A one-line-per-node text form of a graph for tests and debugging, e.g.
//   %batch_norm = aten.batch_norm.default(input=%conv2d, ..., training=true, momentum=0.3)
std::string printGraph(const Graph& graph);

}  // namespace exmode
