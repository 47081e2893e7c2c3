// Building the Change records the passes report.
#pragma once

#include <optional>
#include <string>

#include "exmode/passes.h"
#include "exmode/pattern.h"

namespace exmode::passes {

// `before` and `after` must outlive the program: literals, or text kept by the rewriter.
inline Change makeChange(rewrite::Rewriter& rewriter, const Node& node, std::string_view before,
                         std::string_view after) {
  std::string_view module = node.modulePathView();
  if (module.data() == nullptr) module = rewriter.keep(node.modulePath());
  return {node.name(), shortTarget(node.target()), module, before, after, &node};
}

// "<flag>=True" or "<flag>=False" for the flags passes report, as static text.
std::string_view flagText(std::string_view flag, bool value);

// The literal bool argument `name` of a mode-sensitive node. torch always writes these
// flags as literals; a missing one makes the program invalid (kBadProgram), any other kind
// of argument is something exmode cannot switch (kUnsupported). Passes throw rather than
// skip such a node, so a switch never claims a mode it did not set.
bool literalFlag(const Node& node, std::string_view name);

// A site whose mode is the literal bool input `flag` (see literalFlag), with where the flag is.
Site flagSite(const Node& node, std::string_view flag);

// The state of a site switched to `mode`.
inline Site::State siteState(Mode mode) {
  return mode == Mode::kTrain ? Site::State::kTrain : Site::State::kEval;
}

// A normalization site (batch norm, instance norm): with running statistics its mode is the
// literal `flag`; without them it is fixed.
Site normSite(const Node& node, bool tracks_running_stats, std::string_view flag,
              SiteDetail detail);

// A numeric literal argument (p, momentum, eps), if the node has one.
inline std::optional<double> numberArg(const Node& node, std::string_view name) {
  const NamedArgument* in = node.input(name);
  return in == nullptr ? std::nullopt : in->arg.asDouble();
}

}  // namespace exmode::passes
