// Tests for Glm5ChatTemplate against chat_golden.json (transformers' apply_chat_template output,
// written by tools/oracle/make_chat_golden.py): identical text for every conversation, and the
// same token ids once encoded.
#include "tokenizer/chat_template.h"

#include <gtest/gtest.h>

#include <filesystem>

#include "tokenizer/bpe_tokenizer.h"
#include "util/atomic_file.h"
#include "util/error.h"

namespace whittle {
namespace {

using ojson = nlohmann::ordered_json;

std::filesystem::path golden_dir() {
  return std::filesystem::path(WHITTLE_SOURCE_DIR) / "tests" / "golden" / "tokenizer";
}

const ojson& chat_golden() {
  static const ojson doc = ojson::parse(read_file(golden_dir() / "chat_golden.json"));
  return doc;
}

Glm5ChatTemplate template_named(const std::string& name) {
  const std::string file = name == "glm51" ? "chat_template.jinja" : "chat_template_glm47.jinja";
  const auto path = golden_dir() / file;
  return Glm5ChatTemplate::from_template_text(read_file(path), path.string());
}

ChatTemplateOptions options_of(const ojson& c) {
  ChatTemplateOptions options;
  options.add_generation_prompt = c.at("add_generation_prompt").get<bool>();
  if (c.contains("enable_thinking")) options.enable_thinking = c.at("enable_thinking").get<bool>();
  if (c.contains("clear_thinking")) options.clear_thinking = c.at("clear_thinking").get<bool>();
  return options;
}

TEST(ChatTemplateGolden, CoversEnoughConversations) {
  EXPECT_GE(chat_golden().at("cases").size(), 15u);
}

TEST(ChatTemplateGolden, RendersExactlyWhatTransformersRenders) {
  const Glm5ChatTemplate glm51 = template_named("glm51");
  const Glm5ChatTemplate glm47 = template_named("glm47");
  for (const ojson& c : chat_golden().at("cases")) {
    const Glm5ChatTemplate& tmpl = c.at("template") == "glm51" ? glm51 : glm47;
    const std::string rendered = tmpl.render(c.at("messages"), c.at("tools"), options_of(c));
    EXPECT_EQ(rendered, c.at("expected").get<std::string>()) << c.at("name").get<std::string>();
  }
}

TEST(ChatTemplateGolden, RenderedTextEncodesToTheOracleIds) {
  const BpeTokenizer tok = BpeTokenizer::load(golden_dir() / "tokenizer.json");
  const Glm5ChatTemplate glm51 = template_named("glm51");
  const Glm5ChatTemplate glm47 = template_named("glm47");
  for (const ojson& c : chat_golden().at("cases")) {
    const Glm5ChatTemplate& tmpl = c.at("template") == "glm51" ? glm51 : glm47;
    const auto ids = tok.encode(tmpl.render(c.at("messages"), c.at("tools"), options_of(c)));
    EXPECT_EQ(ids, c.at("expected_ids").get<std::vector<int32_t>>())
        << c.at("name").get<std::string>();
    // Every rendering starts with the literal [gMASK]<sop> special tokens.
    ASSERT_GE(ids.size(), 2u);
    EXPECT_EQ(ids[0], tok.added_token_id("[gMASK]"));
    EXPECT_EQ(ids[1], tok.added_token_id("<sop>"));
  }
}

TEST(ChatTemplateLoad, PicksTheVariantFromTheModelFolder) {
  const Glm5ChatTemplate from_dir = Glm5ChatTemplate::load(golden_dir());
  EXPECT_TRUE(from_dir.variant().unwrap_tools);
  EXPECT_TRUE(from_dir.variant().empty_think_in_current_turn);
  const Glm5ChatTemplate glm47 = template_named("glm47");
  EXPECT_FALSE(glm47.variant().unwrap_tools);
  EXPECT_FALSE(glm47.variant().empty_think_in_current_turn);

  // tokenizer_config.json's copy of the template must be the same template as the .jinja file.
  const ojson config = ojson::parse(read_file(golden_dir() / "tokenizer_config.json"));
  EXPECT_EQ(config.at("chat_template").get<std::string>(),
            read_file(golden_dir() / "chat_template.jinja"));
}

TEST(ChatTemplateLoad, RejectsWhatItCannotReproduce) {
  EXPECT_THROW(Glm5ChatTemplate::from_template_text("{{ messages }}", "x"), Error);
  EXPECT_THROW(Glm5ChatTemplate::from_template_text(
                   "[gMASK]<sop><|system|>Reasoning Effort: Max<|assistant|><arg_key>", "x"),
               Error);
  try {
    Glm5ChatTemplate::load("/nonexistent/model");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/model"), std::string::npos);
  }
}

TEST(ChatTemplateRender, ArgumentsAsJsonStringEqualArgumentsAsObject) {
  const Glm5ChatTemplate tmpl;
  const ojson as_object = ojson::parse(R"([{"role":"user","content":"q"},
      {"role":"assistant","content":"","tool_calls":[{"function":{"name":"f",
       "arguments":{"a":"x","b":[1,2.5]}}}]}])");
  ojson as_string = as_object;
  as_string[1]["tool_calls"][0]["function"]["arguments"] = R"({"a":"x","b":[1,2.5]})";
  const std::string expected = tmpl.render(as_object, nullptr, {});
  EXPECT_EQ(tmpl.render(as_string, nullptr, {}), expected);
  EXPECT_NE(expected.find("<arg_value>[1, 2.5]</arg_value>"), std::string::npos) << expected;
}

TEST(ChatTemplateRender, MalformedMessagesAreErrors) {
  const Glm5ChatTemplate tmpl;
  EXPECT_THROW(tmpl.render(ojson::object(), nullptr, {}), Error);
  EXPECT_THROW(tmpl.render(ojson::parse(R"([{"content":"no role"}])"), nullptr, {}), Error);
  EXPECT_THROW(tmpl.render(ojson::parse(R"([{"role":"user","content":{"a":1}}])"), nullptr, {}),
               Error);
  EXPECT_THROW(tmpl.render(ojson::parse(R"([{"role":"assistant","content":"",
      "tool_calls":[{"function":{"name":"f","arguments":"not json"}}]}])"),
                           nullptr, {}),
               Error);
  EXPECT_THROW(tmpl.render(ojson::parse(R"([{"role":"user","content":"x"}])"),
                           ojson::parse(R"({"not":"an array"})"), {}),
               Error);
  ojson bad_utf8 = ojson::array({{{"role", "user"}, {"content", "ok \xe4\xb8"}}});
  try {
    tmpl.render(bad_utf8, nullptr, {});
    ADD_FAILURE() << "no error for invalid UTF-8";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("messages[0].content has invalid UTF-8"),
              std::string::npos)
        << e.what();
  }
}

TEST(ChatTemplateRender, PythonJsonDumpsMatchesPython) {
  // Values checked against CPython 3.11: json.dumps(v, ensure_ascii=False).
  EXPECT_EQ(python_json_dumps(ojson::parse(R"({"a": [1, 2.5, null, true], "b": {}, "c": []})")),
            R"({"a": [1, 2.5, null, true], "b": {}, "c": []})");
  EXPECT_EQ(python_json_dumps(ojson::parse("[0.0001, 1e-05, 1e15, 1e16, 1.0, -0.5, 1e-07]")),
            "[0.0001, 1e-05, 1000000000000000.0, 1e+16, 1.0, -0.5, 1e-07]");
  EXPECT_EQ(python_json_dumps(ojson("tab\there \"q\" \\ é \x01")),
            "\"tab\\there \\\"q\\\" \\\\ é \\u0001\"");
  EXPECT_EQ(python_json_dumps(ojson::parse("123456789.123")), "123456789.123");
  EXPECT_EQ(python_json_dumps(ojson::parse("0.30000000000000004")), "0.30000000000000004");
}

}  // namespace
}  // namespace whittle
