// JSON text output with Python json.dumps separators; see json_text.h.
#include "program/json_text.h"

#include <charconv>
#include <cmath>

namespace exmode::json {

void appendString(std::string& out, std::string_view text) {
  static constexpr char kHex[] = "0123456789abcdef";
  out.push_back('"');
  for (char c : text) {
    const auto u = static_cast<unsigned char>(c);
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\b':
        out += "\\b";
        break;
      case '\f':
        out += "\\f";
        break;
      default:
        if (u < 0x20) {
          out += "\\u00";
          out.push_back(kHex[u >> 4]);
          out.push_back(kHex[u & 0xF]);
        } else {
          out.push_back(c);
        }
    }
  }
  out.push_back('"');
}

void appendDouble(std::string& out, double value) {
  // torch writes infinities and NaN as the strings "Infinity"/"NaN", never as numbers, so a
  // parsed double is always finite here.
  char buf[32];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, value);
  std::string_view text(buf, static_cast<std::size_t>(end - buf));
  out += text;
  // Keep it a float for the reader: "3" would come back as an int.
  if (text.find_first_of(".eEn") == std::string_view::npos) out += ".0";
}

void appendInt(std::string& out, std::int64_t value) {
  char buf[24];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, value);
  out.append(buf, end);
}

void appendElement(std::string& out, simdjson::dom::element element) {
  using simdjson::dom::element_type;
  switch (element.type()) {
    case element_type::OBJECT: {
      out.push_back('{');
      bool first = true;
      const simdjson::dom::object object = element.get_object().value_unsafe();
      for (auto field : object) {
        if (!first) out += ", ";
        first = false;
        appendString(out, field.key);
        out += ": ";
        appendElement(out, field.value);
      }
      out.push_back('}');
      break;
    }
    case element_type::ARRAY: {
      out.push_back('[');
      bool first = true;
      const simdjson::dom::array array = element.get_array().value_unsafe();
      for (auto item : array) {
        if (!first) out += ", ";
        first = false;
        appendElement(out, item);
      }
      out.push_back(']');
      break;
    }
    case element_type::STRING:
      appendString(out, element.get_string().value_unsafe());
      break;
    case element_type::INT64:
      appendInt(out, element.get_int64().value_unsafe());
      break;
    case element_type::UINT64: {
      char buf[24];
      auto [end, ec] = std::to_chars(buf, buf + sizeof buf, element.get_uint64().value_unsafe());
      out.append(buf, end);
      break;
    }
    case element_type::DOUBLE:
      appendDouble(out, element.get_double().value_unsafe());
      break;
    case element_type::BOOL:
      out += element.get_bool().value_unsafe() ? "true" : "false";
      break;
    case element_type::NULL_VALUE:
      out += "null";
      break;
  }
}

}  // namespace exmode::json
