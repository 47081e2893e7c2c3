// Read-only queries on the IR: arguments, nodes, values and the graph's indexes.
#include <simdjson.h>

#include <charconv>

#include "exmode/error.h"
#include "exmode/program.h"

namespace exmode {

std::string_view shortTarget(std::string_view target) {
  if (target.substr(0, kOpTargetPrefix.size()) == kOpTargetPrefix)
    target.remove_prefix(kOpTargetPrefix.size());
  return target;
}

Value* Argument::tensor() const {
  if ((kind == "as_tensor" || kind == "as_optional_tensor") && payload.refs.size() == 1) {
    return payload.refs.front().value;
  }
  return nullptr;
}

std::optional<bool> Argument::asBool() const {
  if (kind != "as_bool") return std::nullopt;
  if (payload.text == "true") return true;
  if (payload.text == "false") return false;
  return std::nullopt;
}

std::optional<double> Argument::asDouble() const {
  if (kind != "as_float" && kind != "as_int") return std::nullopt;
  double value = 0;
  const char* end = payload.text.data() + payload.text.size();
  auto [ptr, ec] = std::from_chars(payload.text.data(), end, value);
  if (ec != std::errc() || ptr != end) return std::nullopt;  // "Infinity", "NaN" strings
  return value;
}

std::optional<std::int64_t> Argument::asInt() const {
  if (kind != "as_int") return std::nullopt;
  std::int64_t value = 0;
  const char* end = payload.text.data() + payload.text.size();
  auto [ptr, ec] = std::from_chars(payload.text.data(), end, value);
  if (ec != std::errc() || ptr != end) return std::nullopt;
  return value;
}

const NamedArgument* Node::input(std::string_view name) const {
  for (const NamedArgument& in : inputs_) {
    if (in.name == name) return &in;
  }
  return nullptr;
}

Value* Node::output() const { return outputs_.size() == 1 ? outputs_.front().tensor() : nullptr; }

std::string Node::metadataField(std::string_view key) const {
  if (metadata_.empty()) return {};
  simdjson::dom::parser parser;
  simdjson::padded_string padded(metadata_);
  std::string_view value;
  if (parser.parse(padded).at_key(key).get_string().get(value) != simdjson::SUCCESS) return {};
  return std::string(value);
}

namespace {

// The innermost entry of nn_module_stack, "key,path,type;key,path,type;..." (outermost
// first; the path may itself hold commas), split into path and type.
std::pair<std::string, std::string> innermostModule(const std::string& stack) {
  if (stack.empty()) return {};
  const std::size_t start = stack.rfind(';') == std::string::npos ? 0 : stack.rfind(';') + 1;
  const std::string_view entry = std::string_view(stack).substr(start);
  const std::size_t first = entry.find(',');
  const std::size_t last = entry.rfind(',');
  if (first == std::string_view::npos || last == first) return {};
  return {std::string(entry.substr(first + 1, last - first - 1)),
          std::string(entry.substr(last + 1))};
}

}  // namespace

std::string Node::modulePath() const {
  return innermostModule(metadataField("nn_module_stack")).first;
}

std::string Node::moduleType() const {
  return innermostModule(metadataField("nn_module_stack")).second;
}

Value* Graph::tryGetValue(std::string_view name) const {
  auto it = values_.find(name);
  return it == values_.end() ? nullptr : it->second;
}

Value& Graph::getValue(std::string_view name) const {
  Value* value = tryGetValue(name);
  if (value == nullptr) {
    throw Error(ErrorKind::kBadProgram, "no value named '" + std::string(name) + "'");
  }
  return *value;
}

const SignatureSpec* Graph::inputSpecOf(const Value* value) const {
  for (const SignatureSpec& spec : input_specs_) {
    if (spec.value() == value) return &spec;
  }
  return nullptr;
}

Value* Graph::bufferInput(std::string_view buffer_name) const {
  for (const SignatureSpec& spec : input_specs_) {
    if (spec.kind == "buffer" && spec.target == buffer_name) return spec.value();
  }
  return nullptr;
}

const std::vector<Node*>& Graph::nodesWithTarget(std::string_view target) const {
  if (!by_target_valid_) {
    by_target_.clear();
    for (const auto& node : nodes_) by_target_[node->target()].push_back(node.get());
    by_target_valid_ = true;
  }
  static const std::vector<Node*> kEmpty;
  auto it = by_target_.find(std::string(target));
  return it == by_target_.end() ? kEmpty : it->second;
}

void Graph::renumber() {
  std::size_t i = 0;
  for (auto& node : nodes_) node->order_ = i++;
}

std::string Graph::freshName(std::string_view base) const {
  if (tryGetValue(base) == nullptr) return std::string(base);
  for (std::size_t i = 1;; ++i) {
    std::string name = std::string(base) + "_" + std::to_string(i);
    if (tryGetValue(name) == nullptr) return name;
  }
}

}  // namespace exmode
