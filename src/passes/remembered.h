// What a pass remembers across a switch, kept in a node's `custom` metadata.
//
// torch.export.load keeps only the metadata it knows; of those, `custom` (node.meta["custom"],
// a dict serialized as a JSON string) is the one meant for callers' data, and it survives a
// load followed by a save. Each pass owns one key of that dict; the other keys are kept as
// they are, byte for byte, and removing the last key removes the member, as torch writes no
// empty `custom`.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "exmode/program.h"
#include "exmode/rewrite.h"

namespace exmode::passes::remembered {

// The JSON text of `key` in the node's custom metadata, as it is written there; nullopt when
// the node has no such key. Throws Error(kBadProgram) when `custom` is not a JSON object.
std::optional<std::string> get(const Node& node, std::string_view key);

// Whether set() can change the node's custom metadata: absent, or a JSON object.
bool usable(const Node& node);

// Sets `key` to the JSON text `json`, or removes it with nullopt. `json` must be valid JSON
// written with torch's separators (it is not checked). Throws Error(kBadProgram) when
// `custom` is not a JSON object (see usable()).
void set(rewrite::Rewriter& rewriter, Node& node, std::string_view key,
         std::optional<std::string_view> json);

}  // namespace exmode::passes::remembered
