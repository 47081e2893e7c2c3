// How a higher-order op passes its operands to the graphs it holds.
//
// torch.export writes the operands after the graph arguments (docs/EXPORT_IR.md, "Nested
// regions"): wrap_with_set_grad_enabled(enabled, graph, *operands),
// wrap_with_autocast(device, dtype, enabled, cache, graph, *operands),
// cond(pred, true_graph, false_graph, [operands]), while_loop(cond, body, [carried],
// [additional]), invoke_subgraph(graph, identifier, *operands). Each graph's inputs are
// those operands in order. Other ops (map_impl slices its operands, scan too) map nothing:
// their regions' inputs stand for values the enclosing graph does not hold.
#include <algorithm>
#include <array>

#include "exmode/program.h"

namespace exmode {

namespace {

constexpr std::array<std::string_view, 5> kOneToOne = {
    "torch.ops.higher_order.wrap_with_set_grad_enabled",
    "torch.ops.higher_order.wrap_with_autocast",
    "torch.ops.higher_order.cond",
    "torch.ops.higher_order.while_loop",
    "torch.ops.higher_order.invoke_subgraph",
};

}  // namespace

Value* Graph::operandOf(std::size_t input) const {
  if (region_ == nullptr || input >= inputs_.size()) return nullptr;
  const Node& owner = *region_->owner;
  if (std::find(kOneToOne.begin(), kOneToOne.end(), owner.target()) == kOneToOne.end()) {
    return nullptr;
  }
  const auto& args = owner.inputs();
  std::size_t first = args.size();
  for (std::size_t i = args.size(); i-- > 0;) {
    if (args[i].arg.kind == "as_graph") {
      first = i + 1;
      break;
    }
  }
  std::size_t count = 0;
  Value* found = nullptr;
  for (std::size_t i = first; i < args.size(); ++i) {
    for (const Ref& ref : args[i].arg.payload.refs) {
      if (count++ == input) found = ref.value;
    }
  }
  return count == inputs_.size() ? found : nullptr;
}

std::string_view regionPath(const Graph& graph) {
  return graph.region() == nullptr ? std::string_view{} : std::string_view(graph.region()->path);
}

}  // namespace exmode
