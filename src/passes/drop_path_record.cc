// Writing and reading drop-path records; see drop_path_record.h.
#include "passes/drop_path_record.h"

#include <simdjson.h>

#include <algorithm>
#include <array>

#include "program/json_text.h"
#include "program/ref_text.h"

namespace exmode::passes::drop_path {

namespace {

// Argument kinds without value references: restored from their text alone.
constexpr std::array<std::string_view, 13> kLiteralKinds = {
    "as_none",   "as_int",           "as_ints",   "as_float",   "as_floats",
    "as_bool",   "as_bools",         "as_string", "as_strings", "as_scalar_type",
    "as_layout", "as_memory_format", "as_device"};

bool isLiteralKind(std::string_view kind) {
  return std::find(kLiteralKinds.begin(), kLiteralKinds.end(), kind) != kLiteralKinds.end();
}

void member(std::string& out, std::string_view key, bool first = false) {
  if (!first) out += ", ";
  json::appendString(out, key);
  out += ": ";
}

void writeInput(std::string& out, const NamedArgument& in) {
  out += '{';
  member(out, "name", true);
  json::appendString(out, in.name);
  member(out, "arg");
  out += '{';
  json::appendString(out, in.arg.kind);
  out += ": ";
  appendResolved(out, in.arg.payload);
  out += '}';
  if (!in.kind.empty()) {
    member(out, "kind");
    out += in.kind;
  }
  for (const auto& [key, raw] : in.extra) {
    member(out, key);
    out += raw;
  }
  out += '}';
}

void writeNode(std::string& out, const Node& node) {
  out += '{';
  member(out, "target", true);
  json::appendString(out, node.target());
  member(out, "inputs");
  out += '[';
  for (std::size_t i = 0; i < node.inputs().size(); ++i) {
    if (i > 0) out += ", ";
    writeInput(out, node.inputs()[i]);
  }
  out += ']';
  member(out, "output");
  json::appendString(out, node.output()->name());
  member(out, "tensor_meta");
  out += node.output()->tensorMeta();
  member(out, "metadata");
  out += '{';
  bool first = true;
  for (const auto& [key, token] : node.metadataFields()) {
    member(out, key, first);
    first = false;
    out += token;
  }
  out += "}}";
}

std::string text(simdjson::dom::element element) {
  std::string out;
  json::appendElement(out, element);
  return out;
}

template <class Element>
bool readString(Element element, std::string& out) {
  std::string_view view;
  if (element.get_string().get(view) != simdjson::SUCCESS) return false;
  out.assign(view);
  return true;
}

bool readInput(simdjson::dom::element element, RecordInput& in) {
  simdjson::dom::object object;
  if (element.get_object().get(object) != simdjson::SUCCESS) return false;
  bool has_name = false;
  bool has_arg = false;
  for (auto field : object) {
    if (field.key == "name") {
      has_name = readString(field.value, in.name);
      if (!has_name) return false;
    } else if (field.key == "arg") {
      simdjson::dom::object arg;
      if (field.value.get_object().get(arg) != simdjson::SUCCESS || arg.size() != 1) return false;
      const auto only = *arg.begin();
      in.arg_kind.assign(only.key);
      in.payload = text(only.value);
      if (in.arg_kind == "as_tensor") {
        std::string name;
        if (!readString(only.value["name"], name)) return false;
        in.tensor = std::move(name);
      } else if (!isLiteralKind(in.arg_kind)) {
        return false;
      }
      has_arg = true;
    } else if (field.key == "kind") {
      in.kind = text(field.value);
    } else {
      in.extra.emplace_back(std::string(field.key), text(field.value));
    }
  }
  return has_name && has_arg;
}

bool readNode(simdjson::dom::element element, RecordNode& node) {
  simdjson::dom::array inputs;
  simdjson::dom::object metadata, tensor_meta;
  if (!readString(element["target"], node.target) || !node.target.starts_with(kOpTargetPrefix) ||
      element["inputs"].get_array().get(inputs) != simdjson::SUCCESS ||
      !readString(element["output"], node.output) || node.output.empty() ||
      element["tensor_meta"].get_object().get(tensor_meta) != simdjson::SUCCESS ||
      element["metadata"].get_object().get(metadata) != simdjson::SUCCESS) {
    return false;
  }
  for (auto item : inputs) {
    if (!readInput(item, node.inputs.emplace_back())) return false;
  }
  node.tensor_meta = text(element["tensor_meta"].value_unsafe());
  for (auto field : metadata) {
    if (!field.value.is_string()) return false;
    node.metadata.emplace_back(std::string(field.key), text(field.value));
  }
  return true;
}

}  // namespace

bool recordable(const Argument& arg) {
  if (arg.kind == "as_tensor") return arg.payload.refs.size() == 1;
  return isLiteralKind(arg.kind) && arg.payload.refs.empty();
}

std::string writeRecord(Form form, double keep, const Value& x, const Node* after,
                        const std::vector<const Node*>& chain,
                        const std::vector<RecordReader>& readers,
                        const std::vector<RecordOutput>& outputs) {
  std::string out = "{";
  member(out, "keep", true);
  json::appendDouble(out, keep);
  member(out, "x");
  json::appendString(out, x.name());
  member(out, "after");
  if (after != nullptr) {
    json::appendString(out, after->name());
  } else {
    out += "null";
  }
  member(out, "readers");
  out += '[';
  for (std::size_t i = 0; i < readers.size(); ++i) {
    if (i > 0) out += ", ";
    out += '[';
    json::appendString(out, readers[i].node);
    out += ", ";
    json::appendString(out, readers[i].input);
    out += ", ";
    json::appendInt(out, static_cast<std::int64_t>(readers[i].ref));
    out += ']';
  }
  out += ']';
  member(out, "nodes");
  out += '[';
  for (std::size_t i = 0; i < chain.size(); ++i) {
    if (i > 0) out += ", ";
    writeNode(out, *chain[i]);
  }
  out += ']';
  if (form != Form::kDropPath) {
    member(out, "form");
    json::appendString(out, formName(form));
  }
  if (!outputs.empty()) {
    member(out, "outputs");
    out += '[';
    for (std::size_t i = 0; i < outputs.size(); ++i) {
      if (i > 0) out += ", ";
      out += '[';
      json::appendInt(out, static_cast<std::int64_t>(outputs[i].output));
      out += ", ";
      json::appendInt(out, static_cast<std::int64_t>(outputs[i].ref));
      out += ']';
    }
    out += ']';
  }
  out += '}';
  return out;
}

std::optional<Record> parseRecord(std::string_view json) {
  thread_local simdjson::dom::parser parser;
  simdjson::dom::element root;
  if (parser.parse(simdjson::padded_string(json)).get(root) != simdjson::SUCCESS) {
    return std::nullopt;
  }
  Record record;
  simdjson::dom::array readers, nodes;
  if (root["keep"].get_double().get(record.keep) != simdjson::SUCCESS ||
      !readString(root["x"], record.x) ||
      root["readers"].get_array().get(readers) != simdjson::SUCCESS ||
      root["nodes"].get_array().get(nodes) != simdjson::SUCCESS) {
    return std::nullopt;
  }
  simdjson::dom::element after;
  if (root["after"].get(after) != simdjson::SUCCESS) return std::nullopt;
  if (!after.is_null()) {
    std::string name;
    if (!readString(after, name)) return std::nullopt;
    record.after = std::move(name);
  }
  for (auto item : readers) {
    simdjson::dom::array entry;
    RecordReader& reader = record.readers.emplace_back();
    std::uint64_t ref = 0;
    if (item.get_array().get(entry) != simdjson::SUCCESS || entry.size() != 3 ||
        !readString(entry.at(0).value_unsafe(), reader.node) ||
        !readString(entry.at(1).value_unsafe(), reader.input) ||
        entry.at(2).get_uint64().get(ref) != simdjson::SUCCESS) {
      return std::nullopt;
    }
    reader.ref = static_cast<std::size_t>(ref);
  }
  for (auto item : nodes) {
    if (!readNode(item, record.nodes.emplace_back())) return std::nullopt;
  }
  simdjson::dom::element form;
  if (root["form"].get(form) == simdjson::SUCCESS) {
    std::string name;
    if (!readString(form, name)) return std::nullopt;
    const std::optional<Form> known = formNamed(name);
    if (!known) return std::nullopt;
    record.form = *known;
  }
  simdjson::dom::element outputs;
  if (root["outputs"].get(outputs) == simdjson::SUCCESS) {
    simdjson::dom::array list;
    if (outputs.get_array().get(list) != simdjson::SUCCESS) return std::nullopt;
    for (auto item : list) {
      simdjson::dom::array entry;
      std::uint64_t output = 0, ref = 0;
      if (item.get_array().get(entry) != simdjson::SUCCESS || entry.size() != 2 ||
          entry.at(0).get_uint64().get(output) != simdjson::SUCCESS ||
          entry.at(1).get_uint64().get(ref) != simdjson::SUCCESS) {
        return std::nullopt;
      }
      record.outputs.push_back({static_cast<std::size_t>(output), static_cast<std::size_t>(ref)});
    }
  }
  if (record.nodes.empty() || (record.readers.empty() && record.outputs.empty())) {
    return std::nullopt;
  }
  return record;
}

std::vector<std::string> recordedModules(const Record& record) {
  thread_local simdjson::dom::parser parser;
  std::vector<std::string> paths;
  for (const RecordNode& node : record.nodes) {
    for (const auto& [key, token] : node.metadata) {
      if (key != "nn_module_stack") continue;
      // The token is a JSON string: "key,path,type;key,path,type" (innermost last).
      std::string_view stack;
      if (parser.parse(simdjson::padded_string(token)).get_string().get(stack) !=
          simdjson::SUCCESS) {
        continue;
      }
      const std::size_t semicolon = stack.rfind(';');
      const std::string_view entry =
          semicolon == std::string_view::npos ? stack : stack.substr(semicolon + 1);
      const std::size_t first = entry.find(',');
      const std::size_t last = entry.rfind(',');
      if (first == std::string_view::npos || last == first) continue;
      paths.emplace_back(entry.substr(first + 1, last - first - 1));
    }
  }
  return paths;
}

}  // namespace exmode::passes::drop_path
