// Changes to a region's interface: an input added to (or removed from) a nested graph goes
// with the operand its caller passes for it, so that the caller's node and the region's
// graph stay one for one (torch lifts each value a region reads into such an operand).
#include <algorithm>
#include <stdexcept>

#include "exmode/rewrite.h"

namespace exmode::rewrite {

namespace {

// The index of the caller's first operand: the input after its graph argument.
std::size_t firstOperand(const Region& region) { return region.input + 1; }

}  // namespace

bool Rewriter::wrapsOperands(const Region& region) {
  const std::string_view target = region.owner->target();
  if (target != "torch.ops.higher_order.wrap_with_set_grad_enabled" &&
      target != "torch.ops.higher_order.wrap_with_autocast") {
    return false;
  }
  // One graph argument, then one tensor operand per input of the region.
  const auto& inputs = region.owner->inputs();
  if (inputs.size() != firstOperand(region) + region.graph->inputs().size()) return false;
  for (std::size_t i = firstOperand(region); i < inputs.size(); ++i) {
    if (inputs[i].arg.kind != "as_tensor" || inputs[i].arg.tensor() == nullptr) return false;
  }
  return true;
}

Value& Rewriter::addRegionInput(Region& region, std::size_t position, Value& operand,
                                std::string_view name) {
  Graph& inner = *region.graph;
  if (&graph_ != inner.parent_ || !wrapsOperands(region) || position > inner.inputs_.size()) {
    throw std::logic_error("region '" + region.path + "' cannot take an input at " +
                           std::to_string(position));
  }
  if (inner.tryGetValue(name) != nullptr) {
    throw std::logic_error("value name '" + std::string(name) + "' is already taken");
  }
  graph_.touch();
  inner.touch();
  // The region's graph: a new input value, with the operand's tensor metadata, listed in
  // tensor_values where torch lists inputs (in their order, before the nodes' values).
  Value& value = inner.newValue();
  value.name_ = name;
  value.producer_ = nullptr;
  value.tensor_meta_ = operand.tensor_meta_;
  value.tensor_entry_ = {};
  value.indexed_ = inner.values_.try_emplace(name, &value).second;
  Argument input = tensorArg(value);
  auto& order = inner.tensor_value_order_;
  auto at = order.end();
  if (position < inner.inputs_.size()) {
    at = std::find(order.begin(), order.end(), inner.inputs_[position].tensor());
  } else if (!inner.inputs_.empty()) {
    at = std::find(order.begin(), order.end(), inner.inputs_.back().tensor());
    if (at != order.end()) ++at;
  } else {
    at = order.begin();
  }
  order.insert(at, &value);
  inner.inputs_.insert(inner.inputs_.begin() + static_cast<std::ptrdiff_t>(position),
                       std::move(input));
  inner.inputs_source_ = {};
  // The caller: the operand, a positional input like the others.
  Node& owner = *region.owner;
  NamedArgument operand_input{"", tensorArg(operand), "1"};
  addUse(operand, owner);
  owner.inputs_.insert(
      owner.inputs_.begin() + static_cast<std::ptrdiff_t>(firstOperand(region) + position),
      std::move(operand_input));
  owner.source_ = {};
  return value;
}

void Rewriter::removeRegionInput(Region& region, std::size_t position) {
  Graph& inner = *region.graph;
  if (&graph_ != inner.parent_ || !wrapsOperands(region) || position >= inner.inputs_.size()) {
    throw std::logic_error("region '" + region.path + "' has no input " + std::to_string(position) +
                           " to remove");
  }
  Value* value = inner.inputs_[position].tensor();
  if (value == nullptr || !value->users_.empty()) {
    throw std::logic_error("region '" + region.path + "' input " + std::to_string(position) +
                           " is still read");
  }
  for (const Argument& out : inner.outputs_) {
    for (const Ref& ref : out.payload.refs) {
      if (ref.value == value) throw std::logic_error("a region's output cannot be removed");
    }
  }
  graph_.touch();
  inner.touch();
  value->erased_ = true;
  value->indexed_ = false;
  inner.values_.erase(value->name());
  inner.erased_values_.push_back(value);
  inner.inputs_.erase(inner.inputs_.begin() + static_cast<std::ptrdiff_t>(position));
  inner.inputs_source_ = {};
  inner.input_specs_indexed_ = false;
  Node& owner = *region.owner;
  const auto at =
      owner.inputs_.begin() + static_cast<std::ptrdiff_t>(firstOperand(region) + position);
  for (const Ref& ref : at->arg.payload.refs) dropUse(*ref.value, owner);
  owner.inputs_.erase(at);
  owner.source_ = {};
}

}  // namespace exmode::rewrite
