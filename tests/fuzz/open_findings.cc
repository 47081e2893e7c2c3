// Tests for inputs that trigger open findings; see open_findings.h.
#include "open_findings.h"

#include <set>
#include <string>
#include <vector>

namespace exmode::fuzz {

namespace {

// One open object or array while scanning.
struct Container {
  bool object = false;
  std::string key;  // the member name (or "[]" for an array element) it is the value of
  std::set<std::string_view> keys;  // objects: member names seen so far
  std::string_view last_string;     // objects: the last string, a name if ':' follows
};

bool isNode(const std::vector<Container>& stack) {
  return stack.size() == 5 && stack[1].key == "graph_module" && stack[2].key == "graph" &&
         stack[3].key == "nodes" && !stack[3].object && stack[4].object && stack[4].key == "[]";
}

}  // namespace

// A scan of the text's structure as the program reader sees it: strings (with escapes),
// brackets, and names (a string followed by ':'), without checking anything else, since
// the reader skips what it keeps verbatim by its brackets alone.
bool hasRepeatedNodeField(std::string_view json) {
  std::vector<Container> stack;
  std::string pending_key;
  for (std::size_t i = 0; i < json.size(); ++i) {
    const char c = json[i];
    if (c == '"') {
      const std::size_t start = i + 1;
      for (++i; i < json.size() && json[i] != '"'; ++i) {
        if (json[i] == '\\') ++i;
      }
      if (!stack.empty()) stack.back().last_string = json.substr(start, i - start);
    } else if (c == ':') {
      if (stack.empty() || !stack.back().object) continue;
      Container& top = stack.back();
      pending_key = std::string(top.last_string);
      if (!top.keys.insert(top.last_string).second && isNode(stack)) return true;
    } else if (c == '{' || c == '[') {
      Container next;
      next.object = c == '{';
      next.key = stack.empty() ? "" : stack.back().object ? pending_key : "[]";
      stack.push_back(std::move(next));
    } else if (c == '}' || c == ']') {
      if (!stack.empty()) stack.pop_back();
    }
  }
  return false;
}

bool triggersOpenFinding(std::string_view json) { return hasRepeatedNodeField(json); }

}  // namespace exmode::fuzz
