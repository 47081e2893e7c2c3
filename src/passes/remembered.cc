// A node's custom metadata as a dict of JSON members; see remembered.h.
#include "passes/remembered.h"

#include <simdjson.h>

#include <vector>

#include "exmode/error.h"
#include "program/json_text.h"

namespace exmode::passes::remembered {

namespace {

constexpr std::string_view kCustom = "custom";

// One top-level member of an object's text: where it starts (its key's quote), its key
// unescaped, and its value's text.
struct Member {
  std::size_t begin = 0;
  std::string key;
  std::string_view value;
};

[[noreturn]] void notAnObject(const Node& node) {
  throw Error(ErrorKind::kBadProgram,
              "node '" + std::string(node.name()) + "': metadata custom is not a JSON object");
}

std::size_t skipSpace(std::string_view text, std::size_t i) {
  while (i < text.size() &&
         (text[i] == ' ' || text[i] == '\n' || text[i] == '\r' || text[i] == '\t')) {
    ++i;
  }
  return i;
}

// The end of the string token starting at text[i] ('"').
std::size_t skipString(std::string_view text, std::size_t i) {
  for (++i; i < text.size() && text[i] != '"'; ++i) {
    if (text[i] == '\\') ++i;
  }
  return i + 1;
}

// The end of the value starting at text[i]: strings and nesting are skipped.
std::size_t skipValue(std::string_view text, std::size_t i) {
  int depth = 0;
  while (i < text.size()) {
    const char c = text[i];
    if (c == '"') {
      i = skipString(text, i);
      if (depth == 0) return i;
      continue;
    }
    if (c == '{' || c == '[') ++depth;
    if (c == '}' || c == ']') {
      if (depth == 0) return i;
      if (--depth == 0) return i + 1;
    }
    if (depth == 0 && c == ',') return i;
    ++i;
  }
  return i;
}

// The members of `text`, which simdjson has accepted as an object.
std::vector<Member> members(std::string_view text) {
  std::vector<Member> out;
  std::size_t i = skipSpace(text, 0) + 1;  // past '{'
  for (;;) {
    i = skipSpace(text, i);
    if (i >= text.size() || text[i] == '}') break;
    Member m;
    m.begin = i;
    const std::size_t key_end = skipString(text, i);
    m.key = json::unescapeString(text.substr(i, key_end - i));
    i = skipSpace(text, skipSpace(text, key_end) + 1);  // past ':'
    const std::size_t value_end = skipValue(text, i);
    std::size_t trimmed = value_end;
    while (trimmed > i && skipSpace(text, trimmed - 1) != trimmed - 1) --trimmed;
    m.value = text.substr(i, trimmed - i);
    out.push_back(std::move(m));
    i = skipSpace(text, value_end);
    if (i < text.size() && text[i] == ',') ++i;
  }
  return out;
}

// The custom dict's text, nullopt when the node has none; throws when it is not an object.
std::optional<std::string> customText(const Node& node) {
  if (node.metadataFieldJson(kCustom).empty()) return std::nullopt;
  std::string text = node.metadataField(kCustom);
  thread_local simdjson::dom::parser parser;
  simdjson::dom::object object;
  if (parser.parse(simdjson::padded_string(text)).get_object().get(object) != simdjson::SUCCESS) {
    notAnObject(node);
  }
  return text;
}

}  // namespace

std::optional<std::string> get(const Node& node, std::string_view key) {
  const std::optional<std::string> text = customText(node);
  if (!text) return std::nullopt;
  for (const Member& m : members(*text)) {
    if (m.key == key) return std::string(m.value);
  }
  return std::nullopt;
}

bool usable(const Node& node) {
  try {
    customText(node);
    return true;
  } catch (const Error&) {
    return false;
  }
}

void set(rewrite::Rewriter& rewriter, Node& node, std::string_view key,
         std::optional<std::string_view> json) {
  const std::optional<std::string> text = customText(node);
  std::string quoted_key;
  json::appendString(quoted_key, key);
  if (!text) {
    if (json)
      rewriter.setMetadataField(node, kCustom, "{" + quoted_key + ": " + std::string(*json) + "}");
    return;
  }
  const std::vector<Member> all = members(*text);
  std::string updated;
  std::size_t found = all.size();
  for (std::size_t i = 0; i < all.size(); ++i) {
    if (all[i].key == key) found = i;
  }
  const std::string_view t = *text;
  if (found == all.size()) {
    if (!json) return;
    // Appended before the closing brace, so the members before it keep their text.
    const std::size_t close = t.rfind('}');
    updated.append(t.substr(0, close));
    if (!all.empty()) updated += ", ";
    updated += quoted_key + ": " + std::string(*json);
    updated.append(t.substr(close));
  } else if (json) {
    const Member& m = all[found];
    const auto at = static_cast<std::size_t>(m.value.data() - t.data());
    updated.append(t.substr(0, at)).append(*json).append(t.substr(at + m.value.size()));
  } else if (all.size() == 1) {
    rewriter.setMetadataField(node, kCustom, std::nullopt);  // torch writes no empty dict
    return;
  } else {
    // Cut from the end of the previous member's value (or from this key, when first, to
    // the next key), so what is left is the text it was before this key was added.
    const Member& m = all[found];
    const std::size_t value_end =
        static_cast<std::size_t>(m.value.data() - t.data()) + m.value.size();
    std::size_t cut_begin = m.begin;
    std::size_t cut_end = value_end;
    if (found > 0) {
      const Member& prev = all[found - 1];
      cut_begin = static_cast<std::size_t>(prev.value.data() - t.data()) + prev.value.size();
    } else {
      cut_end = all[1].begin;
    }
    updated.append(t.substr(0, cut_begin)).append(t.substr(cut_end));
  }
  rewriter.setMetadataField(node, kCustom, std::move(updated));
}

}  // namespace exmode::passes::remembered
