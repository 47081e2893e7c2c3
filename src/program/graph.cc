// Read-only queries on the IR: arguments, nodes, values and the graph's indexes.
#include <absl/strings/string_view.h>

#include <atomic>
#include <charconv>
#include <iterator>
#include <stdexcept>

#include "exmode/error.h"
#include "exmode/program.h"
#include "program/json_text.h"

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
  // Passes ask for inputs by name many times per site: the length and the last character
  // settle most comparisons before memcmp (input names share prefixes, "running_mean").
  for (const NamedArgument& in : inputs_) {
    if (in.name.size() == name.size() && (name.empty() || in.name.back() == name.back()) &&
        in.name == name) {
      return &in;
    }
  }
  return nullptr;
}

Value* Node::output() const { return outputs_.size() == 1 ? outputs_.front().tensor() : nullptr; }

RawJson Node::metadataFieldJson(std::string_view key) const {
  for (const auto& [field, token] : metadata_fields_) {
    if (field == key) return token;
  }
  return {};
}

std::string Node::metadataField(std::string_view key) const {
  for (const auto& [field, token] : metadata_fields_) {
    if (field != key) continue;
    if (token.size() < 2 || token.front() != '"') return {};  // not a string
    const std::string_view inner = token.substr(1, token.size() - 2);
    if (inner.find('\\') == std::string_view::npos) return std::string(inner);
    try {
      return json::unescapeString(token);
    } catch (const std::invalid_argument&) {
      return {};
    }
  }
  return {};
}

namespace {

// The innermost entry of nn_module_stack, "key,path,type;key,path,type;..." (outermost
// first; the path may itself hold commas), split into path and type.
std::pair<std::string_view, std::string_view> innermostModule(std::string_view stack) {
  if (stack.empty()) return {};
  const std::size_t semicolon = stack.rfind(';');
  const std::string_view entry =
      semicolon == std::string_view::npos ? stack : stack.substr(semicolon + 1);
  const std::size_t first = entry.find(',');
  const std::size_t last = entry.rfind(',');
  if (first == std::string_view::npos || last == first) return {};
  return {entry.substr(first + 1, last - first - 1), entry.substr(last + 1)};
}

// The innermost module entry of a node, read from the stack's JSON text in place (it has
// no escapes in practice; one that does is unescaped first).
template <class Part>
std::string moduleEntryPart(const Node& node, Part part) {
  const RawJson token = node.metadataFieldJson("nn_module_stack");
  if (token.size() < 2 || token.front() != '"') return {};
  const std::string_view inner = token.substr(1, token.size() - 2);
  if (inner.find('\\') == std::string_view::npos) return std::string(part(innermostModule(inner)));
  const std::string stack = node.metadataField("nn_module_stack");
  return std::string(part(innermostModule(stack)));
}

}  // namespace

std::string_view Node::modulePathView() const {
  if (module_path_known_) return module_path_;
  module_path_known_ = true;
  const RawJson token = metadataFieldJson("nn_module_stack");
  if (token.size() < 2 || token.front() != '"') return module_path_ = std::string_view("");
  const std::string_view inner = token.substr(1, token.size() - 2);
  if (inner.find('\\') != std::string_view::npos) return module_path_ = {};
  const std::string_view path = innermostModule(inner).first;
  return module_path_ = path.data() == nullptr ? std::string_view("") : path;
}

std::string Node::modulePath() const {
  return moduleEntryPart(*this, [](const auto& entry) { return entry.first; });
}

std::string Node::moduleType() const {
  return moduleEntryPart(*this, [](const auto& entry) { return entry.second; });
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

void Graph::indexInputSpecs() const {
  if (input_specs_indexed_) return;
  for (std::size_t i = 0; i < input_specs_.size(); ++i) {
    const SignatureSpec& spec = input_specs_[i];
    if (spec.value() != nullptr) input_spec_index_.emplace(spec.value(), i);
    if (spec.kind == "buffer" && !spec.target.empty() &&
        !buffer_index_.emplace(spec.target, spec.value()).second) {
      buffer_names_repeat_ = true;  // the index keeps the first: so must bufferInput's scan
    }
  }
  input_specs_indexed_ = true;
}

const SignatureSpec* Graph::inputSpecOf(const Value* value) const {
  if (region_ != nullptr) {
    // A region has no signature: an input is what the caller passes, described by the
    // caller's graph.
    if (value == nullptr || value->producer_ != nullptr) return nullptr;
    for (std::size_t i = 0; i < inputs_.size(); ++i) {
      if (inputs_[i].tensor() != value) continue;
      const Value* outer = operandOf(i);
      return outer == nullptr ? nullptr : parent_->inputSpecOf(outer);
    }
    return nullptr;
  }
  indexInputSpecs();
  auto it = input_spec_index_.find(value);
  return it == input_spec_index_.end() ? nullptr : &input_specs_[it->second];
}

Value* Graph::bufferInput(std::string_view buffer_name) const {
  if (region_ != nullptr) {
    // The region's input the caller passes the buffer to, if it does.
    const Value* outer = parent_->bufferInput(buffer_name);
    if (outer == nullptr) return nullptr;
    for (std::size_t i = 0; i < inputs_.size(); ++i) {
      if (operandOf(i) == outer) return inputs_[i].tensor();
    }
    return nullptr;
  }
  indexInputSpecs();
  auto it = buffer_index_.find(buffer_name);
  return it == buffer_index_.end() ? nullptr : it->second;
}

Value* Graph::bufferInput(std::string_view prefix, std::string_view suffix,
                          const SignatureSpec* near) const {
  indexInputSpecs();
  const SignatureSpec* const specs = input_specs_.data();
  if (near != nullptr && !buffer_names_repeat_ && near >= specs &&
      near < specs + input_specs_.size()) {
    constexpr std::size_t kLookAhead = 4;
    const auto at = static_cast<std::size_t>(near - specs);
    for (std::size_t i = at + 1; i < input_specs_.size() && i <= at + kLookAhead; ++i) {
      const SignatureSpec& spec = specs[i];
      if (spec.kind == "buffer" && spec.target.size() == prefix.size() + suffix.size() &&
          spec.target.starts_with(prefix) && spec.target.ends_with(suffix)) {
        return spec.value();
      }
    }
  }
  thread_local std::string name;
  name.assign(prefix);
  name += suffix;
  return bufferInput(name);
}

const std::vector<Node*>& Graph::nodesWithTarget(std::string_view target) const {
  if (!by_target_valid_) {
    by_target_.clear();
    for (const auto& node : nodes_) by_target_[node->target()].push_back(node.get());
    by_target_valid_ = true;
    by_target_has_erased_ = false;
  } else if (by_target_has_erased_) {
    for (auto& [key, nodes] : by_target_) {
      std::erase_if(nodes, [](const Node* n) { return n->erased_; });
    }
    by_target_has_erased_ = false;
  }
  static const std::vector<Node*> kEmpty;
  auto it = by_target_.find(target);
  return it == by_target_.end() ? kEmpty : it->second;
}

void Graph::releaseErased() {
  // The target index holds erased nodes: rebuilt when next asked for (filtering it here
  // would read every indexed node, and a switch whose sites are kept does not ask).
  if (by_target_has_erased_) by_target_valid_ = false;
  by_target_has_erased_ = false;
  // Kept as they are: the rewriter sets every field of a node it reuses (keeping the
  // capacity of its argument lists), which touches each node once instead of twice.
  spare_nodes_.splice(spare_nodes_.end(), erased_nodes_);
  // A graph that shrank for good keeps only a bounded reserve.
  constexpr std::size_t kMaxSpareNodes = 1 << 16;
  while (spare_nodes_.size() > kMaxSpareNodes) spare_nodes_.pop_back();
  if (erased_values_.empty()) return;
  std::erase_if(tensor_value_order_, [](const Value* v) { return v->erased_; });
  // Names were freed: fresh names start from the lowest suffix again, so switching a
  // program back and forth gives the same names each time.
  fresh_suffix_.clear();
  for (Value* value : erased_values_) {
    const std::uint32_t index = value->index_;
    *value = Value();
    value->index_ = index;
    free_values_.push_back(value);
  }
  erased_values_.clear();
}

Value& Graph::newValue() {
  if (free_values_.empty()) {
    Value& value = value_storage_.emplace_back();
    value.index_ = static_cast<std::uint32_t>(value_storage_.size() - 1);
    return value;
  }
  Value& value = *free_values_.back();
  free_values_.pop_back();
  return value;
}

std::uint64_t Graph::newId() {
  static std::atomic<std::uint64_t> last_id{0};
  return last_id.fetch_add(1, std::memory_order_relaxed) + 1;
}

const Node* Graph::nextNode(const Node& node) const {
  const auto next = std::next(node.self_);
  return next == nodes_.end() ? nullptr : next->get();
}

const Node* Graph::previousNode(const Node& node) const {
  return node.self_ == nodes_.begin() ? nullptr : std::prev(node.self_)->get();
}

void Graph::renumber() {
  if (!order_stale_) return;
  order_stale_ = false;
  std::size_t order = 0;
  for (auto& node : nodes_) node->order_ = order += kOrderGap;
}

bool Graph::nameTaken(std::string_view name) const {
  // torch names a region's values apart from those of the graphs around it (it traces them
  // as one graph before it splits the regions out).
  for (const Graph* g = this; g != nullptr; g = g->parent_) {
    if (g->tryGetValue(name) != nullptr) return true;
  }
  return false;
}

std::string Graph::freshName(std::string_view base) const {
  if (!nameTaken(base)) return std::string(base);
  // Suffixes already tried for this base are remembered, so naming n new values with one
  // base costs O(n), not O(n^2).
  // (abseil's string hash takes its own string_view type for heterogeneous lookup)
  auto it = fresh_suffix_.find(absl::string_view(base.data(), base.size()));
  if (it == fresh_suffix_.end()) it = fresh_suffix_.emplace(std::string(base), 0).first;
  std::size_t& next = it->second;
  std::string name(base);
  name += '_';
  const std::size_t stem = name.size();
  for (;;) {
    char digits[24];
    const auto end = std::to_chars(digits, digits + sizeof digits, ++next).ptr;
    name.resize(stem);
    name.append(digits, end);
    if (!nameTaken(name)) return name;
  }
}

}  // namespace exmode
