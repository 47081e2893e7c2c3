// The graph invariants, checked after loading and before saving: every value is defined
// once, before any use; graph outputs and signature entries name existing values; the
// signature matches the graph's inputs and outputs one for one.
#include <unordered_set>

#include "exmode/error.h"
#include "exmode/program.h"

namespace exmode {

namespace {

class Verifier {
 public:
  explicit Verifier(const Program& program) : program_(program), graph_(program.graph()) {}

  void run() {
    for (const Argument& input : graph_.inputs()) define(input, "graph input");
    for (const auto& node : graph_.nodes()) {
      const std::string where = "node '" + node->name() + "'";
      for (const NamedArgument& in : node->inputs())
        use(in.arg, where + " input '" + in.name + "'");
      for (const Argument& out : node->outputs()) define(out, where);
    }
    for (const Argument& output : graph_.outputs()) use(output, "graph output");
    checkSignature();
  }

 private:
  [[noreturn]] void fail(const std::string& what) const {
    throw Error(ErrorKind::kBadProgram, program_.sourceName() + ": " + what);
  }

  void define(const Argument& arg, const std::string& where) {
    for (const Ref& ref : arg.payload.refs) {
      if (!defined_.insert(ref.value).second) {
        fail(where + " defines '" + ref.value->name() + "', which is already defined");
      }
      if (arg.kind == "as_tensor" && ref.value->tensorMeta().empty()) {
        fail(where + " defines tensor '" + ref.value->name() + "' without tensor_values metadata");
      }
    }
  }

  void use(const Argument& arg, const std::string& where) {
    for (const Ref& ref : arg.payload.refs) {
      if (defined_.count(ref.value) == 0 && ref.value->producer() == nullptr &&
          !isGraphInput(ref.value) && isDeclaredSymbol(arg)) {
        continue;  // a symbol declared in sym_*_values, defined by no node
      }
      if (defined_.count(ref.value) == 0) {
        fail(where + " uses '" + ref.value->name() + "' before it is defined");
      }
    }
  }

  static bool isDeclaredSymbol(const Argument& arg) { return arg.kind.rfind("as_sym_", 0) == 0; }

  bool isGraphInput(const Value* value) const {
    for (const Argument& input : graph_.inputs()) {
      for (const Ref& ref : input.payload.refs) {
        if (ref.value == value) return true;
      }
    }
    return false;
  }

  void checkSignature() {
    const auto& inputs = graph_.inputs();
    const auto& input_specs = graph_.inputSpecs();
    if (input_specs.size() != inputs.size()) {
      fail("the signature lists " + std::to_string(input_specs.size()) + " inputs, the graph has " +
           std::to_string(inputs.size()));
    }
    for (std::size_t i = 0; i < input_specs.size(); ++i) {
      checkSpecMatches(input_specs[i], inputs[i], "input", i);
    }
    const auto& outputs = graph_.outputs();
    const auto& output_specs = graph_.outputSpecs();
    if (output_specs.size() != outputs.size()) {
      fail("the signature lists " + std::to_string(output_specs.size()) +
           " outputs, the graph has " + std::to_string(outputs.size()));
    }
    for (std::size_t i = 0; i < output_specs.size(); ++i) {
      checkSpecMatches(output_specs[i], outputs[i], "output", i);
    }
  }

  // A spec refers to the same value as the graph input or output at its position.
  void checkSpecMatches(const SignatureSpec& spec, const Argument& arg, const char* what,
                        std::size_t index) const {
    for (const Ref& ref : spec.payload.refs) {
      if (defined_.count(ref.value) == 0) {
        fail(std::string("signature ") + what + " " + std::to_string(index) + " ('" + spec.kind +
             "') names '" + ref.value->name() + "', which is not defined");
      }
    }
    const Value* spec_value = spec.value();
    const Value* graph_value = arg.payload.refs.empty() ? nullptr : arg.payload.refs.front().value;
    if (spec_value != nullptr && graph_value != nullptr && spec_value != graph_value) {
      fail(std::string("signature ") + what + " " + std::to_string(index) + " names '" +
           spec_value->name() + "' but graph " + what + " " + std::to_string(index) + " is '" +
           graph_value->name() + "'");
    }
  }

  const Program& program_;
  const Graph& graph_;
  std::unordered_set<const Value*> defined_;
};

}  // namespace

void Program::verify() const { Verifier(*this).run(); }

}  // namespace exmode
