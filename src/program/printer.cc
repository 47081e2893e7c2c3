// A one-line-per-node text form of a graph, for golden tests and debugging:
//   %batch_norm = aten.batch_norm.default(input=%conv2d, training=true, momentum=0.3)
#include "exmode/program.h"
#include "program/ref_text.h"

namespace exmode {

namespace {

// Tensor references print as %name; everything else as its JSON payload.
std::string argumentText(const Argument& arg) {
  if (arg.kind == "as_tensor" && arg.tensor() != nullptr) {
    std::string text = "%";
    text += arg.tensor()->name();
    return text;
  }
  if (arg.kind == "as_none") return "None";
  std::string text;
  appendResolved(text, arg.payload);
  return text;
}

}  // namespace

std::string printGraph(const Graph& graph) {
  std::string out;
  for (const Argument& input : graph.inputs()) out += "input " + argumentText(input) + "\n";
  for (const auto& node : graph.nodes()) {
    std::string outputs;
    for (const Argument& o : node->outputs()) {
      if (!outputs.empty()) outputs += ", ";
      outputs += argumentText(o);
    }
    out += outputs + " = " + std::string(shortTarget(node->target())) + "(";
    bool first = true;
    for (const NamedArgument& in : node->inputs()) {
      if (!first) out += ", ";
      first = false;
      out += std::string(in.name) + "=" + argumentText(in.arg);
    }
    out += ")\n";
  }
  for (const Argument& output : graph.outputs()) out += "output " + argumentText(output) + "\n";
  return out;
}

}  // namespace exmode
