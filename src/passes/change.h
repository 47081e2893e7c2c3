// Building the Change records the passes report.
#pragma once

#include <optional>
#include <string>

#include "exmode/passes.h"
#include "exmode/pattern.h"

namespace exmode::passes {

inline Change makeChange(const Node& node, std::string before, std::string after) {
  return {std::string(node.name()), std::string(shortTarget(node.target())), node.modulePath(),
          std::move(before), std::move(after), &node};
}

inline const char* pythonBool(bool value) { return value ? "True" : "False"; }

// The literal bool argument `name` of a mode-sensitive node. torch always writes these
// flags as literals; a missing one makes the program invalid (kBadProgram), any other kind
// of argument is something exmode cannot switch (kUnsupported). Passes throw rather than
// skip such a node, so a switch never claims a mode it did not set.
bool literalFlag(const Node& node, std::string_view name);

// A normalization site (batch norm, instance norm): with running statistics its mode is the
// literal `flag`; without them it is fixed.
Site normSite(const Node& node, bool tracks_running_stats, std::string_view flag);

// A numeric literal argument (p, momentum, eps), if the node has one.
inline std::optional<double> numberArg(const Node& node, std::string_view name) {
  const NamedArgument* in = node.input(name);
  return in == nullptr ? std::nullopt : in->arg.asDouble();
}

}  // namespace exmode::passes
