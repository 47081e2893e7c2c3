// JSON text output with Python json.dumps separators; see json_text.h.
#include "program/json_text.h"

#include <array>
#include <charconv>
#include <cmath>
#include <stdexcept>
#include <vector>

namespace exmode::json {

namespace {

constexpr char kHex[] = "0123456789abcdef";

// The bytes json.dumps(ensure_ascii=True) writes as they are: printable ASCII but '"' and
// '\\'. A table: one load per byte in the scan of plain runs.
constexpr std::array<bool, 256> kPlain = [] {
  std::array<bool, 256> plain{};
  for (int c = 0x20; c < 0x7F; ++c) plain[static_cast<std::size_t>(c)] = c != '"' && c != '\\';
  return plain;
}();

void appendEscapedUnit(std::string& out, std::uint32_t unit) {
  out += "\\u";
  for (int shift = 12; shift >= 0; shift -= 4) out.push_back(kHex[(unit >> shift) & 0xF]);
}

// Decodes one UTF-8 sequence at text[i]; returns its length, or 0 when it is not valid.
std::size_t decodeUtf8(std::string_view text, std::size_t i, std::uint32_t& code) {
  const auto lead = static_cast<unsigned char>(text[i]);
  const std::size_t length = lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : lead >= 0xC0 ? 2 : 0;
  if (length == 0 || i + length > text.size()) return 0;
  code = lead & (0x7F >> length);
  for (std::size_t k = 1; k < length; ++k) {
    const auto c = static_cast<unsigned char>(text[i + k]);
    if ((c & 0xC0) != 0x80) return 0;
    code = (code << 6) | (c & 0x3F);
  }
  return length;
}

}  // namespace

// As json.dumps with ensure_ascii: everything outside printable ASCII is escaped.
void appendString(std::string& out, std::string_view text) {
  out.push_back('"');
  // Names are plain ASCII almost always: copy the run that needs no escape at once.
  std::size_t plain = 0;
  while (plain < text.size() && kPlain[static_cast<unsigned char>(text[plain])]) ++plain;
  out.append(text.data(), plain);
  for (std::size_t i = plain; i < text.size(); ++i) {
    const char c = text[i];
    const auto u = static_cast<unsigned char>(c);
    switch (c) {
      case '"':
        out += "\\\"";
        continue;
      case '\\':
        out += "\\\\";
        continue;
      case '\n':
        out += "\\n";
        continue;
      case '\r':
        out += "\\r";
        continue;
      case '\t':
        out += "\\t";
        continue;
      case '\b':
        out += "\\b";
        continue;
      case '\f':
        out += "\\f";
        continue;
      default:
        break;
    }
    if (u >= 0x20 && u < 0x7F) {
      out.push_back(c);
      continue;
    }
    std::uint32_t code = u;
    const std::size_t length = u >= 0x80 ? decodeUtf8(text, i, code) : 1;
    if (length == 0) {  // not UTF-8 (the parser validates input, so only from callers)
      out.push_back(c);
      continue;
    }
    i += length - 1;
    if (code >= 0x10000) {
      code -= 0x10000;
      appendEscapedUnit(out, 0xD800 + (code >> 10));
      appendEscapedUnit(out, 0xDC00 + (code & 0x3FF));
    } else {
      appendEscapedUnit(out, code);
    }
  }
  out.push_back('"');
}

// As Python's repr(float): the shortest digits that round-trip, in positional notation for
// decimal exponents from -4 to 15 (with ".0" when there is no fraction), otherwise as
// d.ddde+XX. torch writes infinities and NaN as the strings "Infinity", "-Infinity", "NaN".
void appendDouble(std::string& out, double value) {
  if (std::isnan(value)) {
    out += "\"NaN\"";
    return;
  }
  if (std::isinf(value)) {
    out += value > 0 ? "\"Infinity\"" : "\"-Infinity\"";
    return;
  }
  char buf[32];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, value, std::chars_format::scientific);
  std::string_view text(buf, static_cast<std::size_t>(end - buf));
  if (text.front() == '-') {
    out.push_back('-');
    text.remove_prefix(1);
  }
  const std::size_t e = text.find('e');
  std::string digits;
  for (char c : text.substr(0, e)) {
    if (c != '.') digits.push_back(c);
  }
  int exponent = 0;
  const std::string_view exponent_text = text.substr(e + 1);
  std::from_chars(exponent_text.data() + (exponent_text.front() == '+' ? 1 : 0),
                  exponent_text.data() + exponent_text.size(), exponent);
  const int point = exponent + 1;  // digits before the decimal point
  const auto count = static_cast<int>(digits.size());
  if (point < -3 || point > 16) {
    out.push_back(digits[0]);
    if (count > 1) {
      out.push_back('.');
      out.append(digits, 1);
    }
    out += exponent < 0 ? "e-" : "e+";
    const int magnitude = exponent < 0 ? -exponent : exponent;
    if (magnitude < 10) out.push_back('0');
    appendInt(out, magnitude);
  } else if (point <= 0) {
    out += "0.";
    out.append(static_cast<std::size_t>(-point), '0');
    out += digits;
  } else if (point >= count) {
    out += digits;
    out.append(static_cast<std::size_t>(point - count), '0');
    out += ".0";
  } else {
    out.append(digits, 0, static_cast<std::size_t>(point));
    out.push_back('.');
    out.append(digits, static_cast<std::size_t>(point));
  }
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

std::string unescapeString(std::string_view token) {
  // simdjson's string decoding, on a padded copy: tokens with escapes are rare (metadata
  // text, never names torch writes), so the copy does not matter.
  std::string result;
  bool ok = false;
  {
    thread_local simdjson::dom::parser parser;  // reused: allocating one costs more than a parse
    std::string_view text;
    ok = parser.parse(simdjson::padded_string(token)).get_string().get(text) == simdjson::SUCCESS;
    if (ok) result = text;
  }
  if (!ok) throw std::invalid_argument("not a JSON string");
  return result;
}

std::optional<std::string> withMembers(
    std::string_view object,
    std::initializer_list<std::pair<std::string_view, std::string_view>> replacements) {
  thread_local simdjson::dom::parser parser;
  simdjson::dom::object parsed;
  if (parser.parse(simdjson::padded_string(object)).get_object().get(parsed) != simdjson::SUCCESS)
    return std::nullopt;
  std::string out = "{";
  std::vector<bool> used(replacements.size(), false);
  auto member = [&](std::string_view key, auto&& write_value) {
    if (out.size() > 1) out += ", ";
    appendString(out, key);
    out += ": ";
    write_value();
  };
  for (auto field : parsed) {
    std::size_t i = 0;
    const std::pair<std::string_view, std::string_view>* replaced = nullptr;
    for (const auto& r : replacements) {
      if (r.first == field.key) {
        replaced = &r;
        used[i] = true;
      }
      ++i;
    }
    member(field.key, [&] {
      if (replaced != nullptr) {
        out += replaced->second;
      } else {
        appendElement(out, field.value);
      }
    });
  }
  std::size_t i = 0;
  for (const auto& r : replacements) {
    if (!used[i++]) member(r.first, [&] { out += r.second; });
  }
  out += '}';
  return out;
}

}  // namespace exmode::json
