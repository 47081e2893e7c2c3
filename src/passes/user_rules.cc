// The rule file format (docs/RULES.md) and the rule set; see user_rules.h.
#include "exmode/user_rules.h"

#include <cctype>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <fstream>
#include <sstream>

#include "exmode/error.h"
#include "exmode/passes.h"
#include "exmode/pattern.h"
#include "passes/findings_internal.h"
#include "passes/user_rules_internal.h"
#include "program/json_text.h"

namespace exmode {

namespace {

constexpr std::string_view kOpsPrefix = "torch.ops.";

// A line split into tokens at blanks; a double-quoted string (with \" and \\ escapes) is one
// token however many blanks it holds, and `#` outside one starts a comment.
std::optional<std::vector<std::string>> tokens(std::string_view line) {
  std::vector<std::string> out;
  std::string current;
  bool in_token = false;
  for (std::size_t i = 0; i < line.size(); ++i) {
    const char c = line[i];
    if (c == '"') {
      in_token = true;
      current += c;
      for (++i; i < line.size() && line[i] != '"'; ++i) {
        if (line[i] == '\\' && i + 1 < line.size()) current += line[i++];
        current += line[i];
      }
      if (i == line.size()) return std::nullopt;  // unterminated string
      current += '"';
      continue;
    }
    if (c == ' ' || c == '\t' || c == '\r' || (c == '#' && !in_token)) {
      if (in_token) out.push_back(std::move(current));
      current.clear();
      in_token = false;
      if (c == '#') break;
      continue;
    }
    in_token = true;
    current += c;
  }
  if (in_token) out.push_back(std::move(current));
  return out;
}

bool identifier(std::string_view s) {
  if (s.empty() || (std::isdigit(static_cast<unsigned char>(s.front())) != 0)) return false;
  for (const char c : s) {
    if (std::isalnum(static_cast<unsigned char>(c)) == 0 && c != '_') return false;
  }
  return true;
}

// "mylib.noisy.default", "torch.ops.mylib.noisy.default", "mylib::noisy" (the default
// overload) or "mylib::noisy.out" -> the full form; nullopt when it is none of them.
std::optional<std::string> fullTarget(std::string_view text) {
  std::string dotted;
  if (const std::size_t colons = text.find("::"); colons != std::string_view::npos) {
    const std::string_view rest = text.substr(colons + 2);
    dotted = std::string(text.substr(0, colons)) + "." + std::string(rest);
    if (rest.find('.') == std::string_view::npos) dotted += ".default";
  } else {
    if (text.starts_with(kOpsPrefix)) text.remove_prefix(kOpsPrefix.size());
    dotted = std::string(text);
  }
  std::size_t parts = 0;
  std::string_view rest = dotted;
  while (true) {
    const std::size_t dot = rest.find('.');
    if (!identifier(rest.substr(0, dot))) return std::nullopt;
    ++parts;
    if (dot == std::string_view::npos) break;
    rest.remove_prefix(dot + 1);
  }
  if (parts != 3) return std::nullopt;
  return std::string(kOpsPrefix) + dotted;
}

std::optional<RuleLiteral> literal(std::string_view text) {
  RuleLiteral value;
  value.text = std::string(text);
  if (text == "True" || text == "true" || text == "False" || text == "false") {
    value.kind = RuleLiteral::Kind::kBool;
    value.boolean = text.front() == 'T' || text.front() == 't';
    return value;
  }
  if (text == "none" || text == "None") return value;
  if (text.size() >= 2 && text.front() == '"' && text.back() == '"') {
    try {
      value.string = json::unescapeString(text);
    } catch (const std::invalid_argument&) {
      return std::nullopt;
    }
    value.kind = RuleLiteral::Kind::kString;
    return value;
  }
  const char* begin = text.data() + (text.starts_with('+') ? 1 : 0);
  const char* end = text.data() + text.size();
  if (text.find_first_of(".eE") == std::string_view::npos) {
    auto [ptr, ec] = std::from_chars(begin, end, value.integer);
    if (ec != std::errc() || ptr != end || begin == end) return std::nullopt;
    value.kind = RuleLiteral::Kind::kInt;
    return value;
  }
  auto [ptr, ec] = std::from_chars(begin, end, value.number);
  if (ec != std::errc() || ptr != end || !std::isfinite(value.number)) return std::nullopt;
  value.kind = RuleLiteral::Kind::kFloat;
  return value;
}

bool sameLiteral(const RuleLiteral& a, const RuleLiteral& b) {
  if (a.kind != b.kind) return false;
  switch (a.kind) {
    case RuleLiteral::Kind::kNone:
      return true;
    case RuleLiteral::Kind::kBool:
      return a.boolean == b.boolean;
    case RuleLiteral::Kind::kInt:
      return a.integer == b.integer;
    case RuleLiteral::Kind::kFloat:
      return a.number == b.number;
    case RuleLiteral::Kind::kString:
      return a.string == b.string;
  }
  return false;
}

constexpr std::string_view kOpForm =
    "expected 'op <target> <argument> train=<literal> eval=<literal> [if <argument>==<literal> "
    "...]'";
constexpr std::string_view kAttentionForm =
    "expected 'attention_dropout <module path pattern> p=<float>'";

// The built-in pass that switches `target`, if any.
const ModePass* builtInPassOf(std::string_view target) {
  for (const ModePass* pass : modePasses()) {
    for (const std::string& t : pass->targets()) {
      if (t == target) return pass;
    }
  }
  return nullptr;
}

}  // namespace

bool RuleLiteral::matches(const Argument* arg) const {
  if (arg == nullptr || arg->isNone()) return kind == Kind::kNone;
  switch (kind) {
    case Kind::kNone:
      return false;
    case Kind::kBool:
      return arg->asBool() == boolean;
    case Kind::kInt:
    case Kind::kFloat: {
      if (arg->kind != "as_int" && arg->kind != "as_float") return false;
      const std::optional<double> v = arg->asDouble();
      return v && *v == (kind == Kind::kInt ? static_cast<double>(integer) : number);
    }
    case Kind::kString: {
      if (arg->kind != "as_string") return false;
      try {
        return json::unescapeString(arg->payload.text) == string;
      } catch (const std::invalid_argument&) {
        return false;
      }
    }
  }
  return false;
}

UserRules::UserRules() = default;
UserRules::~UserRules() = default;
UserRules::UserRules(const UserRules&) = default;
UserRules& UserRules::operator=(const UserRules&) = default;

void UserRules::addOpRule(OpRule rule) {
  for (const OpRule& r : op_rules_) {
    if (r.target == rule.target) {
      throw Error(ErrorKind::kUsage, rule.where + ": a second rule for " +
                                         std::string(shortTarget(rule.target)) +
                                         " (the first is at " + r.where + ")");
    }
  }
  passes_.push_back(passes::makeOpRulePass(rule));
  pass_views_.push_back(passes_.back().get());
  op_rules_.push_back(std::move(rule));
}

void UserRules::add(std::string_view text, std::string_view source) {
  std::size_t line_number = 0;
  while (!text.empty()) {
    const std::size_t newline = text.find('\n');
    const std::string_view line = text.substr(0, newline);
    text = newline == std::string_view::npos ? std::string_view{} : text.substr(newline + 1);
    ++line_number;
    const std::string where = std::string(source) + ":" + std::to_string(line_number);
    auto fail = [&](const std::string& what) -> void {
      throw Error(ErrorKind::kUsage, where + ": " + what);
    };
    const std::optional<std::vector<std::string>> split = tokens(line);
    if (!split) fail("a string is not closed");
    const std::vector<std::string>& t = *split;
    if (t.empty()) continue;
    const std::string& keyword = t[0];
    if (keyword == "op") {
      OpRule rule{.where = where};
      if (t.size() < 2) fail("missing the target (" + std::string(kOpForm) + ")");
      const std::optional<std::string> target = fullTarget(t[1]);
      if (!target) {
        fail("'" + t[1] +
             "' is not an op target (namespace.name.overload, such as mylib.noisy.default, "
             "or mylib::noisy)");
      }
      rule.target = *target;
      if (const ModePass* pass = builtInPassOf(rule.target)) {
        fail(std::string(shortTarget(rule.target)) + " is switched by exmode's built-in " +
             std::string(pass->name()) + " pass; a rule cannot replace it");
      }
      if (t.size() < 3 || t[2].find('=') != std::string::npos) {
        fail("missing the argument that carries the mode (" + std::string(kOpForm) + ")");
      }
      if (!identifier(t[2])) fail("'" + t[2] + "' is not an argument name");
      rule.argument = t[2];
      bool has_train = false;
      bool has_eval = false;
      std::size_t i = 3;
      for (; i < t.size() && t[i] != "if"; ++i) {
        const std::size_t eq = t[i].find('=');
        const std::string field = t[i].substr(0, eq);
        if (eq == std::string::npos || (field != "train" && field != "eval")) {
          fail("unknown field '" + t[i] + "' (" + std::string(kOpForm) + ")");
        }
        bool& seen = field == "train" ? has_train : has_eval;
        if (seen) fail("'" + field + "=' given twice");
        seen = true;
        const std::optional<RuleLiteral> value = literal(std::string_view(t[i]).substr(eq + 1));
        if (!value) {
          fail("'" + t[i].substr(eq + 1) +
               "' is not a literal (True, False, an int, a float, a \"string\" or none)");
        }
        (field == "train" ? rule.train : rule.eval) = *value;
      }
      if (!has_train) fail("missing train=<literal> (" + std::string(kOpForm) + ")");
      if (!has_eval) fail("missing eval=<literal> (" + std::string(kOpForm) + ")");
      if (sameLiteral(rule.train, rule.eval)) fail("train and eval values are the same");
      if (i < t.size() && i + 1 == t.size()) fail("'if' without a condition");
      for (++i; i < t.size(); ++i) {
        const std::size_t op = t[i].find_first_of("=!");
        RuleCondition c;
        if (op == std::string::npos || op + 1 >= t[i].size() || t[i][op + 1] != '=') {
          fail("'" + t[i] + "' is not a condition (<argument>==<literal> or !=)");
        }
        c.argument = t[i].substr(0, op);
        c.equal = t[i][op] == '=';
        if (!identifier(c.argument)) fail("'" + c.argument + "' is not an argument name");
        if (c.argument == rule.argument) fail("a condition on the mode argument itself");
        const std::optional<RuleLiteral> value = literal(std::string_view(t[i]).substr(op + 2));
        if (!value) fail("'" + t[i].substr(op + 2) + "' is not a literal");
        c.value = *value;
        rule.conditions.push_back(std::move(c));
      }
      addOpRule(std::move(rule));
    } else if (keyword == "attention_dropout") {
      AttentionDropoutRule rule{.where = where};
      if (t.size() < 2 || t[1].starts_with("p=")) {
        fail("missing the module path pattern (" + std::string(kAttentionForm) + ")");
      }
      rule.pattern = t[1];
      if (t.size() < 3) fail("missing p=<float> (" + std::string(kAttentionForm) + ")");
      if (t.size() > 3 || !t[2].starts_with("p=")) {
        fail("unknown field '" + (t.size() > 3 && t[2].starts_with("p=") ? t[3] : t[2]) + "' (" +
             std::string(kAttentionForm) + ")");
      }
      const std::optional<RuleLiteral> value = literal(std::string_view(t[2]).substr(2));
      if (!value ||
          (value->kind != RuleLiteral::Kind::kFloat && value->kind != RuleLiteral::Kind::kInt)) {
        fail("'" + t[2].substr(2) + "' is not a number");
      }
      rule.p = value->kind == RuleLiteral::Kind::kInt ? static_cast<double>(value->integer)
                                                      : value->number;
      if (!(rule.p > 0.0 && rule.p <= 1.0)) fail("p=" + t[2].substr(2) + " is not in (0, 1]");
      for (const AttentionDropoutRule& r : attention_rules_) {
        if (r.pattern == rule.pattern) {
          fail("a second attention_dropout rule for '" + rule.pattern + "' (the first is at " +
               r.where + ")");
        }
      }
      attention_rules_.push_back(std::move(rule));
    } else if (keyword == "drop_path") {
      fail(
          "drop_path rules are not supported: an eval export keeps no node of a drop path, so "
          "where it was cannot be found from the graph (docs/RULES.md)");
    } else {
      fail("unknown keyword '" + keyword + "' (expected op or attention_dropout)");
    }
  }
}

void UserRules::addFile(const std::filesystem::path& path) {
  // A rule file is part of the command line: one that cannot be read is a usage error.
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) {
    throw Error(ErrorKind::kUsage, path.string() + ": cannot read the rule file: a directory");
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    throw Error(ErrorKind::kUsage, path.string() + ": cannot read the rule file: " +
                                       std::generic_category().message(errno));
  }
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) throw Error(ErrorKind::kUsage, path.string() + ": cannot read the rule file");
  add(text.str(), path.string());
}

void UserRules::add(const UserRules& other) {
  for (const OpRule& rule : other.op_rules_) addOpRule(rule);
  for (const AttentionDropoutRule& rule : other.attention_rules_) {
    for (const AttentionDropoutRule& r : attention_rules_) {
      if (r.pattern == rule.pattern) {
        throw Error(ErrorKind::kUsage, rule.where + ": a second attention_dropout rule for '" +
                                           rule.pattern + "' (the first is at " + r.where + ")");
      }
    }
    attention_rules_.push_back(rule);
  }
}

const AttentionDropoutRule* UserRules::attentionRuleFor(const Node& node) const {
  if (attention_rules_.empty()) return nullptr;
  std::vector<std::string_view> paths;
  const std::string stack = node.metadataField("nn_module_stack");
  passes::modulePaths(stack, paths);
  const AttentionDropoutRule* found = nullptr;
  for (const AttentionDropoutRule& rule : attention_rules_) {
    bool matched = false;
    for (std::string_view path : paths) matched = matched || passes::pathMatch(rule.pattern, path);
    if (!matched) continue;
    if (found != nullptr && found->p != rule.p) {
      throw Error(ErrorKind::kUsage, "node '" + std::string(node.name()) + "' is under rules " +
                                         found->where + " and " + rule.where +
                                         ", which give different p");
    }
    if (found == nullptr) found = &rule;
  }
  return found;
}

std::string UserRules::text() const {
  std::string out;
  for (const OpRule& r : op_rules_) {
    out += "op " + std::string(shortTarget(r.target)) + " " + r.argument +
           " train=" + r.train.text + " eval=" + r.eval.text;
    if (!r.conditions.empty()) out += " if";
    for (const RuleCondition& c : r.conditions) {
      out += " " + c.argument + (c.equal ? "==" : "!=") + c.value.text;
    }
    out += "\n";
  }
  for (const AttentionDropoutRule& r : attention_rules_) {
    std::string p;
    json::appendDouble(p, r.p);
    out += "attention_dropout " + r.pattern + " p=" + p + "\n";
  }
  return out;
}

}  // namespace exmode
