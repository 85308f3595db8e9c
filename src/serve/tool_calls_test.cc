#include "serve/tool_calls.h"

#include <gtest/gtest.h>

#include "tokenizer/chat_template.h"

namespace whittle {
namespace {

using ojson = nlohmann::ordered_json;

const ojson kTools = ojson::parse(R"([
  {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object",
    "properties": {"city": {"type": "string"}, "days": {"type": "integer"},
                   "units": {"type": "string", "enum": ["C", "F"]}}}}},
  {"type": "function", "function": {"name": "run", "parameters": {"type": "object",
    "properties": {"cmd": {"type": "string"}, "env": {"type": "object"}}}}}
])");

TEST(ToolCalls, SplitsReasoningContentAndCalls) {
  const AssistantOutput out = parse_assistant_output(
      "Need the weather.</think>Let me check.\n"
      "<tool_call>get_weather<arg_key>city</arg_key><arg_value>Paris</arg_value>"
      "<arg_key>days</arg_key><arg_value>3</arg_value></tool_call>",
      /*in_thinking=*/true, kTools);
  EXPECT_EQ(out.reasoning_content, "Need the weather.");
  EXPECT_EQ(out.content, "Let me check.");
  ASSERT_EQ(out.tool_calls.size(), 1u);
  EXPECT_EQ(out.tool_calls[0].name, "get_weather");
  EXPECT_EQ(out.tool_calls[0].arguments, ojson::parse(R"({"city": "Paris", "days": 3})"));
  EXPECT_FALSE(out.unterminated_tool_call);
}

TEST(ToolCalls, StringParametersStayStringsWhateverTheyLookLike) {
  const AssistantOutput out = parse_assistant_output(
      "<tool_call>get_weather\n<arg_key>city</arg_key>\n<arg_value>123</arg_value>\n</tool_call>"
      "<tool_call>run<arg_key>cmd</arg_key><arg_value>[1, 2]</arg_value>"
      "<arg_key>env</arg_key><arg_value>{\"A\": 1}</arg_value></tool_call>",
      false, kTools);
  ASSERT_EQ(out.tool_calls.size(), 2u);
  EXPECT_EQ(out.tool_calls[0].arguments, ojson::parse(R"({"city": "123"})"));
  EXPECT_EQ(out.tool_calls[1].arguments, ojson::parse(R"({"cmd": "[1, 2]", "env": {"A": 1}})"));
  EXPECT_EQ(out.content, "");
}

TEST(ToolCalls, UnknownToolsParseJsonWhereTheyCan) {
  const AssistantOutput out = parse_assistant_output(
      "<tool_call>other<arg_key>n</arg_key><arg_value>2.5</arg_value>"
      "<arg_key>s</arg_key><arg_value>two words</arg_value></tool_call>",
      false, nullptr);
  ASSERT_EQ(out.tool_calls.size(), 1u);
  EXPECT_EQ(out.tool_calls[0].arguments, ojson::parse(R"({"n": 2.5, "s": "two words"})"));
}

TEST(ToolCalls, MalformedCallsStayText) {
  const AssistantOutput bad = parse_assistant_output(
      "a <tool_call>get_weather<arg_key>city</arg_key>Paris</tool_call> b", false, kTools);
  EXPECT_TRUE(bad.tool_calls.empty());
  EXPECT_EQ(bad.content, "a <tool_call>get_weather<arg_key>city</arg_key>Paris</tool_call> b");

  const AssistantOutput open = parse_assistant_output(
      "x <tool_call>get_weather<arg_key>city</arg_key><arg_value>Par", false, kTools);
  EXPECT_TRUE(open.tool_calls.empty());
  EXPECT_TRUE(open.unterminated_tool_call);
  EXPECT_EQ(open.content, "x <tool_call>get_weather<arg_key>city</arg_key><arg_value>Par");

  const AssistantOutput no_name =
      parse_assistant_output("<tool_call><arg_key>a</arg_key></tool_call>", false, kTools);
  EXPECT_TRUE(no_name.tool_calls.empty());
}

TEST(ToolCalls, StoppedWhileThinkingIsAllReasoning) {
  const AssistantOutput out = parse_assistant_output(" still thinking ", true, kTools);
  EXPECT_EQ(out.reasoning_content, "still thinking");
  EXPECT_EQ(out.content, "");
}

// What the chat template renders (checked byte for byte against transformers) parses back to the
// calls it was rendered from, with the OpenAI wire form's string arguments.
TEST(ToolCalls, ParsesWhatTheChatTemplateRenders) {
  const ojson calls = ojson::parse(R"([
    {"id": "call_0", "type": "function", "function": {"name": "get_weather",
      "arguments": "{\"city\": \"New York\", \"days\": 10, \"units\": \"F\"}"}},
    {"id": "call_1", "type": "function", "function": {"name": "run",
      "arguments": {"cmd": "ls -l", "env": {"PATH": "/bin", "N": [1, 2.5, true, null]}}}}
  ])");
  const ojson messages =
      ojson::array({{{"role", "user"}, {"content", "weather?"}},
                    {{"role", "assistant"}, {"content", "Checking."}, {"tool_calls", calls}}});
  const std::string text = Glm5ChatTemplate().render(messages, kTools, {});
  const size_t at = text.rfind("Checking.");
  ASSERT_NE(at, std::string::npos) << text;
  const AssistantOutput out = parse_assistant_output(text.substr(at), false, kTools);
  EXPECT_EQ(out.content, "Checking.");
  ASSERT_EQ(out.tool_calls.size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    const ojson& f = calls[i]["function"];
    const ojson want = f["arguments"].is_string() ? ojson::parse(f["arguments"].get<std::string>())
                                                  : f["arguments"];
    EXPECT_EQ(out.tool_calls[i].name, f["name"]);
    EXPECT_EQ(out.tool_calls[i].arguments, want) << i;
    const ojson wire = tool_call_to_openai(out.tool_calls[i], calls[i]["id"].get<std::string>());
    EXPECT_EQ(wire["type"], "function");
    EXPECT_EQ(ojson::parse(wire["function"]["arguments"].get<std::string>()), want);
  }
}

}  // namespace
}  // namespace whittle
