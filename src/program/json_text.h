// Writing JSON text the way torch's serializer (Python's json.dumps) lays it out:
// ", " between items and ": " after keys. Shared by the reader, which re-serializes the
// parts the IR does not model, and by the writer.
#pragma once

#include <simdjson.h>

#include <cstdint>
#include <string>
#include <string_view>

namespace exmode::json {

void appendString(std::string& out, std::string_view text);  // quoted and escaped
void appendDouble(std::string& out, double value);           // shortest round trip, stays a float
void appendInt(std::string& out, std::int64_t value);
// The content of a quoted JSON string token, unescaped. Throws std::invalid_argument when
// the token is not a valid JSON string.
std::string unescapeString(std::string_view token);
// Any parsed element, recursively.
void appendElement(std::string& out, simdjson::dom::element element);

}  // namespace exmode::json
