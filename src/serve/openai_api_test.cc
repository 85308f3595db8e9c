// The API layer without HTTP: stop strings cut the text and are never sent, even when they arrive
// split across tokens; a chat's streamed deltas add up to what the whole-response parser makes of
// the same text, however the text is split.
#include "serve/openai_api.h"

#include <gtest/gtest.h>

#include "serve/tool_calls.h"

namespace whittle {
namespace {

using ojson = nlohmann::ordered_json;

const BpeTokenizer& tokenizer() {
  static const BpeTokenizer t = BpeTokenizer::load(std::filesystem::path(WHITTLE_SOURCE_DIR) /
                                                   "models/tiny-glm5/tokenizer.json");
  return t;
}

TEST(OutputText, CutsAtTheFirstStopStringAndHoldsBackWhatMayStartOne) {
  const std::vector<int32_t> ids = tokenizer().encode("The cat sat on the mat. The end.");
  OutputText text(tokenizer(), {"mat.", "on the rug"});
  size_t pushed = 0;
  for (int32_t id : ids) {
    ++pushed;
    // Whatever is stable is a prefix of the final answer.
    const bool more = text.push(id);
    EXPECT_TRUE(std::string_view("The cat sat on the ")
                    .starts_with(std::string_view(text.text()).substr(0, text.stable())))
        << text.text();
    if (!more) break;
  }
  EXPECT_TRUE(text.stopped());
  EXPECT_LT(pushed, ids.size());  // later tokens were never needed
  text.finish();
  EXPECT_EQ(text.text(), "The cat sat on the ");
  EXPECT_EQ(text.stable(), text.text().size());
}

TEST(OutputText, WithoutAStopStringEverythingIsStableAtTheEnd) {
  const std::string s = "no stop here, only on the";
  OutputText text(tokenizer(), {"on the rug"});
  for (int32_t id : tokenizer().encode(s)) EXPECT_TRUE(text.push(id));
  EXPECT_EQ(text.stable(), s.size() - 6);  // "on the" may yet become the stop string
  text.finish();
  EXPECT_FALSE(text.stopped());
  EXPECT_EQ(text.text(), s);
  EXPECT_EQ(text.stable(), s.size());
}

// Streams `text` to ChatDeltas in pieces of `step` bytes and adds the deltas up.
AssistantOutput stream_chat(std::string_view text, bool in_thinking, const ojson& tools,
                            size_t step) {
  ChatDeltas deltas(in_thinking, tools, "call_");
  AssistantOutput out;
  std::vector<ojson> all;
  for (size_t n = step; n < text.size() + step; n += step) {
    const bool final = n >= text.size();
    for (ojson& d : deltas.update(text.substr(0, std::min(n, text.size())), final))
      all.push_back(std::move(d));
  }
  for (const ojson& d : all) {
    EXPECT_EQ(d.size(), 1u) << d.dump();
    if (d.contains("reasoning_content"))
      out.reasoning_content += d["reasoning_content"].get<std::string>();
    if (d.contains("content")) out.content += d["content"].get<std::string>();
    if (d.contains("tool_calls")) {
      const ojson& c = d["tool_calls"][0];
      EXPECT_EQ(c["index"], static_cast<int>(out.tool_calls.size()));
      EXPECT_TRUE(c["id"].get<std::string>().starts_with("call_"));
      out.tool_calls.push_back(ParsedToolCall{
          c["function"]["name"], ojson::parse(c["function"]["arguments"].get<std::string>())});
    }
  }
  return out;
}

TEST(ChatDeltas, AddUpToTheWholeResponseHoweverTheTextIsSplit) {
  const ojson tools = ojson::parse(R"([{"type": "function", "function": {"name": "get_weather",
      "parameters": {"type": "object", "properties": {"city": {"type": "string"},
      "days": {"type": "integer"}}}}}])");
  const std::vector<std::pair<std::string, bool>> cases = {
      {"Let me think.\nThe user wants weather.</think>\n\nI will check. "
       "<tool_call>get_weather<arg_key>city</arg_key><arg_value>Paris</arg_value>"
       "<arg_key>days</arg_key><arg_value>3</arg_value></tool_call>\n"
       "<tool_call>get_weather<arg_key>city</arg_key><arg_value>42</arg_value></tool_call>",
       true},
      {"Plain answer with a < and a </thi and <tool_ca in it.  ", false},
      {"Thinking that never ends <", true},
      {"</think>Before <tool_call>broken<arg_key>x</tool_call> after", true},
      {"Unterminated <tool_call>get_weather<arg_key>city</arg_key>", false},
      {"  \n  ", false},
  };
  for (const auto& [text, thinking] : cases) {
    const AssistantOutput whole = parse_assistant_output(text, thinking, tools);
    for (size_t step : {1, 2, 3, 7, 1000}) {
      const AssistantOutput s = stream_chat(text, thinking, tools, step);
      EXPECT_EQ(s.content, whole.content) << text << " step " << step;
      // Reasoning streams as it comes; the whole response trims it.
      const auto trim = [](std::string r) {
        r.erase(0, r.find_first_not_of(" \n"));
        r.erase(r.find_last_not_of(" \n") + 1);
        return r;
      };
      EXPECT_EQ(trim(s.reasoning_content), whole.reasoning_content) << text << " step " << step;
      ASSERT_EQ(s.tool_calls.size(), whole.tool_calls.size()) << text;
      for (size_t i = 0; i < s.tool_calls.size(); ++i) {
        EXPECT_EQ(s.tool_calls[i].name, whole.tool_calls[i].name);
        EXPECT_EQ(s.tool_calls[i].arguments, whole.tool_calls[i].arguments);
      }
    }
  }
}

TEST(ChatDeltas, ToolCallArgumentsAreTypedByTheSchema) {
  const ojson tools = ojson::parse(R"([{"type": "function", "function": {"name": "f",
      "parameters": {"type": "object", "properties": {"s": {"type": "string"},
      "n": {"type": "integer"}}}}}])");
  const AssistantOutput s = stream_chat(
      "<tool_call>f<arg_key>s</arg_key><arg_value>7</arg_value><arg_key>n</arg_key>"
      "<arg_value>7</arg_value></tool_call>",
      false, tools, 5);
  ASSERT_EQ(s.tool_calls.size(), 1u);
  EXPECT_EQ(s.tool_calls[0].arguments, ojson::parse(R"({"s": "7", "n": 7})"));
}

}  // namespace
}  // namespace whittle
