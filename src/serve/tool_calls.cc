#include "serve/tool_calls.h"

namespace whittle {
namespace {

using ojson = nlohmann::ordered_json;

constexpr std::string_view kKeyBegin = "<arg_key>", kKeyEnd = "</arg_key>";
constexpr std::string_view kValueBegin = "<arg_value>", kValueEnd = "</arg_value>";

std::string_view trim(std::string_view s) {
  const size_t first = s.find_first_not_of(kTrimmedSpace);
  if (first == std::string_view::npos) return {};
  return s.substr(first, s.find_last_not_of(kTrimmedSpace) + 1 - first);
}

// The JSON-schema type of `tool`'s parameter `key`, or "" when the tools do not say.
std::string parameter_type(const ojson& tools, std::string_view tool, std::string_view key) {
  if (!tools.is_array()) return "";
  for (const auto& t : tools) {
    const ojson& f = t.is_object() && t.contains("function") ? t["function"] : t;
    if (!f.is_object() || f.value("name", std::string()) != tool) continue;
    const auto params = f.find("parameters");
    if (params == f.end() || !params->is_object()) return "";
    const auto props = params->find("properties");
    if (props == params->end() || !props->is_object()) return "";
    const auto p = props->find(std::string(key));
    if (p == props->end() || !p->is_object()) return "";
    const auto type = p->find("type");
    return type != p->end() && type->is_string() ? type->get<std::string>() : "";
  }
  return "";
}

ojson argument_value(std::string_view raw, const std::string& type) {
  if (type == "string") return std::string(raw);
  ojson parsed = ojson::parse(raw, nullptr, /*allow_exceptions=*/false);
  if (parsed.is_discarded()) return std::string(raw);
  return parsed;
}

// One call's text between "<tool_call>" and "</tool_call>"; false when it is not the XML form.
bool parse_call(std::string_view body, const ojson& tools, ParsedToolCall& call) {
  const size_t first_key = body.find(kKeyBegin);
  call.name = std::string(trim(body.substr(0, first_key)));
  if (call.name.empty()) return false;
  std::string_view rest = first_key == std::string_view::npos ? "" : body.substr(first_key);
  while (!(rest = trim(rest)).empty()) {
    if (!rest.starts_with(kKeyBegin)) return false;
    const size_t key_end = rest.find(kKeyEnd);
    if (key_end == std::string_view::npos) return false;
    const std::string key(trim(rest.substr(kKeyBegin.size(), key_end - kKeyBegin.size())));
    rest = trim(rest.substr(key_end + kKeyEnd.size()));
    if (!rest.starts_with(kValueBegin)) return false;
    const size_t value_end = rest.find(kValueEnd);
    if (value_end == std::string_view::npos) return false;
    const std::string_view raw = rest.substr(kValueBegin.size(), value_end - kValueBegin.size());
    call.arguments[key] = argument_value(raw, parameter_type(tools, call.name, key));
    rest = rest.substr(value_end + kValueEnd.size());
  }
  return true;
}

}  // namespace

AssistantOutput parse_assistant_output(std::string_view text, bool in_thinking,
                                       const ojson& tools) {
  AssistantOutput out;
  if (in_thinking) {
    const size_t end = text.find(kThinkEnd);
    if (end == std::string_view::npos) {  // still thinking when generation stopped
      out.reasoning_content = std::string(trim(text));
      return out;
    }
    out.reasoning_content = std::string(trim(text.substr(0, end)));
    text = text.substr(end + kThinkEnd.size());
  }
  std::string content;
  while (true) {
    const size_t begin = text.find(kCallBegin);
    if (begin == std::string_view::npos) break;
    const size_t end = text.find(kCallEnd, begin);
    if (end == std::string_view::npos) {
      out.unterminated_tool_call = true;
      break;
    }
    ParsedToolCall call;
    const std::string_view body =
        text.substr(begin + kCallBegin.size(), end - begin - kCallBegin.size());
    content += text.substr(0, begin);
    if (parse_call(body, tools, call))
      out.tool_calls.push_back(std::move(call));
    else
      content += text.substr(begin, end + kCallEnd.size() - begin);  // not a call: kept as text
    text = text.substr(end + kCallEnd.size());
  }
  content += text;
  out.content = std::string(trim(content));
  return out;
}

ojson tool_call_to_openai(const ParsedToolCall& call, std::string_view id) {
  return ojson{{"id", std::string(id)},
               {"type", "function"},
               {"function", {{"name", call.name}, {"arguments", call.arguments.dump()}}}};
}

}  // namespace whittle
