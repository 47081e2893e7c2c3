// Building the Change records the passes report.
#pragma once

#include <string>

#include "exmode/passes.h"
#include "exmode/pattern.h"

namespace exmode::passes {

inline Change makeChange(const Node& node, std::string before, std::string after) {
  return {node.name(), std::string(rewrite::shortTarget(node.target())), node.modulePath(),
          std::move(before), std::move(after)};
}

inline const char* pythonBool(bool value) { return value ? "True" : "False"; }

}  // namespace exmode::passes
