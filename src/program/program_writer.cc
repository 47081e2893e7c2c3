// Serializes the IR back to program JSON: the exact inverse of the reader. Members come
// out in the order they were read; modeled ones from the IR, the rest verbatim.
#include "exmode/program.h"
#include "program/json_text.h"
#include "program/ref_text.h"

namespace exmode {

class ProgramWriter {
 public:
  explicit ProgramWriter(const Program& program) : program_(program) {}

  std::string write() {
    out_.reserve(1 << 16);
    writeMembers(program_.top_members_, [&](const std::string& key) {
      if (key == "graph_module") writeGraphModule();
    });
    return std::move(out_);
  }

 private:
  // Writes an object from its members, calling `modeled(key)` for members without raw text.
  template <class F>
  void writeMembers(const std::vector<std::pair<std::string, RawJson>>& members, F modeled) {
    out_ += '{';
    bool first = true;
    for (const auto& [key, raw] : members) {
      if (!first) out_ += ", ";
      first = false;
      json::appendString(out_, key);
      out_ += ": ";
      if (raw.empty()) {
        modeled(key);
      } else {
        out_ += raw;
      }
    }
    out_ += '}';
  }

  template <class T, class F>
  void writeList(const T& items, F each) {
    out_ += '[';
    bool first = true;
    for (const auto& item : items) {
      if (!first) out_ += ", ";
      first = false;
      each(item);
    }
    out_ += ']';
  }

  void writeArgument(const Argument& arg) {
    out_ += '{';
    json::appendString(out_, arg.kind);
    out_ += ": ";
    appendResolved(out_, arg.payload);
    out_ += '}';
  }

  void writeGraphModule() {
    writeMembers(program_.graph_module_members_, [&](const std::string& key) {
      if (key == "graph") writeGraph();
      if (key == "signature") writeSignature();
    });
  }

  void writeGraph() {
    const Graph& graph = program_.graph();
    writeMembers(graph.graph_members_, [&](const std::string& key) {
      if (key == "inputs") writeList(graph.inputs_, [&](const Argument& a) { writeArgument(a); });
      if (key == "outputs") writeList(graph.outputs_, [&](const Argument& a) { writeArgument(a); });
      if (key == "nodes") writeList(graph.nodes_, [&](const auto& n) { writeNode(*n); });
      if (key == "tensor_values") writeTensorValues(graph);
    });
  }

  void writeNode(const Node& node) {
    writeMembers(node.members_, [&](const std::string& key) {
      if (key == "target") json::appendString(out_, node.target_);
      if (key == "name") json::appendString(out_, node.name_);
      if (key == "metadata") out_ += node.metadata_.empty() ? RawJson("{}") : node.metadata_;
      if (key == "outputs") writeList(node.outputs_, [&](const Argument& a) { writeArgument(a); });
      if (key == "inputs") {
        writeList(node.inputs_, [&](const NamedArgument& in) {
          out_ += "{\"name\": ";
          json::appendString(out_, in.name);
          out_ += ", \"arg\": ";
          writeArgument(in.arg);
          if (!in.kind.empty()) {
            out_ += ", \"kind\": ";
            out_ += in.kind;
          }
          for (const auto& [extra_key, extra_raw] : in.extra) {
            out_ += ", ";
            json::appendString(out_, extra_key);
            out_ += ": ";
            out_ += extra_raw;
          }
          out_ += '}';
        });
      }
    });
  }

  void writeTensorValues(const Graph& graph) {
    out_ += '{';
    bool first = true;
    for (const Value* value : graph.tensor_value_order_) {
      if (value->erased_) continue;
      if (!first) out_ += ", ";
      first = false;
      json::appendString(out_, value->name());
      out_ += ": ";
      out_ += value->tensorMeta();
    }
    out_ += '}';
  }

  void writeSignature() {
    const Graph& graph = program_.graph();
    auto spec = [&](const SignatureSpec& s) {
      out_ += '{';
      json::appendString(out_, s.kind);
      out_ += ": ";
      appendResolved(out_, s.payload);
      out_ += '}';
    };
    writeMembers(graph.signature_members_, [&](const std::string& key) {
      if (key == "input_specs") writeList(graph.input_specs_, spec);
      if (key == "output_specs") writeList(graph.output_specs_, spec);
    });
  }

  const Program& program_;
  std::string out_;
};

std::string Program::toJson() const {
  verify();
  return ProgramWriter(*this).write();
}

}  // namespace exmode
