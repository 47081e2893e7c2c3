// Helpers shared by the mode passes; see change.h.
#include "passes/change.h"

#include <array>
#include <stdexcept>
#include <utility>

#include "exmode/error.h"

namespace exmode::passes {

namespace {

// The input `name` of a mode-sensitive node and its value, which must be a literal bool
// (see literalFlag).
std::pair<const NamedArgument*, bool> literalFlagInput(const Node& node, std::string_view name) {
  const NamedArgument* in = node.input(name);
  auto where = [&] {
    return "node '" + std::string(node.name()) + "' (" + std::string(shortTarget(node.target())) +
           ")";
  };
  if (in == nullptr) {
    throw Error(ErrorKind::kBadProgram, where() + " has no '" + std::string(name) + "' argument");
  }
  auto value = in->arg.asBool();
  if (!value) {
    throw Error(ErrorKind::kUnsupported, where() + ": '" + std::string(name) + "' is " +
                                             std::string(in->arg.kind) + ", not a literal bool");
  }
  return {in, *value};
}

}  // namespace

bool literalFlag(const Node& node, std::string_view name) {
  return literalFlagInput(node, name).second;
}

std::string_view flagText(std::string_view flag, bool value) {
  static constexpr std::pair<std::string_view, std::array<std::string_view, 2>> kTexts[] = {
      {"train", {"train=False", "train=True"}},
      {"training", {"training=False", "training=True"}},
      {"use_input_stats", {"use_input_stats=False", "use_input_stats=True"}},
  };
  for (const auto& [name, texts] : kTexts) {
    if (name == flag) return texts[value ? 1 : 0];
  }
  throw std::logic_error("no report text for flag '" + std::string(flag) + "'");
}

Site flagSite(const Node& node, std::string_view flag) {
  const auto [in, training] = literalFlagInput(node, flag);
  Site site{.node = &node, .state = training ? Site::State::kTrain : Site::State::kEval};
  site.flag_input = static_cast<std::size_t>(in - node.inputs().data());
  return site;
}

Site normSite(const Node& node, bool tracks_running_stats, std::string_view flag,
              SiteDetail detail) {
  Site site{.node = &node};
  if (tracks_running_stats) site = flagSite(node, flag);
  if (detail == SiteDetail::kFull) {
    site.momentum = numberArg(node, "momentum");
    site.eps = numberArg(node, "eps");
  }
  return site;
}

}  // namespace exmode::passes
