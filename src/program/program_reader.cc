// Parses program JSON into the IR (see program.h) in one forward pass with simdjson's
// On-Demand API. Nothing is copied: names, targets and the text of every part the IR does
// not model are views into the source, and each node, argument and signature entry keeps
// the span of text it was read from, so the writer copies whatever a switch did not change.
//
// Uses are resolved as they are read when their value is already defined; the few that
// are not (graph outputs, which torch writes before the nodes, symbols declared after the
// nodes, and genuinely dangling or cyclic references) are resolved once the graph is read,
// and the verifier then checks that every use follows its definition.
//
// simdjson checks the whole document's structure and UTF-8 up front; the values the IR
// reads are checked as they are read. Text the IR keeps verbatim (metadata strings, tensor
// metadata, unknown fields) is copied as it is, not re-validated member by member.
#include <absl/container/flat_hash_set.h>
#include <simdjson.h>

#include <algorithm>
#include <array>
#include <iterator>

#include "exmode/error.h"
#include "exmode/program.h"
#include "program/json_text.h"

namespace exmode {

namespace od = simdjson::ondemand;

namespace {

// The argument kinds of schema 8.x, and whether their payload holds no value reference.
// A kind read from the document is replaced by the view of this table's entry: passes test
// kinds on every site they visit, and this table stays in cache where the document's text
// of a large program does not.
struct KnownKind {
  std::string_view name;
  bool plain;
};
constexpr std::array<KnownKind, 31> kKnownKinds = {{
    {"as_tensor", false},
    {"as_none", true},
    {"as_bool", true},
    {"as_int", true},
    {"as_float", true},
    {"as_optional_tensor", false},
    {"as_tensors", false},
    {"as_ints", true},
    {"as_floats", true},
    {"as_string", true},
    {"as_strings", true},
    {"as_scalar_type", true},
    {"as_memory_format", true},
    {"as_layout", true},
    {"as_device", true},
    {"as_bools", true},
    {"as_operator", true},
    {"as_complex", true},
    {"as_int_lists", true},
    {"as_float_lists", true},
    {"as_sym_int", false},
    {"as_sym_float", false},
    {"as_sym_bool", false},
    {"as_sym_ints", false},
    {"as_sym_floats", false},
    {"as_sym_bools", false},
    {"as_nested_tensors", false},
    {"as_optional_tensors", false},
    {"as_custom_obj", false},
    {"as_string_to_argument", false},
    {"as_graph", false},
}};

// The table's entry for `kind`, or null for a kind this build does not know.
const KnownKind* knownKind(std::string_view kind) {
  for (const KnownKind& k : kKnownKinds) {
    if (k.name == kind) return &k;
  }
  return nullptr;
}

bool isSpace(char c) { return c == ' ' || c == '\n' || c == '\r' || c == '\t'; }

std::string_view trimEnd(const char* begin, const char* end) {
  while (end > begin && isSpace(end[-1])) --end;
  return {begin, static_cast<std::size_t>(end - begin)};
}

}  // namespace

class ProgramReader {
 public:
  ProgramReader(Program& program, std::string_view json, const ReadLimits& limits)
      : program_(program),
        graph_(program.graph_),
        json_(json),
        limits_(limits),
        where_(program.source_name_) {}

  // A reader of one region's graph object (`region.text`, inside the program's source),
  // under `limits` counted from where the graph object starts.
  ProgramReader(Program& program, Region& region, const ReadLimits& limits)
      : program_(program),
        graph_(*region.graph),
        json_(region.text),
        limits_(limits),
        where_(program.source_name_ + ": nested graph '" +
               region.path.substr(0, region.path.size() - 1) + "'"),
        region_(&region) {}

  void read() {
    if (json_.size() > limits_.max_json_bytes) {
      fail("the program is " + std::to_string(json_.size()) +
           " bytes of JSON, more than the limit of " + std::to_string(limits_.max_json_bytes));
    }
    try {
      readDocument();
    } catch (const Error&) {
      // A program of another schema may fail anywhere; say what its version is instead.
      checkSchemaVersionAfterFailure();
      throw;
    }
  }

 private:
  // ------------------------------------------------------------------ errors and access

  [[noreturn]] void fail(const std::string& what) const {
    throw Error(ErrorKind::kBadProgram, where_ + ": " + what);
  }

  // A failed access: a type mismatch says what was expected; anything else is malformed JSON.
  [[noreturn]] void failAccess(simdjson::error_code error, std::string_view what,
                               std::string_view expected) const {
    if (error == simdjson::INCORRECT_TYPE)
      fail(std::string(what) + " is not " + std::string(expected));
    fail(std::string("malformed JSON: ") + simdjson::error_message(error));
  }

  // Results that cannot fail (some accessors return plain values).
  template <class T>
  T get(T value, std::string_view) const {
    return value;
  }
  template <class T>
  T get(simdjson::simdjson_result<T> result, std::string_view what) const {
    T value;
    if (auto error = std::move(result).get(value)) failAccess(error, what, "valid JSON");
    return value;
  }

  // `what` says what is read, for messages: a string, or a Where described only on failure.
  template <class What>
  od::object object(od::value v, const What& what) const {
    od::object o;
    if (auto error = v.get_object().get(o)) failAccess(error, text(what), "a JSON object");
    return o;
  }
  template <class What>
  od::array array(od::value v, const What& what) const {
    od::array a;
    if (auto error = v.get_array().get(a)) failAccess(error, text(what), "a JSON array");
    return a;
  }

  // Where the value `v` starts in the source (it is not consumed).
  const char* start(od::value v) const { return get(v.raw_json_token(), "a value").data(); }
  // The source text from `begin` to the end of the value just consumed.
  std::string_view spanFrom(const char* begin) {
    const char* end = nullptr;
    if (doc_.current_location().get(end) != simdjson::SUCCESS) end = json_.data() + json_.size();
    return trimEnd(begin, end);
  }

  // The raw text of any value, consuming it. Scalars the IR does not model are checked to
  // be well-formed literals or numbers; objects and arrays are skipped over.
  RawJson raw(od::value v) {
    const od::json_type type = get(v.type(), "a value");
    if (type == od::json_type::object || type == od::json_type::array) {
      const std::int32_t depth = doc_.current_depth();
      std::string_view text;
      if (type == od::json_type::object) {
        od::object o = object(v, "a value");
        text = get(o.raw_json(), "an object");
      } else {
        od::array a = array(v, "a value");
        text = get(a.raw_json(), "an array");
      }
      text = trimEnd(text.data(), text.data() + text.size());
      // simdjson skips over the text without bounding its depth, and Python's json (torch)
      // cannot read deep nesting; text too short to go past the limit is not scanned.
      if (depth + static_cast<std::int64_t>(text.size() / 2) > limits_.max_depth) {
        checkDepth(text, depth);
      }
      return text;
    }
    const std::string_view token = get(v.raw_json_token(), "a value");
    const std::string_view text = trimEnd(token.data(), token.data() + token.size());
    simdjson::error_code error = simdjson::SUCCESS;
    if (type == od::json_type::number) {
      error = v.get_number().error();
    } else if (type == od::json_type::boolean) {
      error = v.get_bool().error();
    } else if (type == od::json_type::null) {
      error = v.is_null().error();
      if (!error && text != "null") error = simdjson::N_ATOM_ERROR;
    } else if (type == od::json_type::string && (text.size() < 2 || text.back() != '"')) {
      error = simdjson::UNCLOSED_STRING;
    }
    if (error) failAccess(error, "a value", "valid JSON");
    return text;
  }

  // Fails if brackets in `text` (outside strings) nest past the depth limit, counting from
  // `depth`, the depth at which the text starts.
  void checkDepth(std::string_view text, std::int64_t depth) const {
    bool in_string = false;
    for (std::size_t i = 0; i < text.size(); ++i) {
      const char c = text[i];
      if (in_string) {
        if (c == '\\') {
          ++i;
        } else if (c == '"') {
          in_string = false;
        }
      } else if (c == '"') {
        in_string = true;
      } else if (c == '[' || c == '{') {
        if (++depth > limits_.max_depth) {
          fail("JSON nested too deeply (more than " + std::to_string(limits_.max_depth) +
               " levels)");
        }
      } else if (c == ']' || c == '}') {
        --depth;
      }
    }
  }

  // A string's quoted token (as it is in the source) and its unescaped content.
  struct StringToken {
    std::string_view token;
    std::string_view text;
  };
  template <class What>
  StringToken stringToken(od::value v, const What& what) {
    if (get(v.type(), "a value") != od::json_type::string) fail(text(what) + " is not a string");
    const std::string_view raw_token = get(v.raw_json_token(), "a value");
    const std::string_view token = trimEnd(raw_token.data(), raw_token.data() + raw_token.size());
    if (token.size() < 2 || token.back() != '"') fail(text(what) + ": unclosed string");
    std::string_view content = token.substr(1, token.size() - 2);
    if (content.find('\\') != std::string_view::npos) {
      std::string_view unescaped;
      if (auto error = v.get_string().get(unescaped)) failAccess(error, text(what), "a string");
      content = program_.keep(std::string(unescaped));
    }
    return {token, content};
  }
  template <class What>
  std::string_view string(od::value v, const What& what) {
    return stringToken(v, what).text;
  }

  // An object key, unescaped. Keys with escapes (torch writes none) are copied.
  std::string_view key(od::field& field) {
    const char* raw = field.key().raw();
    const char* end = json_.data() + json_.size();
    const char* p = raw;
    while (p < end && *p != '"' && *p != '\\') ++p;
    if (p < end && *p == '"') return {raw, static_cast<std::size_t>(p - raw)};
    std::string_view unescaped;
    if (auto error = field.unescaped_key().get(unescaped)) failAccess(error, "a key", "a string");
    return program_.keep(std::string(unescaped));
  }

  // Iterates an object's fields as (key, value).
  template <class F>
  void fields(od::object o, std::string_view what, F each) {
    for (auto result : o) {
      od::field field;
      if (auto error = std::move(result).get(field)) failAccess(error, what, "a JSON object");
      const std::string_view k = key(field);
      each(k, field.value());
    }
  }
  template <class F>
  void elements(od::array a, std::string_view what, F each) {
    for (auto result : a) {
      od::value v;
      if (auto error = std::move(result).get(v)) failAccess(error, what, "a JSON array");
      each(v);
    }
  }

  // Marks a modelled field as read. A repeated one is an error: Python's json keeps the
  // last of repeated keys, so torch would read a different program than exmode.
  template <class What>
  void once(bool& seen, const What& owner, std::string_view key) const {
    if (seen) fail(text(owner) + " repeats field '" + std::string(key) + "'");
    seen = true;
  }

  // ------------------------------------------------------------------ the document

  void readDocument() {
    if (auto error =
            parser_.iterate(json_.data(), json_.size(), json_.size() + kJsonPadding).get(doc_)) {
      fail(std::string("malformed JSON: ") + simdjson::error_message(error));
    }
    od::json_type type;
    if (auto error = doc_.type().get(type)) {
      fail(std::string("malformed JSON: ") + simdjson::error_message(error));
    }
    if (type != od::json_type::object) fail("the program is not a JSON object");
    od::object top;
    if (auto error = doc_.get_object().get(top)) failAccess(error, "the program", "a JSON object");
    bool seen_version = false;
    fields(top, "the program", [&](std::string_view k, od::value v) {
      if (k == "graph_module") {
        if (seen_graph_module_) fail("the program repeats field 'graph_module'");
        readGraphModule(object(v, "graph_module"));
        program_.top_members_.emplace_back(k, RawJson{});
      } else {
        const RawJson text = raw(v);
        if (k == "schema_version") {
          once(seen_version, "the program", k);
          readSchemaVersion(text);
        }
        program_.top_members_.emplace_back(k, text);
      }
    });
    const char* rest = nullptr;
    if (doc_.current_location().get(rest) == simdjson::SUCCESS) {
      fail("malformed JSON: content after the program object");
    }
    if (!seen_version) fail("the program has no field 'schema_version'");
    if (!seen_graph_module_) fail("the program has no field 'graph_module'");
  }

  // {"major": 8, "minor": 13}, parsed from its raw text.
  void readSchemaVersion(RawJson text) {
    od::parser parser;
    simdjson::padded_string padded(text);
    od::document doc;
    std::int64_t major = 0;
    std::int64_t minor = 0;
    if (parser.iterate(padded).get(doc) || doc["major"].get_int64().get(major) ||
        doc["minor"].get_int64().get(minor)) {
      fail("schema_version major/minor are not integers");
    }
    if (major != kSupportedSchemaMajor) {
      fail("unsupported schema version " + std::to_string(major) + "." + std::to_string(minor) +
           " (this build reads major " + std::to_string(kSupportedSchemaMajor) + ")");
    }
    program_.schema_version_ = {major, minor};
  }

  // After a failure: if the document declares another schema major, that is the error.
  void checkSchemaVersionAfterFailure() {
    od::parser parser;
    od::document doc;
    std::int64_t major = 0;
    std::int64_t minor = 0;
    const simdjson::padded_string copy(json_);
    if (parser.iterate(copy).get(doc) ||
        doc.find_field_unordered("schema_version")["major"].get_int64().get(major)) {
      return;
    }
    if (doc.find_field_unordered("schema_version")["minor"].get_int64().get(minor)) return;
    if (major != kSupportedSchemaMajor) {
      fail("unsupported schema version " + std::to_string(major) + "." + std::to_string(minor) +
           " (this build reads major " + std::to_string(kSupportedSchemaMajor) + ")");
    }
  }

  void readGraphModule(od::object gm) {
    seen_graph_module_ = true;
    bool seen_graph = false;
    bool seen_signature = false;
    fields(gm, "graph_module", [&](std::string_view k, od::value v) {
      if (k == "graph") {
        once(seen_graph, "graph_module", k);
        readGraph(object(v, "graph_module.graph"));
        program_.graph_module_members_.emplace_back(k, RawJson{});
      } else if (k == "signature") {
        once(seen_signature, "graph_module", k);
        readSignature(object(v, "graph_module.signature"));
        program_.graph_module_members_.emplace_back(k, RawJson{});
      } else if (k == "module_call_graph") {
        const char* begin = start(v);
        readModuleCallGraph(array(v, "module_call_graph"));
        program_.graph_module_members_.emplace_back(k, spanFrom(begin));
      } else {
        program_.graph_module_members_.emplace_back(k, raw(v));
      }
    });
    if (!seen_graph) fail("graph_module has no field 'graph'");
    if (!seen_signature) fail("graph_module has no field 'signature'");
    resolvePending();
    readRegions();
  }

  void readModuleCallGraph(od::array entries) {
    elements(entries, "module_call_graph", [&](od::value entry) {
      bool seen_fqn = false;
      fields(object(entry, "module_call_graph entry"), "module_call_graph entry",
             [&](std::string_view k, od::value v) {
               if (k == "fqn") {
                 program_.module_fqns_.push_back(string(v, "module_call_graph fqn"));
                 seen_fqn = true;
               }
             });
      if (!seen_fqn) fail("module_call_graph entry has no field 'fqn'");
    });
  }

  // ------------------------------------------------------------------ the graph

  void readGraph(od::object g) {
    Graph& graph = graph_;
    std::array<bool, 4> seen{};
    fields(g, "graph", [&](std::string_view k, od::value v) {
      if (k == "inputs") {
        once(seen[0], "graph", k);
        const char* begin = start(v);
        readArgumentList(array(v, "graph.inputs"), graph.inputs_, "graph input", Role::kDefine);
        graph.inputs_source_ = spanFrom(begin);
      } else if (k == "outputs") {
        once(seen[1], "graph", k);
        readArgumentList(array(v, "graph.outputs"), graph.outputs_, "graph output", Role::kUse);
      } else if (k == "nodes") {
        once(seen[2], "graph", k);
        // While nodes are read, every defined value is indexed by name (see resolve()).
        reading_nodes_ = true;
        elements(array(v, "graph.nodes"), "graph.nodes", [&](od::value node) { readNode(node); });
        reading_nodes_ = false;
      } else if (k == "tensor_values") {
        once(seen[3], "graph", k);
        readTensorValues(object(v, "graph.tensor_values"));
      } else {
        if (k == "sym_int_values" || k == "sym_float_values" || k == "sym_bool_values") {
          const char* begin = start(v);
          fields(object(v, std::string("graph.") + std::string(k)), "graph symbols",
                 [&](std::string_view name, od::value) { declared_symbols_.insert(name); });
          graph.graph_members_.emplace_back(k, spanFrom(begin));
          return;
        }
        graph.graph_members_.emplace_back(k, raw(v));
        return;
      }
      graph.graph_members_.emplace_back(k, RawJson{});
    });
    static constexpr std::array<const char*, 4> kNames = {"inputs", "outputs", "nodes",
                                                          "tensor_values"};
    for (std::size_t i = 0; i < seen.size(); ++i) {
      if (!seen[i]) fail(std::string("graph has no field '") + kNames[i] + "'");
    }
  }

  void readTensorValues(od::object tensor_values) {
    Graph& graph = graph_;
    for (auto result : tensor_values) {
      od::field field;
      if (auto error = std::move(result).get(field)) {
        failAccess(error, "graph.tensor_values", "a JSON object");
      }
      const char* entry_begin = field.key().raw() - 1;  // the key's opening quote
      const std::string_view name = key(field);
      const RawJson meta = raw(field.value());
      // torch writes tensor_values in definition order: try the next defined value before
      // hashing the name. An entry no input or node defines is kept as it is: it defines
      // nothing usable.
      Value* value = nullptr;
      while (next_defined_ < graph.value_storage_.size() &&
             graph.value_storage_[next_defined_].producer_ == nullptr &&
             graph.value_storage_[next_defined_].declared_symbol_) {
        ++next_defined_;
      }
      if (next_defined_ < graph.value_storage_.size() &&
          graph.value_storage_[next_defined_].name_ == name) {
        value = &graph.value_storage_[next_defined_++];
      } else {
        value = graph.tryGetValue(name);
        // Entries usually follow definitions in runs: continue after this one.
        if (value != nullptr) next_defined_ = value->index_ + 1;
      }
      if (value == nullptr) {
        value = define(name, nullptr, true);
      } else if (!value->tensor_meta_.empty()) {
        value = define(name, nullptr, false);  // a repeated key
      }
      value->tensor_meta_ = meta;
      value->tensor_entry_ = std::string_view(
          entry_begin, static_cast<std::size_t>(meta.data() + meta.size() - entry_begin));
      graph.tensor_value_order_.push_back(value);
    }
  }

  enum class Role { kUse, kDefine };

  // The position of an argument, for messages.
  struct Where {
    const Node* node = nullptr;        // null for graph inputs/outputs and the signature
    std::size_t node_index = 0;        // used while the node's name is not known yet
    std::string_view what;             // "graph output", "input", "output", "input spec", ...
    std::string_view input_name = {};  // for node inputs
  };

  std::string text(std::string_view what) const { return std::string(what); }
  std::string text(const Where& where) const { return describe(where); }
  struct NameOf {
    const Where& where;
  };
  std::string text(const NameOf& of) const { return describe(of.where) + " name"; }

  std::string describe(const Where& where) const {
    if (where.node == nullptr) return std::string(where.what);
    std::string text = "node '";
    text += nodeName(*where.node, where.node_index);
    text += "'";
    if (!where.input_name.empty()) {
      text += " input '";
      text += where.input_name;
      text += "'";
    } else if (!where.what.empty()) {
      text += " ";
      text += where.what;
    }
    return text;
  }

  // A node's name for messages. Torch writes the name last, so when an error comes before
  // it, the name is looked up by position in a second, error-path-only parse.
  std::string nodeName(const Node& node, std::size_t index) const {
    if (!node.name_.empty()) return std::string(node.name_);
    od::parser parser;
    od::document doc;
    od::array nodes;
    const simdjson::padded_string copy(json_);
    if (parser.iterate(copy).get(doc) == simdjson::SUCCESS &&
        doc.at_pointer(region_ != nullptr ? "/nodes" : "/graph_module/graph/nodes")
                .get_array()
                .get(nodes) == simdjson::SUCCESS) {
      std::size_t i = 0;
      for (auto element : nodes) {
        std::string_view name;
        if (i++ == index) {
          if (element["name"].get_string().get(name) == simdjson::SUCCESS && !name.empty()) {
            return std::string(name);
          }
          break;
        }
      }
    }
    std::string position = "#";
    position += std::to_string(index);
    return position;
  }

  void readNode(od::value v) {
    Graph& graph = graph_;
    const char* begin = start(v);
    od::object o = object(v, "node");
    auto owned = std::make_unique<Node>();
    Node& n = *owned;
    const std::size_t index = graph.nodes_.size();
    if (index >= limits_.max_nodes) {
      fail("the graph has more than " + std::to_string(limits_.max_nodes) + " nodes, the limit");
    }
    n.order_ = (index + 1) * Graph::kOrderGap;
    bool seen_name = false;
    bool seen_target = false;
    bool seen_inputs = false;
    bool seen_outputs = false;
    bool seen_metadata = false;
    const Where node_where{&n, index, ""};
    member_scratch_.clear();
    fields(o, "node", [&](std::string_view k, od::value field) {
      if (k == "name") {
        once(seen_name, node_where, k);
        n.name_ = string(field, "node name");
      } else if (k == "target") {
        once(seen_target, node_where, k);
        n.target_ = internTarget(string(field, "node target"));
      } else if (k == "inputs") {
        once(seen_inputs, node_where, k);
        od::array inputs = array(field, Where{&n, index, "inputs"});
        // Read into a reused buffer, then moved into a vector of the exact size: a node
        // keeps no spare capacity (a large program has a million nodes) and is not
        // reallocated while it grows.
        input_scratch_.clear();
        elements(inputs, "node inputs", [&](od::value in) {
          input_index_ = input_scratch_.size();
          input_scratch_.push_back(readInput(in, n, index));
        });
        n.inputs_.assign(std::make_move_iterator(input_scratch_.begin()),
                         std::make_move_iterator(input_scratch_.end()));
      } else if (k == "outputs") {
        once(seen_outputs, node_where, k);
        readArgumentList(array(field, Where{&n, index, "outputs"}), n.outputs_,
                         Where{&n, index, "output"}, Role::kDefine);
      } else if (k == "metadata") {
        once(seen_metadata, node_where, k);
        readMetadata(n, field, index);
      } else {
        member_scratch_.emplace_back(k, raw(field));
        return;
      }
      member_scratch_.emplace_back(k, RawJson{});
    });
    n.members_ = memberList();
    if (!seen_target) fail(describe({&n, index, ""}) + " has no field 'target'");
    if (!seen_inputs) fail(describe({&n, index, ""}) + " has no field 'inputs'");
    if (!seen_outputs) fail(describe({&n, index, ""}) + " has no field 'outputs'");
    n.source_ = spanFrom(begin);
    graph.nodes_.push_back(std::move(owned));
    n.self_ = std::prev(graph.nodes_.end());
  }

  // The node just read's members as a shared list: the last one used when equal (nodes
  // in a row almost always are), else one of the first few kept, else a new one. The
  // search is bounded so that a file whose nodes all differ costs no more than a list each.
  std::span<const std::pair<std::string_view, RawJson>> memberList() {
    auto& lists = graph_.member_lists_;
    if (last_members_ != nullptr && *last_members_ == member_scratch_) return *last_members_;
    constexpr std::size_t kSearched = 8;
    for (std::size_t i = 0; i < lists.size() && i < kSearched; ++i) {
      if (lists[i] == member_scratch_) return *(last_members_ = &lists[i]);
    }
    return *(last_members_ = &lists.emplace_back(member_scratch_));
  }

  // Targets repeat across nodes: one view per distinct target keeps by-target maps small.
  std::string_view internTarget(std::string_view target) { return *targets_.insert(target).first; }
  // Input names are few ("input", "weight", "training", ...) and passes compare them on
  // every site: each is kept once, in the program's arena, so those compares stay in cache.
  std::string_view internName(std::string_view name) {
    auto it = input_names_.find(name);
    if (it == input_names_.end()) it = input_names_.insert(program_.keep(name)).first;
    return *it;
  }

  void readMetadata(Node& n, od::value v, std::size_t index) {
    const char* begin = start(v);
    od::object metadata = object(v, Where{&n, index, "metadata"});
    fields(metadata, "node metadata", [&](std::string_view k, od::value field) {
      n.metadata_fields_.emplace_back(k, raw(field));
    });
    n.metadata_ = spanFrom(begin);
  }

  NamedArgument readInput(od::value v, Node& n, std::size_t index) {
    const char* begin = start(v);
    NamedArgument named;
    bool seen_name = false;
    bool seen_arg = false;
    bool seen_kind = false;
    fields(
        object(v, Where{&n, index, "input"}), "node input",
        [&](std::string_view k, od::value field) {
          if (k == "name") {
            once(seen_name, Where{&n, index, "input"}, k);
            named.name = internName(string(field, "input name"));
          } else if (k == "arg") {
            once(seen_arg, Where{&n, index, "input", named.name}, k);
            named.arg = readArgument(field, Where{&n, index, "input", named.name}, Role::kUse, 0);
          } else if (k == "kind") {
            once(seen_kind, Where{&n, index, "input", named.name}, k);
            named.kind = raw(field);
          } else {
            named.extra.emplace_back(k, raw(field));
          }
        });
    if (!seen_name) fail(describe({&n, index, "input"}) + " has no field 'name'");
    if (!seen_arg) fail(describe({&n, index, "input", named.name}) + " has no field 'arg'");
    named.source = spanFrom(begin);
    return named;
  }

  template <class Arguments>
  void readArgumentList(od::array a, Arguments& out, Where where, Role role) {
    elements(a, "argument list",
             [&](od::value v) { out.push_back(readArgument(v, where, role, 0)); });
  }
  void readArgumentList(od::array a, std::vector<Argument>& out, std::string_view what, Role role) {
    readArgumentList(a, out, Where{nullptr, 0, what}, role);
  }

  // Reads one Argument union: {"<kind>": <payload>}.
  Argument readArgument(od::value v, const Where& where, Role role, int depth) {
    // The document's depth here, not just this recursion's: the limit is on the JSON.
    if (depth > limits_.max_depth || doc_.current_depth() > limits_.max_depth) {
      fail(describe(where) + ": JSON nested too deeply (more than " +
           std::to_string(limits_.max_depth) + " levels)");
    }
    const char* begin = start(v);
    Argument arg;
    bool seen = false;
    fields(object(v, where), "an argument", [&](std::string_view k, od::value payload) {
      if (seen) fail(describe(where) + ": an argument must have exactly one kind");
      seen = true;
      const KnownKind* known = knownKind(k);
      arg.kind = known != nullptr ? known->name : k;
      readPayload(arg, payload, known != nullptr && known->plain, where, role, depth);
    });
    if (!seen) fail(describe(where) + ": an argument must have exactly one kind, found none");
    arg.source = spanFrom(begin);
    return arg;
  }

  // Records where value names sit in a payload while reading it.
  struct Slots {
    const char* begin;
    Refs& refs;
  };

  void readPayload(Argument& arg, od::value payload, bool plain, const Where& where, Role role,
                   int depth) {
    const std::string_view kind = arg.kind;
    if (plain) {
      arg.payload.text = raw(payload);
      // Literal flags are what passes read on every site: kept as static text, like kinds.
      if (kind == "as_bool") {
        if (arg.payload.text == "true") arg.payload.text = "true";
        if (arg.payload.text == "false") arg.payload.text = "false";
      }
      return;
    }
    const char* begin = start(payload);
    Slots slots{begin, arg.payload.refs};
    auto list = [&](od::value v, auto each) { elements(array(v, where), "a list argument", each); };
    if (kind == "as_tensor") {
      tensorArgument(payload, slots, where, role);
    } else if (kind == "as_tensors") {
      list(payload, [&](od::value x) { tensorArgument(x, slots, where, role); });
    } else if (kind == "as_nested_tensors") {
      list(payload, [&](od::value l) {
        list(l, [&](od::value x) { tensorArgument(x, slots, where, role); });
      });
    } else if (kind == "as_optional_tensor") {
      optionalTensor(payload, slots, where, role);
    } else if (kind == "as_optional_tensors") {
      list(payload, [&](od::value x) { optionalTensor(x, slots, where, role); });
    } else if (kind == "as_sym_int" || kind == "as_sym_float" || kind == "as_sym_bool") {
      symbolic(payload, slots, where, role);
    } else if (kind == "as_sym_ints" || kind == "as_sym_floats" || kind == "as_sym_bools") {
      list(payload, [&](od::value x) { symbolic(x, slots, where, role); });
    } else if (kind == "as_custom_obj") {
      customObject(payload, slots, where, role);
    } else if (kind == "as_string_to_argument") {
      fields(object(payload, where), "an argument map", [&](std::string_view, od::value v) {
        Argument inner = readArgument(v, where, role, depth + 1);
        for (const Ref& r : inner.payload.refs) {
          const auto shift = static_cast<std::uint32_t>(inner.payload.text.data() - begin);
          slots.refs.push_back({r.value, r.offset + shift, r.length});
        }
      });
    } else if (kind == "as_graph") {
      if (where.node != nullptr && depth == 0 && where.what == "input") {
        graphArgument(payload, *const_cast<Node*>(where.node), begin);
      } else if (where.node != nullptr) {
        collectNestedNodes(payload, *where.node, depth);
      } else {
        raw(payload);
      }
    } else {
      fail(describe(where) + ": unknown argument kind '" + std::string(kind) + "'");
    }
    arg.payload.text = spanFrom(begin);
  }

  void name(od::value v, Slots& slots, const Where& where, Role role) {
    const StringToken name = stringToken(v, NameOf{where});
    Value* value = resolve(name.text, where, role);
    slots.refs.push_back({value, static_cast<std::uint32_t>(name.token.data() - slots.begin),
                          static_cast<std::uint32_t>(name.token.size())});
  }
  // {"name": "<value>"} (TensorArgument); other members are kept as they are.
  void tensorArgument(od::value v, Slots& slots, const Where& where, Role role) {
    bool seen = false;
    fields(object(v, where), "a tensor argument", [&](std::string_view k, od::value f) {
      if (k == "name") {
        once(seen, NameOf{where}, k);
        name(f, slots, where, role);
      }
    });
    if (!seen) fail(describe(where) + " has no field 'name'");
  }
  // {"as_tensor": {...}} or {"as_none": ...}.
  void optionalTensor(od::value v, Slots& slots, const Where& where, Role role) {
    fields(object(v, where), "an optional tensor", [&](std::string_view k, od::value f) {
      if (k == "as_tensor") tensorArgument(f, slots, where, role);
    });
  }
  // {"as_name": "<symbol>"} or a literal {"as_int": 3}.
  void symbolic(od::value v, Slots& slots, const Where& where, Role role) {
    fields(object(v, where), "a symbolic argument", [&](std::string_view k, od::value f) {
      if (k == "as_name") name(f, slots, where, role);
    });
  }
  // {"name": "<value>", "class_fqn": ...}.
  void customObject(od::value v, Slots& slots, const Where& where, Role role) {
    fields(object(v, where), "a custom object", [&](std::string_view k, od::value f) {
      if (k == "name") name(f, slots, where, role);
    });
  }

  // A GraphArgument {"name": ..., "graph": {...}} of a node input: its graph is read as a
  // Region once the enclosing graph is (readRegions), from the text kept here.
  void graphArgument(od::value payload, Node& owner, const char* begin) {
    PendingRegion pending{&owner, input_index_, {}, {}, {}, 0};
    bool seen_graph = false;
    bool seen_name = false;
    if (get(payload.type(), "a graph argument") != od::json_type::object) {
      raw(payload);
      return;
    }
    fields(object(payload, "a graph argument"), "a graph argument",
           [&](std::string_view k, od::value v) {
             if (k == "graph" && get(v.type(), "a nested graph") == od::json_type::object) {
               once(seen_graph, "node '" + std::string(owner.name_) + "' graph argument", k);
               pending.depth = doc_.current_depth();
               pending.graph = raw(v);
             } else if (k == "name" && get(v.type(), "a graph name") == od::json_type::string) {
               once(seen_name, "node '" + std::string(owner.name_) + "' graph argument", k);
               pending.name = string(v, "a graph name");
             } else {
               raw(v);
             }
           });
    if (pending.graph.empty()) return;
    pending.payload = spanFrom(begin);
    pending_regions_.push_back(pending);
  }

  // Reads the graphs of the graph arguments found in this graph. A graph object without
  // inputs, outputs, nodes and tensor_values is not a graph torch wrote: it is kept verbatim,
  // its nodes listed in the top-level graph's nestedNodes().
  void readRegions() {
    for (const PendingRegion& p : pending_regions_) {
      Region& region = graph_.regions_.emplace_back();
      region.owner = p.owner;
      region.input = p.input;
      region.name = p.name;
      region.graph = std::make_unique<Graph>();
      region.graph->region_ = &region;
      region.graph->parent_ = &graph_;
      region.path = (region_ != nullptr ? region_->path : std::string()) +
                    std::string(p.owner->name_) + "/" + std::string(p.name) + "/";
      region.text = p.graph;
      const auto graph_at = static_cast<std::size_t>(p.graph.data() - p.payload.data());
      region.before = p.payload.substr(0, graph_at);
      region.after = p.payload.substr(graph_at + p.graph.size());
      ReadLimits limits = limits_;
      limits.max_depth = static_cast<int>(std::max<std::int64_t>(0, limits_.max_depth - p.depth));
      ProgramReader reader(program_, region, limits);
      reader.top_graph_ = top_graph_;
      reader.top_owner_ = top_owner_ != nullptr ? top_owner_ : p.owner;
      if (reader.readRegion()) continue;
      graph_.regions_.pop_back();
      ProgramReader verbatim(program_, p.payload, limits);
      verbatim.top_graph_ = top_graph_;
      verbatim.top_owner_ = top_owner_ != nullptr ? top_owner_ : p.owner;
      verbatim.where_ = where_;
      verbatim.collectVerbatim(*p.owner);
    }
    pending_regions_.clear();
  }

  // A region's graph object; false when it lacks one of the four members a graph has.
  bool readRegion() {
    open();
    std::array<bool, 4> present{};
    od::object probe;
    if (auto error = doc_.get_object().get(probe))
      failAccess(error, "a nested graph", "a JSON object");
    fields(probe, "a nested graph", [&](std::string_view k, od::value) {
      if (k == "inputs") present[0] = true;
      if (k == "outputs") present[1] = true;
      if (k == "nodes") present[2] = true;
      if (k == "tensor_values") present[3] = true;
    });
    if (std::find(present.begin(), present.end(), false) != present.end()) return false;
    doc_.rewind();
    od::object g;
    if (auto error = doc_.get_object().get(g)) failAccess(error, "a nested graph", "a JSON object");
    readGraph(g);
    resolvePending();
    readRegions();
    return true;
  }

  // The nodes of a graph argument kept verbatim (`json_` is its payload).
  void collectVerbatim(const Node& owner) {
    open();
    od::value v;
    if (auto error = doc_.get_value().get(v)) failAccess(error, "a graph argument", "valid JSON");
    collectNestedNodes(v, owner, 0);
  }

  void open() {
    if (auto error =
            parser_.iterate(json_.data(), json_.size(), json_.size() + kJsonPadding).get(doc_)) {
      fail(std::string("malformed JSON: ") + simdjson::error_message(error));
    }
  }

  // Records the targets of a GraphArgument's nodes, recursing into their own graphs.
  void collectNestedNodes(od::value graph_argument, const Node& owner, int depth) {
    if (depth > limits_.max_depth || doc_.current_depth() > limits_.max_depth) {
      fail("node '" + std::string(owner.name_) + "': JSON nested too deeply (more than " +
           std::to_string(limits_.max_depth) + " levels)");
    }
    auto objectFields = [&](od::value v, auto each) {
      if (get(v.type(), "a nested graph") != od::json_type::object) {
        raw(v);
        return;
      }
      fields(object(v, "a nested graph"), "a nested graph", each);
    };
    objectFields(graph_argument, [&](std::string_view k, od::value graph) {
      if (k != "graph") return;
      objectFields(graph, [&](std::string_view gk, od::value nodes) {
        if (gk != "nodes") return;
        if (get(nodes.type(), "nested nodes") != od::json_type::array) return;
        elements(array(nodes, "nested nodes"), "nested nodes", [&](od::value nested) {
          objectFields(nested, [&](std::string_view nk, od::value field) {
            if (nk == "target" && get(field.type(), "target") == od::json_type::string) {
              top_graph_->nested_nodes_.push_back({top_owner_ != nullptr ? top_owner_ : &owner,
                                                   internTarget(string(field, "target"))});
            } else if (nk == "inputs" && get(field.type(), "inputs") == od::json_type::array) {
              elements(array(field, "nested inputs"), "nested inputs", [&](od::value input) {
                objectFields(input, [&](std::string_view ik, od::value arg) {
                  if (ik != "arg") return;
                  objectFields(arg, [&](std::string_view ak, od::value inner) {
                    if (ak == "as_graph") collectNestedNodes(inner, owner, depth + 1);
                  });
                });
              });
            }
          });
        });
      });
    });
  }

  // ------------------------------------------------------------------ values

  Value* resolve(std::string_view name, const Where& where, Role role) {
    Graph& graph = graph_;
    if (role == Role::kDefine) {
      // Indexing the name also says whether it was taken: one hash.
      Value* value = define(name, const_cast<Node*>(where.node), true);
      if (!value->indexed_) {
        fail(describe(where) + ": value '" + std::string(name) + "' is defined twice");
      }
      return value;
    }
    // Hashing the name is the costly part of reading a large graph (a lookup in a table of
    // millions of names misses the cache); cheap guesses go first: the value a signature
    // entry is expected to name; in nodes, the latest few definitions (most nodes read
    // recent outputs) and the placeholder after the one read last (parameters and buffers
    // are read in the order they are declared).
    Value* value = nullptr;
    if (hint_ != nullptr && hint_->name_ == name) {
      value = hint_;
    } else if (reading_nodes_) {
      value = recentOrNextPlaceholder(name);
    }
    if (value == nullptr) {
      value = graph.tryGetValue(name);
      if (value != nullptr && value->producer_ == nullptr) next_placeholder_ = value->index_ + 1;
    }
    if (value == nullptr) {
      // Defined further on (graph outputs precede the nodes), a declared symbol, or an
      // error: settled by resolvePending() once the graph is read.
      pending_.push_back({const_cast<Node*>(where.node)});
      return nullptr;
    }
    if (where.node != nullptr) value->users_.push_back(const_cast<Node*>(where.node));
    return value;
  }

  Value* recentOrNextPlaceholder(std::string_view name) {
    auto& values = graph_.value_storage_;
    constexpr std::size_t kRecent = 8;
    const std::size_t count = values.size();
    for (std::size_t back = 1; back <= kRecent && back <= count; ++back) {
      Value& candidate = values[count - back];
      // Node outputs only (each indexed); graph inputs are for the placeholder guess.
      if (candidate.producer_ == nullptr) break;
      if (candidate.name_ == name) return &candidate;
    }
    if (next_placeholder_ < count) {
      Value& candidate = values[next_placeholder_];
      if (candidate.producer_ == nullptr && candidate.indexed_ && candidate.name_ == name) {
        ++next_placeholder_;
        return &candidate;
      }
    }
    return nullptr;
  }

  Value* define(std::string_view name, Node* producer, bool index) {
    Graph& graph = graph_;
    Value& value = graph.value_storage_.emplace_back();
    value.name_ = name;
    value.producer_ = producer;
    value.index_ = static_cast<std::uint32_t>(graph.value_storage_.size() - 1);
    if (index) value.indexed_ = graph.values_.try_emplace(name, &value).second;
    return &value;
  }

  // Resolves the references left open while reading, in reading order, and reports the
  // first one that names no value.
  void resolvePending() {
    Graph& graph = graph_;
    auto settle = [&](RefText& ref_text, const Where& where) {
      for (Ref& ref : ref_text.refs) {
        if (ref.value != nullptr) continue;
        const std::string_view name = nameAt(ref_text.text, ref);
        Value* value = graph.tryGetValue(name);
        if (value == nullptr && declared_symbols_.count(name) != 0) {
          value = define(name, nullptr, true);
          value->declared_symbol_ = true;
        }
        if (value == nullptr) {
          fail(describe(where) + " refers to '" + std::string(name) +
               "', which is not defined before it");
        }
        ref.value = value;
        if (where.node != nullptr) value->users_.push_back(const_cast<Node*>(where.node));
      }
    };
    for (const Pending& p : pending_) {
      if (p.node != nullptr) {
        for (NamedArgument& in : p.node->inputs_) {
          settle(in.arg.payload, Where{p.node, 0, "input", in.name});
        }
        continue;
      }
      for (Argument& a : graph.outputs_) settle(a.payload, Where{nullptr, 0, "graph output"});
      for (SignatureSpec& s : graph.input_specs_)
        settle(s.payload, Where{nullptr, 0, "input spec"});
      for (SignatureSpec& s : graph.output_specs_)
        settle(s.payload, Where{nullptr, 0, "output spec"});
    }
    pending_.clear();
  }

  // The (unescaped) name a reference's token spells.
  std::string_view nameAt(std::string_view text, const Ref& ref) {
    const std::string_view token = text.substr(ref.offset, ref.length);
    const std::string_view inner = token.substr(1, token.size() - 2);
    if (inner.find('\\') == std::string_view::npos) return inner;
    return program_.keep(json::unescapeString(token));
  }

  // ------------------------------------------------------------------ the signature

  void readSignature(od::object sig) {
    Graph& graph = graph_;
    bool seen_inputs = false;
    bool seen_outputs = false;
    fields(sig, "signature", [&](std::string_view k, od::value v) {
      if (k == "input_specs") {
        once(seen_inputs, "signature", k);
        const char* begin = start(v);
        elements(array(v, "signature.input_specs"), "signature.input_specs", [&](od::value spec) {
          // Input spec i names graph input i (verify() checks it).
          const std::size_t i = graph.input_specs_.size();
          hint_ = i < graph.inputs_.size() ? graph.inputs_[i].tensor() : nullptr;
          graph.input_specs_.push_back(readSpec(spec, "input spec"));
          hint_ = nullptr;
        });
        graph.input_specs_source_ = spanFrom(begin);
      } else if (k == "output_specs") {
        once(seen_outputs, "signature", k);
        elements(array(v, "signature.output_specs"), "signature.output_specs", [&](od::value spec) {
          graph.output_specs_.push_back(readSpec(spec, "output spec"));
        });
      } else {
        graph.signature_members_.emplace_back(k, raw(v));
        return;
      }
      graph.signature_members_.emplace_back(k, RawJson{});
    });
    if (!seen_inputs) fail("signature has no field 'input_specs'");
    if (!seen_outputs) fail("signature has no field 'output_specs'");
  }

  // A signature spec {"<kind>": {"arg": <argument>, "<x>_name": ..., ...}}. The argument is
  // a TensorArgument, CustomObjArgument, TokenArgument or (user_input/user_output) an
  // Argument union.
  SignatureSpec readSpec(od::value v, std::string_view what) {
    const char* begin = start(v);
    SignatureSpec spec;
    bool seen = false;
    const Where where{nullptr, 0, what};
    fields(object(v, what), what, [&](std::string_view kind, od::value body) {
      if (seen) fail(std::string(what) + " must have exactly one kind");
      seen = true;
      spec.kind = kind;
      const char* body_begin = start(body);
      Slots slots{body_begin, spec.payload.refs};
      bool seen_arg = false;
      fields(object(body, what), what, [&](std::string_view k, od::value f) {
        if (k == "arg") {
          once(seen_arg, what, k);
          if (kind == "user_input" || kind == "user_output") {
            Argument arg = readArgument(f, where, Role::kUse, 0);
            const auto shift = static_cast<std::uint32_t>(arg.payload.text.data() - body_begin);
            for (const Ref& r : arg.payload.refs)
              slots.refs.push_back({r.value, r.offset + shift, r.length});
          } else if (get(f.type(), what) != od::json_type::object) {
            raw(f);
          } else if (kind == "custom_obj") {
            customObject(f, slots, where, Role::kUse);
          } else {
            bool named = false;
            fields(object(f, what), what, [&](std::string_view ak, od::value af) {
              if (ak == "name") {
                once(named, what, ak);
                name(af, slots, where, Role::kUse);
              }
            });
          }
        } else if (k.size() > 5 && k.substr(k.size() - 5) == "_name" &&
                   get(f.type(), what) == od::json_type::string) {
          spec.target = string(f, what);
        }
      });
      spec.payload.text = spanFrom(body_begin);
    });
    if (!seen) fail(std::string(what) + " must have exactly one kind");
    spec.source = spanFrom(begin);
    return spec;
  }

  // A place holding unresolved references: a node's inputs, or (null) the graph outputs
  // and the signature.
  struct Pending {
    Node* node;
  };

  Program& program_;
  Graph& graph_;  // the program's graph, or a region's
  std::string_view json_;
  const ReadLimits limits_;
  std::string where_;  // the file, and the nested graph, that errors name
  Region* region_ = nullptr;
  Graph* top_graph_ = &program_.graph_;  // where verbatim nested nodes are listed
  const Node* top_owner_ = nullptr;      // the top-level node of a region's reader
  std::size_t input_index_ = 0;          // the position of the node input being read
  // Regions found while reading, read once the graph holding them is.
  struct PendingRegion {
    Node* owner;
    std::size_t input;
    std::string_view name;
    RawJson payload;
    RawJson graph;
    std::int64_t depth;  // the JSON depth of the graph object
  };
  std::vector<PendingRegion> pending_regions_;
  od::parser parser_;
  od::document doc_;
  bool seen_graph_module_ = false;
  std::vector<NamedArgument> input_scratch_;  // readNode's inputs, before they are sized
  std::vector<std::pair<std::string_view, RawJson>> member_scratch_;  // readNode's members
  const std::vector<std::pair<std::string_view, RawJson>>* last_members_ = nullptr;
  absl::flat_hash_set<std::string_view> declared_symbols_;
  absl::flat_hash_set<std::string_view> targets_;
  absl::flat_hash_set<std::string_view> input_names_;
  std::vector<Pending> pending_;
  std::size_t next_defined_ = 0;  // tensor_values: the value the next entry likely names
  Value* hint_ = nullptr;         // the value the reference being read likely names
  bool reading_nodes_ = false;
  std::size_t next_placeholder_ = 0;  // storage index of the placeholder likely read next
};

std::unique_ptr<Program> Program::read(std::unique_ptr<Program> program, const ReadLimits& limits) {
  ProgramReader(*program, program->source_, limits).read();
  program->verify();
  return program;
}

std::unique_ptr<Program> Program::parse(std::string_view json, std::string source_name,
                                        const ReadLimits& limits) {
  auto program = std::make_unique<Program>();
  program->source_name_ = std::move(source_name);
  if (json.size() <= limits.max_json_bytes) {  // else read() reports it, before any copy
    // The copy lives in the program before parsing, so every view points into it.
    program->owned_source_.reserve(json.size() + kJsonPadding);
    program->owned_source_.assign(json);
    program->source_ = program->owned_source_;
  } else {
    program->source_ = json;
  }
  return read(std::move(program), limits);
}

std::unique_ptr<Program> Program::parseInPlace(std::string_view json, std::string source_name,
                                               const ReadLimits& limits) {
  auto program = std::make_unique<Program>();
  program->source_name_ = std::move(source_name);
  program->source_ = json;
  return read(std::move(program), limits);
}

RawJson Program::keep(std::string_view text) {
  constexpr std::size_t kBlock = 64 * 1024;
  char* at = nullptr;
  if (text.size() > kBlock / 4) {
    at = arena_large_.emplace_back(std::make_unique<char[]>(text.size())).get();
  } else {
    if (arena_blocks_.empty() || arena_used_ + text.size() > kBlock) {
      arena_blocks_.push_back(std::make_unique<char[]>(kBlock));
      arena_used_ = 0;
    }
    at = arena_blocks_.back().get() + arena_used_;
    arena_used_ += text.size();
  }
  std::copy(text.begin(), text.end(), at);
  return {at, text.size()};
}

}  // namespace exmode
