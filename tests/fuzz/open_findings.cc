// Tests for inputs that trigger open findings; see open_findings.h.
#include "open_findings.h"

#include <simdjson.h>

#include <set>
#include <string>

namespace exmode::fuzz {

namespace od = simdjson::ondemand;

namespace {

// The member `name` of `object` as an object; false when absent or not an object.
bool member(od::object& object, std::string_view name, od::object& out) {
  for (auto result : object) {
    od::field field;
    if (std::move(result).get(field)) return false;
    std::string_view key;
    if (field.unescaped_key().get(key)) return false;
    if (key == name) return !field.value().get_object().get(out);
  }
  return false;
}

}  // namespace

bool hasRepeatedNodeField(std::string_view json) {
  od::parser parser;
  const simdjson::padded_string padded(json);
  od::document doc;
  od::object top, graph_module, graph;
  if (parser.iterate(padded).get(doc) || doc.get_object().get(top)) return false;
  if (!member(top, "graph_module", graph_module) || !member(graph_module, "graph", graph)) {
    return false;
  }
  for (auto result : graph) {
    od::field field;
    if (std::move(result).get(field)) return false;
    std::string_view key;
    if (field.unescaped_key().get(key)) return false;
    if (key != "nodes") continue;
    od::array nodes;
    if (field.value().get_array().get(nodes)) return false;
    for (auto node_result : nodes) {
      od::object node;
      if (std::move(node_result).get_object().get(node)) return false;
      std::set<std::string, std::less<>> keys;
      for (auto member_result : node) {
        od::field node_field;
        if (std::move(member_result).get(node_field)) return false;
        std::string_view node_key;
        if (node_field.unescaped_key().get(node_key)) return false;
        if (!keys.emplace(node_key).second) return true;
      }
    }
    return false;
  }
  return false;
}

bool triggersOpenFinding(std::string_view json) { return hasRepeatedNodeField(json); }

}  // namespace exmode::fuzz
