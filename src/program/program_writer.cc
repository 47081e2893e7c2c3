// Serializes the IR back to program JSON: the exact inverse of the reader. Members come
// out in the order they were read. Items that still have their source text (see program.h)
// are copied as they are; adjacent ones merge into one range of the source, so an
// unchanged stretch of nodes, tensor metadata or signature entries costs one chunk. Items
// the rewriter changed are written from the IR, with torch's separators.
#include <span>
#include <vector>

#include "exmode/program.h"
#include "program/json_text.h"
#include "program/ref_text.h"

namespace exmode {

class ProgramWriter {
 public:
  explicit ProgramWriter(const Program& program) : program_(program), source_(program.source_) {}

  SerializedProgram write() {
    writeMembers(program_.top_members_, [&](std::string_view key) {
      if (key == "graph_module") writeGraphModule();
    });
    flushText();
    return std::move(out_);
  }

 private:
  // ------------------------------------------------------------------ chunks

  void text(std::string_view text) {
    text_ += text;
    last_end_ = nullptr;
  }
  void text(char c) {
    text_ += c;
    last_end_ = nullptr;
  }

  void flushText() {
    if (text_.empty()) return;
    out_.size += text_.size();
    out_.chunks.push_back(
        *out_.owned.emplace_back(std::make_unique<std::string>(std::move(text_))));
    text_ = std::string();
  }

  // Text owned by the program (its source or arena), referenced rather than copied; short
  // pieces are copied instead, so a changed node does not fan out into many tiny chunks.
  void kept(std::string_view bytes) {
    if (bytes.empty()) return;
    if (bytes.size() < kMinChunk && !continuesLastChunk(bytes)) {
      text_ += bytes;
      last_end_ = bytes.data() + bytes.size();
      return;
    }
    flushText();
    if (!out_.chunks.empty() &&
        out_.chunks.back().data() + out_.chunks.back().size() == bytes.data()) {
      std::string_view& last = out_.chunks.back();
      last = std::string_view(last.data(), last.size() + bytes.size());
    } else {
      out_.chunks.push_back(bytes);
    }
    out_.size += bytes.size();
    last_end_ = bytes.data() + bytes.size();
  }

  static constexpr std::size_t kMinChunk = 256;

  bool continuesLastChunk(std::string_view bytes) const {
    return text_.empty() && !out_.chunks.empty() &&
           out_.chunks.back().data() + out_.chunks.back().size() == bytes.data();
  }

  bool inSource(const char* p) const {
    return p >= source_.data() && p <= source_.data() + source_.size();
  }

  // The separator before a list item that has source text: when the previous item was
  // copied from the source and only ", " (as the source spells it) lies between them, the
  // two are copied as one range.
  void sourceItem(RawJson item, bool first) {
    if (!first) {
      const char* end = last_end_;
      if (end != nullptr && inSource(end) && inSource(item.data()) && end < item.data() &&
          onlySeparator(std::string_view(end, static_cast<std::size_t>(item.data() - end)))) {
        kept(std::string_view(end, static_cast<std::size_t>(item.data() + item.size() - end)));
        return;
      }
      text(", ");
    }
    kept(item);
  }

  static bool onlySeparator(std::string_view between) {
    int commas = 0;
    for (char c : between) {
      if (c == ',') {
        ++commas;
      } else if (c != ' ' && c != '\n' && c != '\r' && c != '\t') {
        return false;
      }
    }
    return commas == 1;
  }

  void resolved(const RefText& ref_text) {
    if (ref_text.refs.empty()) {
      kept(ref_text.text);
      return;
    }
    appendResolved(text_, ref_text);
    last_end_ = nullptr;
  }

  // ------------------------------------------------------------------ structure

  // Writes an object from its members, calling `modeled(key)` for members without raw text.
  template <class Members, class F>
  void writeMembers(const Members& members, F modeled) {
    text('{');
    bool first = true;
    for (const auto& [key, raw] : members) {
      if (!first) text(", ");
      first = false;
      json::appendString(text_, key);
      text(": ");
      if (raw.empty()) {
        modeled(key);
      } else {
        kept(raw);
      }
    }
    text('}');
  }

  // Writes a list; `each(item, first)` writes one item, separator included.
  template <class T, class F>
  void writeList(const T& items, F each) {
    text('[');
    bool first = true;
    for (const auto& item : items) {
      each(item, first);
      first = false;
    }
    text(']');
  }

  void separator(bool first) {
    if (!first) text(", ");
  }

  void writeArgument(const Argument& arg, bool first) {
    if (!arg.source.empty()) {
      sourceItem(arg.source, first);
      return;
    }
    separator(first);
    writeUnion(arg.kind, arg.payload);
  }

  void writeUnion(std::string_view kind, const RefText& payload) {
    text('{');
    json::appendString(text_, kind);
    text(": ");
    resolved(payload);
    text('}');
  }

  void writeGraphModule() {
    writeMembers(program_.graph_module_members_, [&](std::string_view key) {
      if (key == "graph") writeGraph();
      if (key == "signature") writeSignature();
    });
  }

  // Whether a region's text changed: its graph, or a graph nested in it.
  static bool changed(const Region& region) {
    if (region.graph->version() != 0) return true;
    for (const Region& inner : region.graph->regions()) {
      if (changed(inner)) return true;
    }
    return false;
  }

  void writeGraph() { writeGraph(program_.graph()); }

  void writeGraph(const Graph& graph) {
    // The inputs holding a changed region: their nodes are written from their fields.
    std::vector<const Region*> changed_regions;
    for (const Region& region : graph.regions()) {
      if (changed(region)) changed_regions.push_back(&region);
    }
    auto argument = [&](const Argument& a, bool first) { writeArgument(a, first); };
    writeMembers(graph.graph_members_, [&](std::string_view key) {
      if (key == "inputs") {
        if (!graph.inputs_source_.empty()) {
          kept(graph.inputs_source_);
        } else {
          writeList(graph.inputs_, argument);
        }
      }
      if (key == "outputs") writeList(graph.outputs_, argument);
      if (key == "nodes") {
        writeList(graph.nodes_,
                  [&](const auto& n, bool first) { writeNode(*n, first, changed_regions); });
      }
      if (key == "tensor_values") writeTensorValues(graph);
    });
  }

  void writeNode(const Node& node, bool first, std::span<const Region* const> changed_regions) {
    const Region* region = nullptr;
    for (const Region* r : changed_regions) {
      if (r->owner == &node) region = r;
    }
    if (!node.source_.empty() && region == nullptr) {
      sourceItem(node.source_, first);
      return;
    }
    separator(first);
    writeMembers(node.members_, [&](std::string_view key) {
      if (key == "target") json::appendString(text_, node.target_);
      if (key == "name") json::appendString(text_, node.name_);
      if (key == "metadata") {
        if (!node.metadata_.empty()) {
          kept(node.metadata_);
          return;
        }
        text('{');
        bool first_field = true;
        for (const auto& [field, value] : node.metadata_fields_) {
          if (!first_field) text(", ");
          first_field = false;
          json::appendString(text_, field);
          text(": ");
          kept(value);
        }
        text('}');
      }
      if (key == "outputs") {
        writeList(node.outputs_, [&](const Argument& a, bool f) { writeArgument(a, f); });
      }
      if (key == "inputs") {
        std::size_t index = 0;
        writeList(node.inputs_, [&](const NamedArgument& in, bool f) {
          const Region* held = nullptr;
          for (const Region* r : changed_regions) {
            if (r->owner == &node && r->input == index) held = r;
          }
          ++index;
          if (held != nullptr) {
            writeRegionInput(in, *held, f);
          } else {
            writeInput(in, f);
          }
        });
      }
    });
  }

  void writeInput(const NamedArgument& in, bool first) {
    if (!in.source.empty()) {
      sourceItem(in.source, first);
      return;
    }
    separator(first);
    text("{\"name\": ");
    json::appendString(text_, in.name);
    text(", \"arg\": ");
    writeArgument(in.arg, true);
    writeInputTail(in);
  }

  // What follows a named input's argument: its kind, the fields the schema may add later,
  // and the closing brace.
  void writeInputTail(const NamedArgument& in) {
    if (!in.kind.empty()) {
      text(", \"kind\": ");
      kept(in.kind);
    }
    for (const auto& [extra_key, extra_raw] : in.extra) {
      text(", ");
      json::appendString(text_, extra_key);
      text(": ");
      kept(extra_raw);
    }
    text('}');
  }

  // An input holding a changed region: its GraphArgument's text around the graph as it was
  // read, the graph written from the region's IR.
  void writeRegionInput(const NamedArgument& in, const Region& region, bool first) {
    separator(first);
    text("{\"name\": ");
    json::appendString(text_, in.name);
    text(", \"arg\": {");
    json::appendString(text_, in.arg.kind);
    text(": ");
    kept(region.before);
    writeGraph(*region.graph);
    kept(region.after);
    text('}');
    writeInputTail(in);
  }

  void writeTensorValues(const Graph& graph) {
    text('{');
    bool first = true;
    for (const Value* value : graph.tensor_value_order_) {
      if (value->erased_) continue;
      if (!value->tensor_entry_.empty()) {
        sourceItem(value->tensor_entry_, first);
      } else {
        separator(first);
        json::appendString(text_, value->name());
        text(": ");
        kept(value->tensorMeta());
      }
      first = false;
    }
    text('}');
  }

  void writeSignature() {
    const Graph& graph = program_.graph();
    auto spec = [&](const SignatureSpec& s, bool first) {
      if (!s.source.empty()) {
        sourceItem(s.source, first);
        return;
      }
      separator(first);
      writeUnion(s.kind, s.payload);
    };
    writeMembers(graph.signature_members_, [&](std::string_view key) {
      if (key == "input_specs") {
        if (!graph.input_specs_source_.empty()) {
          kept(graph.input_specs_source_);
        } else {
          writeList(graph.input_specs_, spec);
        }
      }
      if (key == "output_specs") writeList(graph.output_specs_, spec);
    });
  }

  const Program& program_;
  std::string_view source_;
  SerializedProgram out_;
  std::string text_;                // text written since the last kept chunk
  const char* last_end_ = nullptr;  // end of the last kept chunk, if nothing followed it
};

std::string SerializedProgram::join() const {
  std::string joined;
  joined.reserve(size);
  for (std::string_view chunk : chunks) joined += chunk;
  return joined;
}

SerializedProgram Program::serialize() const {
  verify();
  return ProgramWriter(*this).write();
}

std::string Program::toJson() const { return serialize().join(); }

}  // namespace exmode
