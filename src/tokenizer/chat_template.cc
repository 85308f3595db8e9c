// Glm5ChatTemplate: the GLM-5/5.1 chat_template.jinja written out as code. Each step names the
// template construct it reproduces; the Python/Jinja semantics it depends on (str.strip's idea of
// whitespace, json.dumps' separators and float format, None printing as nothing under
// transformers) are implemented here rather than approximated, since goldens compare bytes.
#include "tokenizer/chat_template.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "tokenizer/bpe_tokenizer.h"
#include "util/atomic_file.h"
#include "util/error.h"

namespace whittle {

namespace {

using ojson = nlohmann::ordered_json;

// Python's str.isspace() set, which str.strip() removes.
bool is_python_space(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 ||
         c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F ||
         c == 0x205F || c == 0x3000;
}

// Decodes the code point at s[i] of valid UTF-8; sets *len.
char32_t code_point_at(std::string_view s, size_t i, size_t* len) {
  const auto b = [&](size_t k) { return static_cast<char32_t>(static_cast<uint8_t>(s[i + k])); };
  const char32_t b0 = b(0);
  if (b0 < 0x80) {
    *len = 1;
    return b0;
  }
  if (b0 < 0xE0) {
    *len = 2;
    return ((b0 & 0x1F) << 6) | (b(1) & 0x3F);
  }
  if (b0 < 0xF0) {
    *len = 3;
    return ((b0 & 0x0F) << 12) | ((b(1) & 0x3F) << 6) | (b(2) & 0x3F);
  }
  *len = 4;
  return ((b0 & 0x07) << 18) | ((b(1) & 0x3F) << 12) | ((b(2) & 0x3F) << 6) | (b(3) & 0x3F);
}

std::string python_strip(std::string_view s) {
  size_t begin = 0, end = s.size();
  while (begin < end) {
    size_t len;
    if (!is_python_space(code_point_at(s, begin, &len))) break;
    begin += len;
  }
  while (end > begin) {
    size_t start = end - 1;
    while (start > begin && (static_cast<uint8_t>(s[start]) & 0xC0) == 0x80) --start;
    size_t len;
    if (!is_python_space(code_point_at(s, start, &len))) break;
    end = start;
  }
  return std::string(s.substr(begin, end - begin));
}

std::string strip_newlines_left(std::string_view s) {
  const size_t first = s.find_first_not_of('\n');
  return first == std::string_view::npos ? std::string() : std::string(s.substr(first));
}

std::string strip_newlines_right(std::string_view s) {
  const size_t last = s.find_last_not_of('\n');
  return last == std::string_view::npos ? std::string() : std::string(s.substr(0, last + 1));
}

// Python's repr(float): the shortest digits that round-trip, fixed notation for decimal exponents
// in [-4, 16), scientific otherwise, and ".0" on integral values.
std::string python_float_repr(double value) {
  if (std::isnan(value)) return "NaN";
  if (std::isinf(value)) return value > 0 ? "Infinity" : "-Infinity";
  if (value == 0) return std::signbit(value) ? "-0.0" : "0.0";
  char buffer[40];
  int precision = 1;
  for (; precision <= 17; ++precision) {
    std::snprintf(buffer, sizeof buffer, "%.*e", precision - 1, value);
    if (std::strtod(buffer, nullptr) == value) break;
  }
  // buffer = [-]d.ddde[+-]XX
  std::string text(buffer);
  const bool negative = text[0] == '-';
  if (negative) text.erase(0, 1);
  const size_t e = text.find('e');
  std::string digits = text.substr(0, e);
  digits.erase(std::remove(digits.begin(), digits.end(), '.'), digits.end());
  while (digits.size() > 1 && digits.back() == '0') digits.pop_back();
  const int exponent = std::atoi(text.c_str() + e + 1);
  const int point = exponent + 1;  // digits before the decimal point
  std::string out = negative ? "-" : "";
  if (exponent >= -4 && exponent < 16) {
    if (point <= 0) {
      out += "0." + std::string(-point, '0') + digits;
    } else if (static_cast<size_t>(point) >= digits.size()) {
      out += digits + std::string(point - digits.size(), '0') + ".0";
    } else {
      out += digits.substr(0, point) + "." + digits.substr(point);
    }
  } else {
    out += digits.substr(0, 1);
    if (digits.size() > 1) out += "." + digits.substr(1);
    char exp_text[16];
    std::snprintf(exp_text, sizeof exp_text, "e%c%02d", exponent < 0 ? '-' : '+',
                  std::abs(exponent));
    out += exp_text;
  }
  return out;
}

void dump_python_json(const ojson& value, std::string& out) {
  switch (value.type()) {
    case ojson::value_t::object: {
      out += '{';
      bool first = true;
      for (const auto& [key, item] : value.items()) {
        if (!first) out += ", ";
        first = false;
        out += ojson(key).dump(-1, ' ', false);
        out += ": ";
        dump_python_json(item, out);
      }
      out += '}';
      return;
    }
    case ojson::value_t::array: {
      out += '[';
      for (size_t i = 0; i < value.size(); ++i) {
        if (i) out += ", ";
        dump_python_json(value[i], out);
      }
      out += ']';
      return;
    }
    case ojson::value_t::number_float:
      out += python_float_repr(value.get<double>());
      return;
    default:
      // Strings, integers, booleans and null print the same in nlohmann and Python (control
      // characters as \uXXXX or the short escapes, non-ASCII kept as is).
      out += value.dump(-1, ' ', false);
      return;
  }
}

// Python truthiness of a JSON value, as Jinja's `if` sees it.
bool truthy(const ojson& value) {
  switch (value.type()) {
    case ojson::value_t::null:
      return false;
    case ojson::value_t::boolean:
      return value.get<bool>();
    case ojson::value_t::string:
      return !value.get_ref<const std::string&>().empty();
    case ojson::value_t::array:
    case ojson::value_t::object:
      return !value.empty();
    case ojson::value_t::number_float:
      return value.get<double>() != 0.0;
    default:
      return value != 0;
  }
}

// `{{ value }}` for a scalar: Python's str(), with None printing as nothing (transformers renders
// templates with a finalize that drops None).
std::string jinja_print(const ojson& value, const std::string& what) {
  switch (value.type()) {
    case ojson::value_t::string:
      return value.get<std::string>();
    case ojson::value_t::null:
      return "";
    case ojson::value_t::boolean:
      return value.get<bool>() ? "True" : "False";
    case ojson::value_t::number_float:
      return python_float_repr(value.get<double>());
    case ojson::value_t::number_integer:
    case ojson::value_t::number_unsigned:
      return value.dump();
    default:
      fail("chat template: {} is a JSON {}; expected a string", what, value.type_name());
  }
}

const ojson* field(const ojson& object, const char* key) {
  if (!object.is_object()) return nullptr;
  auto it = object.find(key);
  return it == object.end() ? nullptr : &*it;
}

// The template's visible_text macro: a string, or the text parts of a content list.
std::string visible_text(const ojson& content, const std::string& what) {
  if (content.is_array()) {
    std::string out;
    for (const ojson& item : content) {
      if (item.is_object()) {
        const ojson* type = field(item, "type");
        if (type && *type == "text") {
          const ojson* text = field(item, "text");
          if (text) out += jinja_print(*text, what + " text part");
        }
      } else if (item.is_string()) {
        out += item.get<std::string>();
      }
    }
    return out;
  }
  if (content.is_object())
    fail("chat template: {} is a JSON object; expected a string or a list of parts", what);
  return jinja_print(content, what);
}

std::string tool_to_json(const ojson& tool) {
  std::string out = "{";
  bool first = true;
  for (const auto& [key, value] : tool.items()) {
    if (key == "defer_loading" || key == "strict") continue;
    if (!first) out += ", ";
    first = false;
    out += "\"" + key + "\": ";  // the template prints the key unescaped
    dump_python_json(value, out);
  }
  return out + "}";
}

// Rejects strings that are not UTF-8 before any of them is stripped or split by code point.
void check_utf8(const ojson& value, const std::string& where) {
  if (value.is_string()) {
    if (const auto bad = find_invalid_utf8(value.get_ref<const std::string&>()))
      fail("chat template: {} has invalid UTF-8 at byte offset {}", where, *bad);
  } else if (value.is_object()) {
    for (const auto& [key, item] : value.items()) {
      if (find_invalid_utf8(key)) fail("chat template: a key in {} has invalid UTF-8", where);
      check_utf8(item, where + "." + key);
    }
  } else if (value.is_array()) {
    for (size_t i = 0; i < value.size(); ++i) check_utf8(value[i], fmt::format("{}[{}]", where, i));
  }
}

constexpr std::string_view kToolsHeader =
    "<|system|>\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n";
constexpr std::string_view kToolsFooter =
    "</tools>\n\nFor each function call, output the function name and arguments within the "
    "following XML format:\n<tool_call>{function-name}<arg_key>{arg-key-1}</arg_key><arg_value>"
    "{arg-value-1}</arg_value><arg_key>{arg-key-2}</arg_key><arg_value>{arg-value-2}</arg_value>"
    "...</tool_call>";

}  // namespace

std::string python_json_dumps(const nlohmann::ordered_json& value) {
  std::string out;
  try {
    dump_python_json(value, out);
  } catch (const nlohmann::json::exception& e) {
    fail("cannot write JSON: {}", e.what());
  }
  return out;
}

Glm5ChatTemplate Glm5ChatTemplate::load(const std::filesystem::path& model_dir) {
  const auto jinja_path = model_dir / "chat_template.jinja";
  std::error_code ec;
  if (std::filesystem::is_regular_file(jinja_path, ec))
    return from_template_text(read_file(jinja_path), jinja_path.string());
  const auto config_path = model_dir / "tokenizer_config.json";
  if (!std::filesystem::is_regular_file(config_path, ec))
    fail("{}: no chat template (neither chat_template.jinja nor tokenizer_config.json)",
         model_dir.string());
  ojson config;
  try {
    config = ojson::parse(read_file(config_path));
  } catch (const nlohmann::json::parse_error& e) {
    fail("{}: malformed JSON: {}", config_path.string(), e.what());
  }
  const ojson* chat = field(config, "chat_template");
  if (chat && chat->is_string())
    return from_template_text(chat->get<std::string>(), config_path.string());
  if (chat && chat->is_array()) {
    for (const ojson& entry : *chat) {
      const ojson* name = field(entry, "name");
      const ojson* text = field(entry, "template");
      if (name && *name == "default" && text && text->is_string())
        return from_template_text(text->get<std::string>(), config_path.string() + " (default)");
    }
  }
  fail("{}: field 'chat_template' is missing or not a string / list with a \"default\" entry",
       config_path.string());
}

// The templates the renderer reproduces. The GLM-5.1 entry is whittle's reconstruction (GLM-4.7's
// verbatim template plus the GLM-5.1 changes of shared/specs/glm_moe_dsa.md §5, with a comment
// saying so): GLM-5.1's own chat_template.jinja was not available offline, so its golden is
// circular (transformers renders a template written here) and the checkpoint's real file is refused
// until the renderer has been checked against it and its fingerprint added here.
constexpr Glm5ChatTemplate::KnownTemplate kKnownTemplates[] = {
    {"GLM-4.7 chat_template.jinja, verbatim (tests/golden/tokenizer/chat_template_glm47.jinja)",
     0x455b4682700c641eull,
     {.unwrap_tools = false, .empty_think_in_current_turn = false}},
    {"GLM-5.1 as reconstructed for whittle (tests/golden/tokenizer/chat_template.jinja, also "
     "models/tiny-glm5)",
     0x987f828f9ee10cc9ull,
     {.unwrap_tools = true, .empty_think_in_current_turn = true}},
};

std::span<const Glm5ChatTemplate::KnownTemplate> Glm5ChatTemplate::known_templates() {
  return kKnownTemplates;
}

uint64_t Glm5ChatTemplate::template_fingerprint(std::string_view jinja) {
  // jinja2's lexer splits the source at \r\n, \r and \n, drops the last empty line unless
  // keep_trailing_newline (transformers leaves it off) and emits "\n" for every line end.
  if (jinja.ends_with("\r\n"))
    jinja.remove_suffix(2);
  else if (jinja.ends_with('\n') || jinja.ends_with('\r'))
    jinja.remove_suffix(1);
  uint64_t h = 0xcbf29ce484222325ull;
  const auto mix = [&](unsigned char c) {
    h ^= c;
    h *= 0x100000001b3ull;
  };
  for (size_t i = 0; i < jinja.size(); ++i) {
    if (jinja[i] == '\r') {
      if (i + 1 < jinja.size() && jinja[i + 1] == '\n') ++i;
      mix('\n');
    } else {
      mix(static_cast<unsigned char>(jinja[i]));
    }
  }
  return h;
}

Glm5ChatTemplate Glm5ChatTemplate::from_template_text(std::string_view jinja,
                                                      std::string_view source_name) {
  const uint64_t fingerprint = template_fingerprint(jinja);
  for (const KnownTemplate& known : kKnownTemplates)
    if (known.fingerprint == fingerprint) return Glm5ChatTemplate(known.variant);
  std::string what;
  if (jinja.find("[gMASK]<sop>") == std::string_view::npos ||
      jinja.find("<|assistant|>") == std::string_view::npos ||
      jinja.find("<arg_key>") == std::string_view::npos)
    what = "is not the GLM-4.5/4.7/5 format (no [gMASK]<sop>, <|assistant|> or <arg_key>)";
  else if (jinja.find("Reasoning Effort") != std::string_view::npos)
    what = "has GLM-5.2's \"Reasoning Effort\" system line, which the renderer does not reproduce";
  else
    what = "is a GLM template, but not one whose rendering whittle has checked";
  std::string known_list;
  for (const KnownTemplate& known : kKnownTemplates)
    known_list += fmt::format("\n  - {}", known.name);
  fail(
      "{}: chat template {} (fingerprint {:016x}). whittle renders GLM chat templates natively and "
      "reproduces these exactly:{}\nAny other template could give a different prompt than "
      "transformers. To chat with the renderer anyway, replace the model's template with one of "
      "these; to support this one, check the renderer against transformers on it "
      "(tools/oracle/make_chat_golden.py) and add its fingerprint to "
      "src/tokenizer/chat_template.cc.",
      source_name, what, fingerprint, known_list);
}

std::string Glm5ChatTemplate::render(const nlohmann::ordered_json& messages,
                                     const nlohmann::ordered_json& tools,
                                     const ChatTemplateOptions& options) const {
  if (!messages.is_array()) fail("chat template: messages must be a JSON array");
  if (!tools.is_null() && !tools.is_array())
    fail("chat template: tools must be a JSON array or null");
  check_utf8(messages, "messages");
  check_utf8(tools, "tools");
  const bool thinking_off = options.enable_thinking.has_value() && !*options.enable_thinking;
  const bool keep_all_reasoning = options.clear_thinking.has_value() && !*options.clear_thinking;

  std::string out = "[gMASK]<sop>";
  if (truthy(tools)) {
    out += kToolsHeader;
    for (size_t t = 0; t < tools.size(); ++t) {
      const ojson* tool = &tools[t];
      if (variant_.unwrap_tools) {
        if (!tool->is_object()) fail("chat template: tools[{}] must be a JSON object", t);
        if (const ojson* inner = field(*tool, "function")) tool = inner;
        if (!tool->is_object()) fail("chat template: tools[{}].function must be a JSON object", t);
        const ojson* deferred = field(*tool, "defer_loading");
        if (deferred && truthy(*deferred)) continue;
        out += tool_to_json(*tool);
      } else {
        out += python_json_dumps(*tool);
      }
      out += '\n';
    }
    out += kToolsFooter;
  }

  int last_user = -1;
  for (size_t i = 0; i < messages.size(); ++i) {
    const ojson* role = field(messages[i], "role");
    if (!role || !role->is_string()) fail("chat template: messages[{}] has no string \"role\"", i);
    if (*role == "user") last_user = static_cast<int>(i);
  }

  for (size_t i = 0; i < messages.size(); ++i) {
    const ojson& message = messages[i];
    const std::string role = message.at("role");
    const std::string what = fmt::format("messages[{}].content", i);
    const ojson* content_field = field(message, "content");
    const ojson null_content;
    const ojson& content_json = content_field ? *content_field : null_content;

    if (role == "user") {
      out += "<|user|>" + visible_text(content_json, what);
    } else if (role == "system") {
      out += "<|system|>" + visible_text(content_json, what);
    } else if (role == "assistant") {
      out += "<|assistant|>";
      std::string content = visible_text(content_json, what);
      std::string reasoning;
      const ojson* reasoning_field = field(message, "reasoning_content");
      if (reasoning_field && reasoning_field->is_string()) {
        reasoning = reasoning_field->get<std::string>();
      } else if (const size_t close = content.find("</think>"); close != std::string::npos) {
        // content.split('</think>')[0].rstrip('\n').split('<think>')[-1].lstrip('\n')
        const std::string before = strip_newlines_right(std::string_view(content).substr(0, close));
        const size_t open = before.rfind("<think>");
        reasoning =
            strip_newlines_left(open == std::string::npos ? before : before.substr(open + 7));
        // content.split('</think>')[-1].lstrip('\n')
        content = strip_newlines_left(content.substr(content.rfind("</think>") + 8));
      }
      const bool current_turn = static_cast<int>(i) > last_user;
      if ((keep_all_reasoning || current_turn) && !reasoning.empty()) {
        out += "<think>" + python_strip(reasoning) + "</think>";
      } else if (variant_.empty_think_in_current_turn && current_turn && !thinking_off) {
        out += "<think></think>";
      } else {
        out += "</think>";
      }
      out += python_strip(content);

      const ojson* calls = field(message, "tool_calls");
      if (calls && truthy(*calls)) {
        if (!calls->is_array()) fail("chat template: messages[{}].tool_calls must be an array", i);
        for (size_t c = 0; c < calls->size(); ++c) {
          const std::string where = fmt::format("messages[{}].tool_calls[{}]", i, c);
          const ojson* call = &(*calls)[c];
          if (const ojson* function = field(*call, "function"); function && truthy(*function))
            call = function;
          const ojson* name = field(*call, "name");
          if (!name || !name->is_string()) fail("chat template: {} has no string \"name\"", where);
          out += "<tool_call>" + name->get<std::string>();
          const ojson* arguments = field(*call, "arguments");
          ojson parsed;
          if (arguments && arguments->is_string()) {
            try {
              parsed = ojson::parse(arguments->get<std::string>());
            } catch (const nlohmann::json::parse_error& e) {
              fail("chat template: {}.arguments is a string but not JSON: {}", where, e.what());
            }
            arguments = &parsed;
          }
          if (!arguments || !arguments->is_object())
            fail("chat template: {}.arguments must be a JSON object", where);
          for (const auto& [key, value] : arguments->items()) {
            out += "<arg_key>" + key + "</arg_key><arg_value>";
            out += value.is_string() ? value.get<std::string>() : python_json_dumps(value);
            out += "</arg_value>";
          }
          out += "</tool_call>";
        }
      }
    } else if (role == "tool") {
      if (content_json.is_string()) {
        const bool follows_tool = i > 0 && messages[i - 1].at("role") == "tool";
        if (!follows_tool) out += "<|observation|>";
        out += "<tool_response>" + content_json.get<std::string>() + "</tool_response>";
      } else {
        if (!content_json.is_array())
          fail("chat template: {} of a tool message must be a string or a list", what);
        out += "<|observation|>";
        for (size_t r = 0; r < content_json.size(); ++r) {
          const ojson& result = content_json[r];
          const ojson* output = field(result, "output");
          out += "<tool_response>";
          out += output ? jinja_print(*output, fmt::format("{}[{}].output", what, r))
                        : jinja_print(result, fmt::format("{}[{}]", what, r));
          out += "</tool_response>";
        }
      }
    }
    // Other roles print nothing, as in the template.
  }

  if (options.add_generation_prompt)
    out += thinking_off ? "<|assistant|></think>" : "<|assistant|><think>";
  return out;
}

}  // namespace whittle
