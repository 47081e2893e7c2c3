// The rewriter: every graph change goes through here so that uses, value names,
// tensor_values and the signature stay consistent with the nodes, and the graph's version
// moves (the by-target index is only marked for a rebuild).
#include <absl/container/inlined_vector.h>

#include <algorithm>
#include <charconv>
#include <iterator>
#include <stdexcept>

#include "exmode/error.h"
#include "exmode/rewrite.h"
#include "program/json_text.h"
#include "program/ref_text.h"

namespace exmode::rewrite {

namespace {

Argument plain(std::string_view kind, RawJson text) {
  Argument arg;
  arg.kind = kind;
  arg.payload.text = text;
  return arg;
}

}  // namespace

Argument Rewriter::tensorArg(Value& value) {
  // The name token is a reference: the writer puts the value's current name in its place,
  // so every tensor argument shares this one text and a rewrite keeps no new text.
  static constexpr std::string_view kText = "{\"name\": \"\"}";
  constexpr std::uint32_t kNameOffset = 9;  // the opening quote of ""
  static_assert(kText.substr(kNameOffset, 2) == "\"\"");
  Argument arg = plain("as_tensor", kText);
  arg.payload.refs.push_back({&value, kNameOffset, 2});
  return arg;
}

Argument Rewriter::boolArg(bool value) { return plain("as_bool", value ? "true" : "false"); }

Argument Rewriter::noneArg() { return plain("as_none", "true"); }

Argument Rewriter::intArg(std::int64_t value) {
  // Small counts and flags (an increment's 1) are static text: no arena growth per rewrite.
  static constexpr std::string_view kSmall[] = {"0", "1", "2", "3", "4", "5", "6", "7", "8", "9"};
  if (value >= 0 && value < 10) return plain("as_int", kSmall[value]);
  char text[24];
  const auto end = std::to_chars(text, text + sizeof text, value).ptr;
  return plain("as_int", program_.keep({text, static_cast<std::size_t>(end - text)}));
}

Argument Rewriter::floatArg(double value) {
  std::string text;
  json::appendDouble(text, value);
  return plain("as_float", program_.keep(std::move(text)));
}

void Rewriter::addUse(Value& value, Node& user) { value.users_.push_back(&user); }

void Rewriter::dropUse(Value& value, const Node& user) {
  auto it = std::find(value.users_.begin(), value.users_.end(), &user);
  if (it != value.users_.end()) value.users_.erase(it);
}

void Rewriter::setInput(Node& node, std::string_view input_name, Argument arg, std::size_t hint) {
  graph_.touch();
  auto& inputs = node.inputs_;
  // Input names are interned (ProgramReader): comparing them stays in cache, and the hint
  // spares reading the inputs before it.
  std::size_t at = hint < inputs.size() && inputs[hint].name == input_name ? hint : 0;
  while (at < inputs.size() && inputs[at].name != input_name) ++at;
  if (at == inputs.size()) {
    throw std::logic_error("node '" + std::string(node.name()) + "' has no input '" +
                           std::string(input_name) + "' to set");
  }
  NamedArgument& in = inputs[at];
  node.source_ = {};
  in.source = {};
  for (const Ref& ref : in.arg.payload.refs) dropUse(*ref.value, node);
  for (const Ref& ref : arg.payload.refs) addUse(*ref.value, node);
  in.arg = std::move(arg);
  if (listener_ != nullptr) listener_->inputSet(node, input_name);
}

void Rewriter::removeInput(Node& node, std::string_view input_name) {
  graph_.touch();
  for (auto it = node.inputs_.begin(); it != node.inputs_.end(); ++it) {
    if (it->name != input_name) continue;
    for (const Ref& ref : it->arg.payload.refs) dropUse(*ref.value, node);
    node.inputs_.erase(it);
    node.source_ = {};
    if (listener_ != nullptr) listener_->inputRemoved(node, input_name);
    return;
  }
}

void Rewriter::insertInput(Node& node, NamedArgument input, std::string_view before) {
  graph_.touch();
  auto at = std::find_if(node.inputs_.begin(), node.inputs_.end(),
                         [&](const NamedArgument& in) { return in.name == before; });
  for (const Ref& ref : input.arg.payload.refs) addUse(*ref.value, node);
  input.source = {};
  input.name = program_.keep(std::string(input.name));  // callers may pass temporaries
  const std::string_view name = input.name;
  node.inputs_.insert(at, std::move(input));
  node.source_ = {};
  if (listener_ != nullptr) listener_->inputSet(node, name);
}

void Rewriter::setMetadataField(Node& node, std::string_view key,
                                std::optional<std::string> value) {
  graph_.touch();
  // Metadata is a flat dict[str, str]: change the one member; the writer writes the object
  // from its members once its source text is dropped.
  RawJson text;
  if (value) {
    std::string quoted;
    json::appendString(quoted, *value);
    text = program_.keep(std::move(quoted));
  }
  auto& fields = node.metadata_fields_;
  auto it =
      std::find_if(fields.begin(), fields.end(), [&](const auto& f) { return f.first == key; });
  if (it != fields.end()) {
    if (value) {
      it->second = text;
    } else {
      fields.erase(it);
    }
  } else if (value) {
    fields.emplace_back(program_.keep(std::string(key)), text);
  }
  node.metadata_ = {};
  node.source_ = {};
  node.module_path_known_ = false;
  if (listener_ != nullptr) listener_->metadataSet(node, key);
}

void Rewriter::replaceUses(Value& from, Value& to, const Node* after) {
  graph_.touch();
  // A copy: the loop moves uses off `from`. Values have few users; kept inline.
  absl::InlinedVector<Node*, 4> users(from.users_.begin(), from.users_.end());
  if (users.size() > 1) {
    std::sort(users.begin(), users.end());
    users.erase(std::unique(users.begin(), users.end()), users.end());
  }
  for (Node* user : users) {
    if (user == to.producer_) continue;
    if (after != nullptr && user->order_ < after->order_) continue;
    for (NamedArgument& in : user->inputs_) {
      for (Ref& ref : in.arg.payload.refs) {
        if (ref.value != &from) continue;
        ref.value = &to;
        user->source_ = {};
        in.source = {};
        in.arg.source = {};
        dropUse(from, *user);
        addUse(to, *user);
        if (listener_ != nullptr) listener_->useReplaced(user, from, to);
      }
    }
  }
  // Graph outputs come after every node, so they always follow the replacement.
  for (Argument& output : graph_.outputs_) {
    for (Ref& ref : output.payload.refs) {
      if (ref.value != &from) continue;
      ref.value = &to;
      output.source = {};
      if (listener_ != nullptr) listener_->useReplaced(nullptr, from, to);
    }
  }
  for (SignatureSpec& spec : graph_.output_specs_) {
    for (Ref& ref : spec.payload.refs) {
      if (ref.value != &from) continue;
      ref.value = &to;
      spec.source = {};
    }
  }
}

void Rewriter::replaceUse(Node& user, std::size_t input, std::size_t ref, Value& to) {
  if (input >= user.inputs_.size() || ref >= user.inputs_[input].arg.payload.refs.size()) {
    throw std::logic_error("node '" + std::string(user.name()) + "' has no reference " +
                           std::to_string(ref) + " in input " + std::to_string(input));
  }
  graph_.touch();
  NamedArgument& in = user.inputs_[input];
  Ref& target = in.arg.payload.refs[ref];
  if (target.value == &to) return;
  dropUse(*target.value, user);
  target.value = &to;
  addUse(to, user);
  user.source_ = {};
  in.source = {};
  in.arg.source = {};
  // The whole input, not "from -> to": the user may read `from` elsewhere, unchanged.
  if (listener_ != nullptr) listener_->inputSet(user, in.name);
}

void Rewriter::moveTensorValues(std::span<Value* const> values, const Value* after) {
  if (after == nullptr || values.empty()) return;
  auto& order = graph_.tensor_value_order_;
  auto anchor = std::find(order.begin(), order.end(), after);
  if (anchor == order.end()) return;
  graph_.touch();
  // Taken out (they are usually at the end, where insertBefore put them), then put back.
  const auto moved = [&](const Value* v) {
    return std::find(values.begin(), values.end(), v) != values.end();
  };
  const auto anchor_index = static_cast<std::size_t>(anchor - order.begin());
  std::size_t before_anchor = 0;
  for (std::size_t i = 0; i < anchor_index; ++i) before_anchor += moved(order[i]) ? 1 : 0;
  std::erase_if(order, moved);
  const auto at = static_cast<std::ptrdiff_t>(anchor_index - before_anchor + 1);
  order.insert(order.begin() + at, values.begin(), values.end());
}

bool Rewriter::isGraphOutput(const Value& value) const {
  for (const Argument& output : graph_.outputs_) {
    for (const Ref& ref : output.payload.refs) {
      if (ref.value == &value) return true;
    }
  }
  return false;
}

void Rewriter::eraseNode(Node& node) {
  graph_.touch();
  for (const Argument& out : node.outputs_) {
    for (const Ref& ref : out.payload.refs) {
      if (!ref.value->users_.empty() || isGraphOutput(*ref.value)) {
        throw std::logic_error("cannot erase node '" + std::string(node.name()) + "': '" +
                               std::string(ref.value->name()) + "' is still used");
      }
    }
  }
  if (listener_ != nullptr) listener_->nodeErased(node);
  for (const NamedArgument& in : node.inputs_) {
    for (const Ref& ref : in.arg.payload.refs) dropUse(*ref.value, node);
  }
  retireOutputs(node.outputs_);
  node.erased_ = true;
  graph_.by_target_has_erased_ = true;
  graph_.erased_nodes_.splice(graph_.erased_nodes_.end(), graph_.nodes_, node.self_);
}

void Rewriter::setTarget(Node& node, std::string_view target) {
  graph_.touch();
  node.target_ = target;
  node.source_ = {};
  graph_.by_target_valid_ = false;
  if (listener_ != nullptr) listener_->targetSet(node);
}

Value& Rewriter::defineOutput(Node& node, std::string_view name, RawJson meta) {
  auto [slot, fresh] = graph_.values_.try_emplace(name, nullptr);
  if (!fresh) throw std::logic_error("value name '" + std::string(name) + "' is already taken");
  Value& value = graph_.newValue();
  slot->second = &value;
  value.indexed_ = true;
  value.name_ = name;
  value.producer_ = &node;
  value.tensor_meta_ = meta;
  graph_.tensor_value_order_.push_back(&value);
  node.outputs_.push_back(tensorArg(value));
  return value;
}

void Rewriter::retireOutputs(std::span<const Argument> outputs) {
  for (const Argument& out : outputs) {
    for (const Ref& ref : out.payload.refs) {
      ref.value->erased_ = true;
      ref.value->indexed_ = false;
      graph_.values_.erase(ref.value->name());
      graph_.erased_values_.push_back(ref.value);
    }
  }
}

Value& Rewriter::appendOutput(Node& node, std::string_view name, RawJson meta) {
  graph_.touch();
  Value& value = defineOutput(node, name, meta);
  node.source_ = {};
  if (listener_ != nullptr) listener_->nodeOutputsSet(node);
  return value;
}

void Rewriter::truncateOutputs(Node& node, std::size_t first) {
  if (first >= node.outputs_.size()) return;
  for (std::size_t i = first; i < node.outputs_.size(); ++i) {
    for (const Ref& ref : node.outputs_[i].payload.refs) {
      if (!ref.value->users_.empty() || isGraphOutput(*ref.value)) {
        throw std::logic_error("cannot remove output '" + std::string(ref.value->name()) +
                               "' of node '" + std::string(node.name()) + "': it is still used");
      }
    }
  }
  graph_.touch();
  retireOutputs(std::span<const Argument>(node.outputs_).subspan(first));
  node.outputs_.erase(node.outputs_.begin() + static_cast<std::ptrdiff_t>(first),
                      node.outputs_.end());
  node.source_ = {};
  if (listener_ != nullptr) listener_->nodeOutputsSet(node);
}

void Rewriter::setTensorMeta(Value& value, RawJson meta) {
  graph_.touch();
  value.tensor_meta_ = meta;
  value.tensor_entry_ = {};  // written from tensorMeta() from now on
}

Node& Rewriter::insertBefore(Node& before, NewNode&& spec) {
  graph_.touch();
  // Output names are checked before anything changes: with one output the insertion into
  // the name table below checks it, with more each is looked up first (and must differ
  // from the others).
  const auto& outputs = spec.tensor_outputs;
  for (std::size_t i = 0; outputs.size() > 1 && i < outputs.size(); ++i) {
    const std::string_view name = outputs[i].first;
    const bool repeated =
        std::any_of(outputs.begin(), outputs.begin() + static_cast<std::ptrdiff_t>(i),
                    [&](const auto& o) { return o.first == name; });
    if (repeated || graph_.tryGetValue(name) != nullptr)
      throw std::logic_error("value name '" + std::string(name) + "' is already taken");
  }
  // Built in a list of its own (a spare node of the graph, or a new one), spliced into the
  // graph once complete: a throw below leaves the graph as it was.
  Graph::NodeList holder;
  if (graph_.spare_nodes_.empty()) {
    holder.push_back(std::make_unique<Node>());
  } else {
    holder.splice(holder.begin(), graph_.spare_nodes_, graph_.spare_nodes_.begin());
  }
  Node& node = *holder.front();
  // A reused node still holds what it held when erased: every field is set here.
  node.name_ = {};
  node.outputs_.clear();
  node.metadata_ = {};
  node.source_ = {};
  node.module_path_ = {};
  node.module_path_known_ = false;
  node.erased_ = false;
  node.target_ = spec.target;
  node.inputs_.assign(std::make_move_iterator(spec.inputs.begin()),
                      std::make_move_iterator(spec.inputs.end()));
  node.metadata_fields_.assign(spec.metadata.begin(), spec.metadata.end());
  // The members torch writes, in its order; those with no text are written from the IR.
  static constexpr std::pair<std::string_view, RawJson> kMembers[] = {
      {"target", {}},
      {"inputs", {}},
      {"outputs", {}},
      {"metadata", {}},
      {"is_hop_single_tensor_return", "null"},
      {"name", {}}};
  node.members_ = kMembers;
  for (auto& [name, meta] : spec.tensor_outputs) defineOutput(node, name, meta);
  if (node.name_.empty() && !node.outputs_.empty())
    node.name_ = node.outputs_.front().tensor()->name();
  for (const NamedArgument& in : node.inputs_) {
    for (const Ref& ref : in.arg.payload.refs) addUse(*ref.value, node);
  }
  // Numbered between its neighbours when they leave a gap, else renumbered later. The
  // target index is rebuilt when next asked for: keeping it sorted here cost a binary search
  // over nodes spread through memory per insertion, and only collecting sites reads it.
  const std::size_t previous =
      before.self_ == graph_.nodes_.begin() ? 0 : (*std::prev(before.self_))->order_;
  node.self_ = holder.begin();
  graph_.nodes_.splice(before.self_, holder);
  if (!graph_.order_stale_ && before.order_ - previous >= 2) {
    node.order_ = previous + (before.order_ - previous) / 2;
  } else {
    node.order_ = before.order_;
    graph_.order_stale_ = true;
  }
  graph_.by_target_valid_ = false;
  if (listener_ != nullptr) listener_->nodeInserted(node, before);
  return node;
}

void Rewriter::addBufferMutation(Value& value, std::string_view buffer_name) {
  graph_.touch();
  // torch lists mutated inputs in input order: a buffer's place is its input spec's.
  const auto specIndex = [this](std::string_view name) -> std::size_t {
    const Value* placeholder = graph_.bufferInput(name);
    const SignatureSpec* spec = placeholder == nullptr ? nullptr : graph_.inputSpecOf(placeholder);
    return spec == nullptr ? graph_.input_specs_.size()
                           : static_cast<std::size_t>(spec - graph_.input_specs_.data());
  };
  const std::size_t mine = specIndex(buffer_name);
  std::size_t index = 0;
  while (index < graph_.output_specs_.size() &&
         graph_.output_specs_[index].kind == "buffer_mutation" &&
         specIndex(graph_.output_specs_[index].target) <= mine) {
    ++index;
  }
  Argument output = tensorArg(value);
  std::string text = "{\"arg\": ";
  SignatureSpec spec;
  spec.kind = "buffer_mutation";
  appendShifted(text, spec.payload.refs, output.payload.text, output.payload.refs);
  text += ", \"buffer_name\": ";
  json::appendString(text, buffer_name);
  text += '}';
  spec.payload.text = program_.keep(std::move(text));
  spec.target = program_.keep(std::string(buffer_name));
  const auto at = static_cast<std::ptrdiff_t>(index);
  graph_.outputs_.insert(graph_.outputs_.begin() + at, std::move(output));
  graph_.output_specs_.insert(graph_.output_specs_.begin() + at, std::move(spec));
  if (listener_ != nullptr) listener_->outputsChanged();
}

void Rewriter::removeOutput(std::size_t index) {
  graph_.touch();
  const auto at = static_cast<std::ptrdiff_t>(index);
  graph_.outputs_.erase(graph_.outputs_.begin() + at);
  graph_.output_specs_.erase(graph_.output_specs_.begin() + at);
  if (listener_ != nullptr) listener_->outputsChanged();
}

}  // namespace exmode::rewrite
