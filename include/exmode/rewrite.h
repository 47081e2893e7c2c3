// The one API through which every graph change goes. It keeps value uses and names, tensor
// metadata and the graph signature in step with the nodes, and moves the graph's version(). Calls
// that break an invariant (erasing a used node, setting an input a node lacks, reusing a name) are
// programming errors and throw std::logic_error.
#pragma once

#include <absl/container/inlined_vector.h>

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "exmode/program.h"

namespace exmode::rewrite {

// A node to create: outputs are single tensors with the given names and tensor metadata
// (raw TensorMeta). The target, the input and output names are views: like the metadata
// text they must live as long as the program (literals, Rewriter::keep() or
// Rewriter::freshName()), so a name is kept once however often it is inserted.
// Inline: rewrites insert small nodes, and a switch may insert a million of them.
struct NewNode {
  std::string_view target;
  absl::InlinedVector<NamedArgument, 2> inputs;
  absl::InlinedVector<std::pair<std::string_view, RawJson>, 1> tensor_outputs;
  // Metadata members (key, JSON text of the value), e.g. copied from another node with
  // Node::metadataFieldJson(). The text must live as long as the program.
  absl::InlinedVector<std::pair<std::string_view, RawJson>, 2> metadata;
};

// What a host of the passes other than the archive JSON (the FX graph of a PyTorch module,
// python/exmode/torch) hears of each change, to make the same change to its own graph: the
// passes run once, on the program IR built from the host's graph, and the host replays
// these notifications (MLIR's RewriterBase::Listener plays the same part). Each call comes
// right after the change, so what it reads from the node is the node's new state.
class Listener {
 public:
  virtual ~Listener() = default;
  // Input `input` of `node` was set or inserted (node.input(input) is its new value).
  virtual void inputSet(const Node& node, std::string_view input) = 0;
  // Input `input` of `node` was removed: it takes its schema default.
  virtual void inputRemoved(const Node& node, std::string_view input) = 0;
  // Metadata field `key` of `node` was set or removed.
  virtual void metadataSet(const Node& node, std::string_view key) = 0;
  // Every use of `from` by `user` (null: a graph output) now reads `to` (replaceUses; a
  // single use that replaceUse moves is told as inputSet of the input holding it).
  virtual void useReplaced(const Node* user, const Value& from, const Value& to) = 0;
  // `node` is about to leave the graph (it has no users left).
  virtual void nodeErased(const Node& node) = 0;
  // `node` was inserted before `before`.
  virtual void nodeInserted(const Node& node, const Node& before) = 0;
  // The graph's outputs or output specs changed (a buffer mutation added or removed).
  virtual void outputsChanged() = 0;
  // `node`'s target was changed (its inputs and outputs are told of separately).
  virtual void targetSet(const Node& node) = 0;
  // Outputs were appended to `node` or removed from its end (node.outputs() is the new list).
  virtual void nodeOutputsSet(const Node& node) = 0;
};

class Rewriter {
 public:
  explicit Rewriter(Program& program) : program_(program), graph_(program.graph()) {}
  // A rewriter of one of the program's nested graphs (a Region's graph); text it keeps
  // lives as long as the program.
  Rewriter(Program& program, Graph& graph) : program_(program), graph_(graph) {}

  Graph& graph() { return graph_; }
  // Tells `listener` (null: nobody) of every change from here on.
  void setListener(Listener* listener) { listener_ = listener; }
  // A node of this graph seen through a const view (a Site), to change. Sites are collected
  // from the const graph before a switch; the rewriter is what may change them.
  Node& mutableNode(const Node& node) { return const_cast<Node&>(node); }
  // Keeps `text` alive as long as the program (for metadata of new nodes).
  RawJson keep(std::string_view text) { return program_.keep(text); }
  // Graph::freshName(base), kept alive as long as the program (for NewNode outputs).
  RawJson freshName(std::string_view base) { return program_.keep(graph_.freshName(base)); }

  // Argument builders; their text lives as long as the program.
  Argument tensorArg(Value& value);
  Argument boolArg(bool value);
  Argument noneArg();
  Argument intArg(std::int64_t value);
  Argument floatArg(double value);

  // Replaces the payload of a named input (which must exist) with `arg`. `hint`: where the
  // input is likely to be (Site::flag_input), looked at first.
  void setInput(Node& node, std::string_view input_name, Argument arg, std::size_t hint = 0);
  // Removes a named input (so it takes its schema default); no-op when absent.
  void removeInput(Node& node, std::string_view input_name);
  // Inserts a named input before the input named `before` (appends if absent).
  void insertInput(Node& node, NamedArgument input, std::string_view before);
  // Sets (or, with nullopt, removes) one string field of the node's metadata.
  void setMetadataField(Node& node, std::string_view key, std::optional<std::string> value);
  // Makes every use of `from` located after `after` in graph order use `to` instead;
  // `after` == null means every use, graph outputs and output specs included.
  void replaceUses(Value& from, Value& to, const Node* after = nullptr);
  // Makes reference `ref` of input `input` of `user` (indexes into inputs() and the
  // argument's payload refs) use `to`: one use, where replaceUses moves them all.
  void replaceUse(Node& user, std::size_t input, std::size_t ref, Value& to);
  // Moves the tensor_values entries of `values` (in their order) to right after the entry of
  // `after`, where torch would have written them; without `after` (or when it has no entry)
  // they stay where they are. Linear in the graph's values.
  void moveTensorValues(std::span<Value* const> values, const Value* after);
  // Removes a node whose outputs have no users. Invalidates references to the node.
  void eraseNode(Node& node);
  // Gives `node` another op (the functional IR's forms of one op differ in target and in
  // their outputs, not in what reads them). `target` must live as long as the program.
  void setTarget(Node& node, std::string_view target);
  // Appends a single-tensor output named `name` (fresh; it must live as long as the
  // program) with tensor metadata `meta` to a node, and returns its value.
  Value& appendOutput(Node& node, std::string_view name, RawJson meta);
  // Removes the outputs of `node` from index `first` on; none may be used.
  void truncateOutputs(Node& node, std::size_t first);
  // Replaces a value's tensor metadata (raw TensorMeta that lives as long as the program).
  void setTensorMeta(Value& value, RawJson meta);
  // Inserts a node before `before` and returns it. Output names must be fresh.
  Node& insertBefore(Node& before, NewNode&& spec);

  // Signature changes go with the graph outputs they describe.
  // Adds a `buffer_mutation` output where torch puts it: before the user outputs, and among
  // the other mutations in the order of the mutated inputs' specs.
  void addBufferMutation(Value& value, std::string_view buffer_name);
  // Removes graph output `index` together with its output spec.
  void removeOutput(std::size_t index);

  // Changes to what a region's caller passes it, made on the graph that holds the region
  // (region_rewriter.cc). Only for ops whose operands are positional inputs after the graph
  // (wrapsOperands()). Adds input `position` to the region's graph, named `name` (fresh in
  // that graph), and passes `operand` (a value of this graph) for it; returns the new input.
  Value& addRegionInput(Region& region, std::size_t position, Value& operand,
                        std::string_view name);
  // Removes input `position` of the region's graph (which nothing may read) and its operand.
  void removeRegionInput(Region& region, std::size_t position);
  // Whether the caller of `region` passes each operand as an input of its own after the
  // graph (wrap_with_set_grad_enabled, wrap_with_autocast): then regions can gain and lose
  // inputs.
  static bool wrapsOperands(const Region& region);

 private:
  bool isGraphOutput(const Value& value) const;
  void addUse(Value& value, Node& user);
  // A new single-tensor output of `node` (the name must be fresh).
  Value& defineOutput(Node& node, std::string_view name, RawJson meta);
  // Takes the values of `outputs` out of the graph (their node is erased or loses them).
  void retireOutputs(std::span<const Argument> outputs);
  void dropUse(Value& value, const Node& user);
  Program& program_;
  Graph& graph_;
  Listener* listener_ = nullptr;
};

}  // namespace exmode::rewrite
