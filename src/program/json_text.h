// Writing JSON text the way torch's serializer (Python's json.dumps) lays it out:
// ", " between items and ": " after keys. Shared by the reader, which re-serializes the
// parts the IR does not model, and by the writer.
#pragma once

#include <simdjson.h>

#include <cstdint>
#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

namespace exmode::json {

void appendString(std::string& out, std::string_view text);  // quoted and escaped
void appendDouble(std::string& out, double value);           // shortest round trip, stays a float
void appendInt(std::string& out, std::int64_t value);
// The content of a quoted JSON string token, unescaped. Throws std::invalid_argument when
// the token is not a valid JSON string.
std::string unescapeString(std::string_view token);
// Any parsed element, recursively.
void appendElement(std::string& out, simdjson::dom::element element);
// `object` (the text of a JSON object) with the members in `replacements` (key, JSON text of
// the value) set: replaced where present, appended otherwise; the other members keep their
// order. nullopt when `object` is not a JSON object.
std::optional<std::string> withMembers(
    std::string_view object,
    std::initializer_list<std::pair<std::string_view, std::string_view>> replacements);

}  // namespace exmode::json
