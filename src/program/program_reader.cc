// Parses program JSON into the IR (see program.h). simdjson validates the whole document
// first; the graph is then built in one pass, resolving every value reference as it goes,
// so a use before its definition (a dangling name or a cycle) is reported where it occurs.
#include <simdjson.h>

#include <array>
#include <unordered_set>

#include "exmode/error.h"
#include "exmode/program.h"
#include "program/json_text.h"
#include "program/ref_text.h"

namespace exmode {

namespace dom = simdjson::dom;

namespace {

// Argument kinds of schema 8.x whose payload holds no value reference.
constexpr std::array kPlainKinds = {
    "as_none",    "as_int",       "as_ints",        "as_float",         "as_floats",
    "as_string",  "as_strings",   "as_scalar_type", "as_memory_format", "as_layout",
    "as_device",  "as_bool",      "as_bools",       "as_graph",         "as_operator",
    "as_complex", "as_int_lists", "as_float_lists",
};

bool isPlainKind(std::string_view kind) {
  for (std::string_view k : kPlainKinds) {
    if (k == kind) return true;
  }
  return false;
}

}  // namespace

class ProgramReader {
 public:
  ProgramReader(Program& program, std::string_view json) : program_(program), json_(json) {}

  void read() {
    dom::parser parser;
    dom::element root;
    if (auto error = parser.parse(json_.data(), json_.size()).get(root)) {
      fail(std::string("malformed JSON: ") + simdjson::error_message(error));
    }
    dom::object top = object(root, "the program");
    readSchemaVersion(top);
    for (auto field : top) {
      if (field.key == "graph_module") {
        readGraphModule(object(field.value, "graph_module"));
        program_.top_members_.emplace_back(std::string(field.key), RawJson{});
      } else {
        program_.top_members_.emplace_back(std::string(field.key), raw(field.value));
      }
    }
    if (!seen_graph_module_) fail("missing field 'graph_module'");
  }

 private:
  [[noreturn]] void fail(const std::string& what) const {
    throw Error(ErrorKind::kBadProgram, program_.source_name_ + ": " + what);
  }

  dom::object object(dom::element e, std::string_view what) const {
    dom::object o;
    if (e.get_object().get(o)) fail(std::string(what) + " is not a JSON object");
    return o;
  }
  dom::array array(dom::element e, std::string_view what) const {
    dom::array a;
    if (e.get_array().get(a)) fail(std::string(what) + " is not a JSON array");
    return a;
  }
  std::string_view string(dom::element e, std::string_view what) const {
    std::string_view s;
    if (e.get_string().get(s)) fail(std::string(what) + " is not a string");
    return s;
  }
  dom::element field(dom::object o, std::string_view key, std::string_view owner) const {
    dom::element e;
    if (o.at_key(key).get(e)) fail(std::string(owner) + " has no field '" + std::string(key) + "'");
    return e;
  }

  RawJson raw(dom::element e) {
    std::string text;
    json::appendElement(text, e);
    return program_.keep(std::move(text));
  }

  void readSchemaVersion(dom::object top) {
    dom::object version = object(field(top, "schema_version", "the program"), "schema_version");
    std::int64_t major = 0;
    std::int64_t minor = 0;
    if (field(version, "major", "schema_version").get_int64().get(major) ||
        field(version, "minor", "schema_version").get_int64().get(minor)) {
      fail("schema_version major/minor are not integers");
    }
    if (major != kSupportedSchemaMajor) {
      fail("unsupported schema version " + std::to_string(major) + "." + std::to_string(minor) +
           " (this build reads major " + std::to_string(kSupportedSchemaMajor) + ")");
    }
    program_.schema_version_ = {major, minor};
  }

  void readGraphModule(dom::object gm) {
    seen_graph_module_ = true;
    // The graph must be read before the signature, which refers to its values.
    readGraph(object(field(gm, "graph", "graph_module"), "graph_module.graph"));
    readSignature(object(field(gm, "signature", "graph_module"), "graph_module.signature"));
    for (auto f : gm) {
      const bool modeled = f.key == "graph" || f.key == "signature";
      program_.graph_module_members_.emplace_back(std::string(f.key),
                                                  modeled ? RawJson{} : raw(f.value));
      if (f.key == "module_call_graph") readModuleCallGraph(f.value);
    }
  }

  void readModuleCallGraph(dom::element e) {
    for (dom::element entry : array(e, "module_call_graph")) {
      dom::object o = object(entry, "module_call_graph entry");
      program_.module_fqns_.emplace_back(
          string(field(o, "fqn", "module_call_graph entry"), "module_call_graph fqn"));
    }
  }

  void readGraph(dom::object g) {
    Graph& graph = program_.graph_;
    // Tensor metadata first, so values get it as they are defined.
    dom::object tensor_values = object(field(g, "tensor_values", "graph"), "graph.tensor_values");
    for (auto tv : tensor_values) {
      tensor_meta_.emplace(tv.key, raw(tv.value));
      tensor_meta_order_.emplace_back(tv.key);
    }
    collectDeclaredSymbols(g);
    for (dom::element input : array(field(g, "inputs", "graph"), "graph.inputs")) {
      graph.inputs_.push_back(readArgument(input, "graph input", nullptr, Role::kDefine));
    }
    for (dom::element node : array(field(g, "nodes", "graph"), "graph.nodes")) {
      readNode(node);
    }
    for (dom::element output : array(field(g, "outputs", "graph"), "graph.outputs")) {
      graph.outputs_.push_back(readArgument(output, "graph output", nullptr, Role::kGraphOutput));
    }
    for (const std::string_view name : tensor_meta_order_) {
      // An entry no input or node defines is kept as it is; it defines nothing usable,
      // since every use was resolved above.
      Value* value = graph.tryGetValue(name);
      graph.tensor_value_order_.push_back(value != nullptr ? value : define(name, nullptr));
    }
    for (auto f : g) {
      const bool modeled =
          f.key == "inputs" || f.key == "outputs" || f.key == "nodes" || f.key == "tensor_values";
      graph.graph_members_.emplace_back(std::string(f.key), modeled ? RawJson{} : raw(f.value));
    }
  }

  // Symbols listed in sym_*_values may be referenced without a defining node.
  void collectDeclaredSymbols(dom::object g) {
    for (const char* key : {"sym_int_values", "sym_float_values", "sym_bool_values"}) {
      dom::object values;
      if (g.at_key(key).get_object().get(values)) continue;
      for (auto v : values) declared_symbols_.emplace(v.key);
    }
  }

  enum class Role { kUse, kDefine, kGraphOutput };

  void readNode(dom::element e) {
    Graph& graph = program_.graph_;
    dom::object o = object(e, "node");
    auto node = std::make_unique<Node>();
    Node& n = *node;
    std::string_view name;
    if (o.at_key("name").get_string().get(name) == simdjson::SUCCESS) n.name_ = std::string(name);
    const std::string where =
        "node '" + (n.name_.empty() ? std::to_string(graph.nodes_.size()) : n.name_) + "'";
    n.target_ = std::string(string(field(o, "target", where), where + " target"));
    for (dom::element input : array(field(o, "inputs", where), where + " inputs")) {
      dom::object in = object(input, where + " input");
      NamedArgument named;
      named.name = std::string(string(field(in, "name", where + " input"), where + " input name"));
      const std::string arg_where = where + " input '" + named.name + "'";
      named.arg = readArgument(field(in, "arg", arg_where), arg_where, &n, Role::kUse);
      dom::element kind;
      if (in.at_key("kind").get(kind) == simdjson::SUCCESS) named.kind = raw(kind);
      for (auto f : in) {
        if (f.key != "name" && f.key != "arg" && f.key != "kind") {
          named.extra.emplace_back(std::string(f.key), raw(f.value));
        }
      }
      n.inputs_.push_back(std::move(named));
    }
    for (dom::element output : array(field(o, "outputs", where), where + " outputs")) {
      n.outputs_.push_back(readArgument(output, where + " output", &n, Role::kDefine));
    }
    dom::element metadata;
    n.metadata_ =
        o.at_key("metadata").get(metadata) == simdjson::SUCCESS ? raw(metadata) : RawJson{};
    for (auto f : o) {
      const bool modeled = f.key == "target" || f.key == "inputs" || f.key == "outputs" ||
                           f.key == "metadata" || f.key == "name";
      n.members_.emplace_back(std::string(f.key), modeled ? RawJson{} : raw(f.value));
    }
    n.order_ = graph.nodes_.size();
    graph.nodes_.push_back(std::move(node));
    n.self_ = std::prev(graph.nodes_.end());
  }

  // Reads one Argument union: {"<kind>": <payload>}.
  Argument readArgument(dom::element e, const std::string& where, Node* node, Role role) {
    dom::object o = object(e, where);
    if (o.size() != 1)
      fail(where + ": an argument must have exactly one kind, found " + std::to_string(o.size()));
    auto f = *o.begin();
    Argument arg;
    arg.kind = std::string(f.key);
    readPayload(arg, f.value, where, node, role);
    return arg;
  }

  void readPayload(Argument& arg, dom::element payload, const std::string& where, Node* node,
                   Role role) {
    const std::string_view kind = arg.kind;
    std::string text;
    std::vector<Ref> refs;
    Slots slots{*this, text, refs, where, node, role};
    if (isPlainKind(kind)) {
      json::appendElement(text, payload);
      if (kind == "as_graph" && node != nullptr) collectNestedNodes(payload, *node);
    } else if (kind == "as_tensor") {
      slots.tensorArgument(payload);
    } else if (kind == "as_tensors") {
      slots.list(payload, [&](dom::element x) { slots.tensorArgument(x); });
    } else if (kind == "as_nested_tensors") {
      slots.list(payload, [&](dom::element l) {
        slots.list(l, [&](dom::element x) { slots.tensorArgument(x); });
      });
    } else if (kind == "as_optional_tensor") {
      slots.optionalTensor(payload);
    } else if (kind == "as_optional_tensors") {
      slots.list(payload, [&](dom::element x) { slots.optionalTensor(x); });
    } else if (kind == "as_sym_int" || kind == "as_sym_float" || kind == "as_sym_bool") {
      slots.symbolic(payload);
    } else if (kind == "as_sym_ints" || kind == "as_sym_floats" || kind == "as_sym_bools") {
      slots.list(payload, [&](dom::element x) { slots.symbolic(x); });
    } else if (kind == "as_custom_obj") {
      slots.customObject(payload);
    } else if (kind == "as_string_to_argument") {
      text += '{';
      bool first = true;
      for (auto entry : object(payload, where)) {
        if (!first) text += ", ";
        first = false;
        json::appendString(text, entry.key);
        text += ": ";
        appendUnion(text, refs, readArgument(entry.value, where, node, role));
      }
      text += '}';
    } else {
      fail(where + ": unknown argument kind '" + std::string(kind) + "'");
    }
    arg.payload.text = program_.keep(std::move(text));
    arg.payload.refs = std::move(refs);
  }

  // Records the targets of a GraphArgument's nodes, recursing into their own graphs.
  void collectNestedNodes(dom::element graph_argument, const Node& owner) {
    dom::array nodes;
    if (graph_argument.at_pointer("/graph/nodes").get_array().get(nodes) != simdjson::SUCCESS)
      return;
    for (dom::element nested : nodes) {
      std::string_view target;
      if (nested["target"].get_string().get(target) == simdjson::SUCCESS) {
        program_.graph_.nested_nodes_.push_back({&owner, std::string(target)});
      }
      dom::array inputs;
      if (nested["inputs"].get_array().get(inputs) != simdjson::SUCCESS) continue;
      for (dom::element input : inputs) {
        dom::element inner;
        if (input.at_pointer("/arg/as_graph").get(inner) == simdjson::SUCCESS) {
          collectNestedNodes(inner, owner);
        }
      }
    }
  }

  // Writes a payload and records where value names sit in it.
  struct Slots {
    ProgramReader& reader;
    std::string& text;
    std::vector<Ref>& refs;
    const std::string& where;
    Node* node;
    Role role;

    template <class F>
    void list(dom::element e, F each) {
      text += '[';
      bool first = true;
      for (dom::element x : reader.array(e, where)) {
        if (!first) text += ", ";
        first = false;
        each(x);
      }
      text += ']';
    }
    void name(std::string_view value_name, bool symbolic) {
      Value* value = reader.resolve(value_name, where, node, role, symbolic);
      const auto offset = static_cast<std::uint32_t>(text.size());
      json::appendString(text, value_name);
      refs.push_back({value, offset, static_cast<std::uint32_t>(text.size()) - offset});
    }
    void tensorArgument(dom::element e) {
      dom::object o = reader.object(e, where);
      text += "{\"name\": ";
      name(reader.string(reader.field(o, "name", where), where + " name"), false);
      text += '}';
    }
    void optionalTensor(dom::element e) {
      dom::object o = reader.object(e, where);
      dom::element t;
      if (o.at_key("as_tensor").get(t) == simdjson::SUCCESS) {
        text += "{\"as_tensor\": ";
        tensorArgument(t);
        text += '}';
      } else {
        json::appendElement(text, e);
      }
    }
    void symbolic(dom::element e) {
      dom::object o = reader.object(e, where);
      std::string_view n;
      if (o.at_key("as_name").get_string().get(n) == simdjson::SUCCESS) {
        text += "{\"as_name\": ";
        name(n, true);
        text += '}';
      } else {
        json::appendElement(text, e);
      }
    }
    void customObject(dom::element e) {
      dom::object o = reader.object(e, where);
      text += '{';
      bool first = true;
      for (auto f : o) {
        if (!first) text += ", ";
        first = false;
        json::appendString(text, f.key);
        text += ": ";
        if (f.key == "name") {
          name(reader.string(f.value, where + " name"), false);
        } else {
          json::appendElement(text, f.value);
        }
      }
      text += '}';
    }
  };

  Value* resolve(std::string_view name, const std::string& where, Node* node, Role role,
                 bool symbolic) {
    Graph& graph = program_.graph_;
    if (role == Role::kDefine) {
      if (graph.tryGetValue(name) != nullptr)
        fail(where + ": value '" + std::string(name) + "' is defined twice");
      return define(name, node);
    }
    Value* value = graph.tryGetValue(name);
    if (value == nullptr && symbolic && declared_symbols_.count(name) != 0) {
      value = define(name, nullptr);
    }
    if (value == nullptr) {
      fail(where + " refers to '" + std::string(name) + "', which is not defined before it");
    }
    if (node != nullptr) value->users_.push_back(node);
    return value;
  }

  Value* define(std::string_view name, Node* producer) {
    Graph& graph = program_.graph_;
    Value& value = graph.value_storage_.emplace_back();
    value.name_ = std::string(name);
    value.producer_ = producer;
    auto meta = tensor_meta_.find(name);
    if (meta != tensor_meta_.end()) value.tensor_meta_ = meta->second;
    graph.values_.emplace(value.name_, &value);
    return &value;
  }

  void readSignature(dom::object sig) {
    Graph& graph = program_.graph_;
    for (dom::element spec :
         array(field(sig, "input_specs", "signature"), "signature.input_specs")) {
      graph.input_specs_.push_back(readSpec(spec, "input spec"));
    }
    for (dom::element spec :
         array(field(sig, "output_specs", "signature"), "signature.output_specs")) {
      graph.output_specs_.push_back(readSpec(spec, "output spec"));
    }
    for (auto f : sig) {
      const bool modeled = f.key == "input_specs" || f.key == "output_specs";
      graph.signature_members_.emplace_back(std::string(f.key), modeled ? RawJson{} : raw(f.value));
    }
  }

  // A signature spec {"<kind>": {"arg": <argument>, "<x>_name": ..., ...}}. The argument is
  // a TensorArgument, CustomObjArgument, TokenArgument or (user_input/user_output) an
  // Argument union.
  SignatureSpec readSpec(dom::element e, const std::string& what) {
    dom::object o = object(e, what);
    if (o.size() != 1) fail(what + " must have exactly one kind");
    auto kind_field = *o.begin();
    SignatureSpec spec;
    spec.kind = std::string(kind_field.key);
    const std::string where = what + " '" + spec.kind + "'";
    std::string text = "{";
    std::vector<Ref> refs;
    bool first = true;
    for (auto f : object(kind_field.value, where)) {
      if (!first) text += ", ";
      first = false;
      json::appendString(text, f.key);
      text += ": ";
      if (f.key == "arg") {
        dom::object arg_object = object(f.value, where + " arg");
        dom::element name;
        const bool is_union = spec.kind == "user_input" || spec.kind == "user_output";
        if (is_union) {
          appendUnion(text, refs,
                      readArgument(f.value, where + " arg", nullptr, Role::kGraphOutput));
        } else if (arg_object.at_key("name").get(name) == simdjson::SUCCESS) {
          std::string payload;
          std::vector<Ref> arg_refs;
          Slots slots{*this, payload, arg_refs, where, nullptr, Role::kGraphOutput};
          if (spec.kind == "custom_obj") {
            slots.customObject(f.value);
          } else {
            slots.tensorArgument(f.value);
          }
          appendShifted(text, refs, payload, arg_refs);
        } else {
          json::appendElement(text, f.value);
        }
      } else {
        json::appendElement(text, f.value);
        std::string_view target;
        if (f.key.size() > 5 && f.key.substr(f.key.size() - 5) == "_name" &&
            f.value.get_string().get(target) == simdjson::SUCCESS) {
          spec.target = std::string(target);
        }
      }
    }
    text += '}';
    spec.payload.text = program_.keep(std::move(text));
    spec.payload.refs = std::move(refs);
    return spec;
  }

  Program& program_;
  std::string_view json_;
  bool seen_graph_module_ = false;
  std::unordered_map<std::string_view, RawJson> tensor_meta_;
  std::vector<std::string_view> tensor_meta_order_;
  std::unordered_set<std::string_view> declared_symbols_;
};

std::unique_ptr<Program> Program::parse(std::string_view json, std::string source_name) {
  auto program = std::make_unique<Program>();
  program->source_name_ = std::move(source_name);
  ProgramReader(*program, json).read();
  program->verify();
  return program;
}

RawJson Program::keep(std::string text) { return arena_.emplace_back(std::move(text)); }

}  // namespace exmode
