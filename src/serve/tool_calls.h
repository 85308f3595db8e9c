// The assistant's raw output as an OpenAI message: GLM-5's thinking split off as
// `reasoning_content`, and its XML tool calls
//   <tool_call>NAME<arg_key>K</arg_key><arg_value>V</arg_value>...</tool_call>
// (the form the chat template renders them in) parsed into OpenAI `tool_calls`. An argument value
// is kept as a string where the tool's JSON schema says the parameter is a string (or the tool or
// parameter is unknown and the value is not JSON); otherwise it is parsed as JSON, as vLLM's
// GLM-4.5 tool parser does (it also tries Python literals, which the chat template never writes),
// so that rendering the parsed call again gives the same text.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

namespace whittle {

// GLM-5's markers, and the whitespace trimmed around content and arguments; the streaming reader
// (openai_api.h, ChatDeltas) uses the same so that its deltas add up to this parser's message.
inline constexpr std::string_view kThinkBegin = "<think>", kThinkEnd = "</think>";
inline constexpr std::string_view kCallBegin = "<tool_call>", kCallEnd = "</tool_call>";
inline constexpr std::string_view kTrimmedSpace = " \n\t\r";

struct ParsedToolCall {
  std::string name;
  nlohmann::ordered_json arguments = nlohmann::ordered_json::object();
};

struct AssistantOutput {
  std::string reasoning_content;  // the text before "</think>" when the output began in thinking
  std::string content;            // the rest, tool calls taken out, surrounding space trimmed
  std::vector<ParsedToolCall> tool_calls;
  bool unterminated_tool_call = false;  // a "<tool_call>" without its "</tool_call>": kept as text
};

// `in_thinking`: the prompt ended inside "<think>" (GLM-5's generation prompt with thinking on), so
// the output's text up to the first "</think>" is reasoning. `tools`: the request's OpenAI `tools`
// array (or null), for the parameters' types.
AssistantOutput parse_assistant_output(std::string_view text, bool in_thinking,
                                       const nlohmann::ordered_json& tools);

// The OpenAI wire form of a call: {"id", "type": "function", "function": {"name", "arguments":
// JSON text}}.
nlohmann::ordered_json tool_call_to_openai(const ParsedToolCall& call, std::string_view id);

}  // namespace whittle
