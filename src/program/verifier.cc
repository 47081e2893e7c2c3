// The graph invariants, checked after loading and before saving: every value is defined
// once, before any use; graph outputs and signature entries name existing values; the
// signature matches the graph's inputs and outputs one for one.
#include <string>
#include <vector>

#include "exmode/error.h"
#include "exmode/program.h"

namespace exmode {

namespace {

class Verifier {
 public:
  Verifier(const Program& program, const Graph& graph) : program_(program), graph_(graph) {}

  void run() {
    defined_.assign(graph_.valueCount(), 0);
    for (const Argument& input : graph_.inputs())
      define(input, [] { return std::string("graph input"); });
    for (const auto& node : graph_.nodes()) {
      auto where = [&] { return "node '" + std::string(node->name()) + "'"; };
      for (const NamedArgument& in : node->inputs()) {
        use(in.arg, [&] { return where() + " input '" + std::string(in.name) + "'"; });
      }
      for (const Argument& out : node->outputs()) define(out, where);
    }
    for (const Argument& output : graph_.outputs())
      use(output, [] { return std::string("graph output"); });
    // A region has no signature: its inputs are the caller's operands.
    if (graph_.region() == nullptr) checkSignature();
    for (const Region& region : graph_.regions()) Verifier(program_, *region.graph).run();
  }

 private:
  [[noreturn]] void fail(const std::string& what) const {
    std::string where = program_.sourceName() + ": ";
    if (const std::string_view path = regionPath(graph_); !path.empty()) {
      where += "nested graph '" + std::string(path.substr(0, path.size() - 1)) + "': ";
    }
    throw Error(ErrorKind::kBadProgram, where + what);
  }

  // `where` makes the message's subject; it is only called on failure.
  template <class Where>
  void define(const Argument& arg, const Where& where) {
    for (const Ref& ref : arg.payload.refs) {
      if (isDefined(ref.value)) {
        fail(where() + " defines '" + std::string(ref.value->name()) +
             "', which is already defined");
      }
      defined_[index(ref.value)] = 1;
      if (arg.kind == "as_tensor" && ref.value->tensorMeta().empty()) {
        fail(where() + " defines tensor '" + std::string(ref.value->name()) +
             "' without tensor_values metadata");
      }
    }
  }

  template <class Where>
  void use(const Argument& arg, const Where& where) {
    for (const Ref& ref : arg.payload.refs) {
      if (isDefined(ref.value) || ref.value->isDeclaredSymbol()) continue;
      fail(where() + " uses '" + std::string(ref.value->name()) + "' before it is defined");
    }
  }

  std::size_t index(const Value* value) const { return value->index(); }
  bool isDefined(const Value* value) const {
    return index(value) < defined_.size() && defined_[index(value)] != 0;
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
      if (!isDefined(ref.value) && !ref.value->isDeclaredSymbol()) {
        fail(std::string("signature ") + what + " " + std::to_string(index) + " ('" +
             std::string(spec.kind) + "') names '" + std::string(ref.value->name()) +
             "', which is not defined");
      }
    }
    const Value* spec_value = spec.value();
    const Value* graph_value = arg.payload.refs.empty() ? nullptr : arg.payload.refs.front().value;
    if (spec_value != nullptr && graph_value != nullptr && spec_value != graph_value) {
      fail(std::string("signature ") + what + " " + std::to_string(index) + " names '" +
           std::string(spec_value->name()) + "' but graph " + what + " " + std::to_string(index) +
           " is '" + std::string(graph_value->name()) + "'");
    }
  }

  const Program& program_;
  const Graph& graph_;
  std::vector<char> defined_;  // by Value::index()
};

}  // namespace

void Program::verify() const { Verifier(*this, graph_).run(); }

}  // namespace exmode
