#include "serve/openai_request.h"

#include <gtest/gtest.h>

#include <string>

namespace whittle {
namespace {

using ojson = nlohmann::ordered_json;

// The RequestError a body gets; fails the test when it parses or throws anything else.
RequestError rejection(const std::string& body, RequestKind kind) {
  try {
    parse_openai_request(body, kind);
  } catch (const RequestError& e) {
    return e;
  }
  ADD_FAILURE() << "accepted: " << body;
  return RequestError(0, "");
}

TEST(OpenAiRequest, FullChatRequest) {
  const std::string body = R"({
    "model": "glm-5",
    "messages": [
      {"role": "system", "content": "Be terse."},
      {"role": "developer", "content": [{"type": "text", "text": "Use tools."}]},
      {"role": "user", "content": [{"type": "text", "text": "Weather"}, {"type": "text", "text": "in Paris?"}]},
      {"role": "assistant", "content": null, "reasoning_content": "Need the tool.",
       "tool_calls": [{"id": "call_1", "type": "function",
                       "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}},
                      {"function": {"name": "get_weather", "arguments": {"city": "Lyon"}}}]},
      {"role": "tool", "tool_call_id": "call_1", "content": "18 C"},
      {"role": "assistant", "reasoning_content": null}
    ],
    "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Forecast",
               "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}},
              {"type": "function", "function": {"name": "noop"}}],
    "tool_choice": {"type": "function", "function": {"name": "noop"}},
    "chat_template_kwargs": {"enable_thinking": false, "other": [1]},
    "temperature": 0.5, "top_p": 0.9, "top_k": 40, "seed": 1234, "max_tokens": 100,
    "stop": ["\n\n", "END"], "stream": true, "stream_options": {"include_usage": true},
    "n": 1, "best_of": 1, "logprobs": false, "top_logprobs": 0,
    "response_format": {"type": "text"}, "presence_penalty": 0, "frequency_penalty": 0.0,
    "repetition_penalty": 1.0, "logit_bias": {}, "parallel_tool_calls": false, "user": "u",
    "metadata": {"k": "v"}, "store": false, "service_tier": "auto", "some_new_field": {"x": 1}
  })";
  const OpenAiRequest r = parse_openai_request(body, RequestKind::kChat);
  const ojson sent = ojson::parse(body);
  EXPECT_EQ(r.kind, RequestKind::kChat);
  EXPECT_EQ(r.model, "glm-5");
  EXPECT_EQ(r.messages, sent["messages"]);  // as sent, key order included
  EXPECT_EQ(r.messages.dump(), sent["messages"].dump());
  EXPECT_EQ(r.tools, sent["tools"]);
  EXPECT_EQ(r.tool_choice.mode, ToolChoice::Mode::kFunction);
  EXPECT_EQ(r.tool_choice.function, "noop");
  EXPECT_EQ(r.enable_thinking, false);
  EXPECT_EQ(r.prompt, "");
  EXPECT_EQ(r.temperature, 0.5f);
  EXPECT_EQ(r.top_p, 0.9f);
  EXPECT_EQ(r.top_k, 40);
  EXPECT_EQ(r.seed, 1234u);
  EXPECT_EQ(r.max_tokens, 100);
  EXPECT_EQ(r.stop, (std::vector<std::string>{"\n\n", "END"}));
  EXPECT_TRUE(r.stream);
  EXPECT_TRUE(r.include_usage);
}

TEST(OpenAiRequest, CompletionRequest) {
  const OpenAiRequest r = parse_openai_request(
      R"({"model": "m", "prompt": "Once upon", "max_tokens": 8, "temperature": 0, "stop": "\n",
          "echo": false, "logprobs": 0, "suffix": null, "best_of": 1, "stream": false,
          "messages": "ignored here", "top_k": 40.0})",
      RequestKind::kCompletion);
  EXPECT_EQ(r.kind, RequestKind::kCompletion);
  EXPECT_EQ(r.model, "m");
  EXPECT_EQ(r.prompt, "Once upon");
  EXPECT_EQ(r.max_tokens, 8);
  EXPECT_EQ(r.temperature, 0.0f);
  EXPECT_EQ(r.top_k, 40);  // an integral float, as vLLM accepts it
  EXPECT_EQ(r.stop, std::vector<std::string>{"\n"});
  EXPECT_TRUE(r.messages.empty());
  EXPECT_TRUE(r.tools.is_null());

  EXPECT_EQ(parse_openai_request(R"({"prompt": ["one prompt"]})", RequestKind::kCompletion).prompt,
            "one prompt");
}

TEST(OpenAiRequest, AbsentFieldsLeaveTheDefaults) {
  const OpenAiRequest r = parse_openai_request(
      R"({"messages": [{"role": "user", "content": "hi"}]})", RequestKind::kChat);
  EXPECT_EQ(r.model, "");
  EXPECT_TRUE(r.tools.is_null());
  EXPECT_EQ(r.tool_choice.mode, ToolChoice::Mode::kAuto);
  EXPECT_FALSE(r.enable_thinking);
  EXPECT_FALSE(r.temperature);
  EXPECT_FALSE(r.top_p);
  EXPECT_FALSE(r.top_k);
  EXPECT_FALSE(r.seed);
  EXPECT_FALSE(r.max_tokens);
  EXPECT_TRUE(r.stop.empty());
  EXPECT_FALSE(r.stream);
  EXPECT_FALSE(r.include_usage);

  // null reads as absent; an empty tools array as no tools.
  const OpenAiRequest n = parse_openai_request(
      R"({"messages": [{"role": "user", "content": "hi"}], "model": null, "tools": [],
          "tool_choice": null, "temperature": null, "top_p": null, "top_k": null, "seed": null,
          "max_tokens": null, "max_completion_tokens": null, "stop": null, "stream": null,
          "stream_options": null, "n": null, "logprobs": null, "response_format": null,
          "chat_template_kwargs": null, "logit_bias": null, "presence_penalty": null})",
      RequestKind::kChat);
  EXPECT_TRUE(n.tools.is_null());
  EXPECT_EQ(n.tool_choice.mode, ToolChoice::Mode::kAuto);
  EXPECT_FALSE(n.temperature);
  EXPECT_FALSE(n.max_tokens);
  EXPECT_FALSE(n.stream);
}

TEST(OpenAiRequest, MaxCompletionTokensWinsOverMaxTokens) {
  for (const char* body : {R"({"prompt": "x", "max_tokens": 5, "max_completion_tokens": 7})",
                           R"({"prompt": "x", "max_completion_tokens": 7, "max_tokens": 5})"})
    EXPECT_EQ(parse_openai_request(body, RequestKind::kCompletion).max_tokens, 7) << body;
  EXPECT_EQ(
      parse_openai_request(R"({"prompt": "x", "max_tokens": 2147483647})", RequestKind::kCompletion)
          .max_tokens,
      2147483647);
}

TEST(OpenAiRequest, TopKMinusOneIsOff) {
  EXPECT_EQ(parse_openai_request(R"({"prompt": "x", "top_k": -1})", RequestKind::kCompletion).top_k,
            0);
  EXPECT_EQ(parse_openai_request(R"({"prompt": "x", "top_k": 0})", RequestKind::kCompletion).top_k,
            0);
}

TEST(OpenAiRequest, SeedsAreAnyJsonInteger) {
  const auto seed = [](const std::string& value) {
    return parse_openai_request(R"({"prompt": "x", "seed": )" + value + "}",
                                RequestKind::kCompletion)
        .seed;
  };
  EXPECT_EQ(seed("-1"), UINT64_MAX);
  EXPECT_EQ(seed("-9223372036854775808"), uint64_t{1} << 63);
  EXPECT_EQ(seed("18446744073709551615"), UINT64_MAX);
  EXPECT_EQ(seed("42"), 42u);
  EXPECT_EQ(seed("42.0"), 42u);
}

TEST(OpenAiRequest, ToolChoice) {
  const std::string messages = R"("messages": [{"role": "user", "content": "x"}])";
  const std::string tools =
      R"("tools": [{"type": "function", "function": {"name": "a"}},
                   {"type": "function", "function": {"name": "b"}}])";
  const auto parse = [&](const std::string& rest) {
    return parse_openai_request("{" + messages + ", " + rest + "}", RequestKind::kChat);
  };
  EXPECT_EQ(parse(tools).tool_choice.mode, ToolChoice::Mode::kAuto);
  EXPECT_EQ(parse(tools + R"(, "tool_choice": "auto")").tool_choice.mode, ToolChoice::Mode::kAuto);
  EXPECT_EQ(parse(R"("tool_choice": "auto")").tool_choice.mode, ToolChoice::Mode::kAuto);
  EXPECT_EQ(parse(tools + R"(, "tool_choice": "required")").tool_choice.mode,
            ToolChoice::Mode::kRequired);
  const OpenAiRequest none = parse(tools + R"(, "tool_choice": "none")");
  EXPECT_EQ(none.tool_choice.mode, ToolChoice::Mode::kNone);
  EXPECT_FALSE(none.tools.is_null());  // kept: the server decides what to render
  const OpenAiRequest named =
      parse(tools + R"(, "tool_choice": {"type": "function", "function": {"name": "b"}})");
  EXPECT_EQ(named.tool_choice.mode, ToolChoice::Mode::kFunction);
  EXPECT_EQ(named.tool_choice.function, "b");

  const RequestError unknown =
      rejection("{" + messages + ", " + tools +
                    R"(, "tool_choice": {"type": "function", "function": {"name": "c"}}})",
                RequestKind::kChat);
  EXPECT_EQ(unknown.param(), "tool_choice.function.name");
  EXPECT_STREQ(unknown.what(),
               R"(tool_choice.function.name: expected the name of one of the tools, got "c")");

  for (const char* choice :
       {R"("required")", R"({"type": "function", "function": {"name": "a"}})"}) {
    for (const std::string& no_tools : {std::string(), std::string(R"(, "tools": [])")}) {
      const RequestError e = rejection(
          "{" + messages + no_tools + R"(, "tool_choice": )" + choice + "}", RequestKind::kChat);
      EXPECT_EQ(e.param(), "tool_choice") << choice << no_tools;
      EXPECT_NE(std::string(e.what()).find("no tools"), std::string::npos) << e.what();
    }
  }
}

struct Rejection {
  RequestKind kind;
  std::string body;
  std::string param;
  std::string message;  // a substring of what()
};

// Each rule, broken once: the message names the field, what was expected and what was given.
TEST(OpenAiRequest, RejectionsNameTheField) {
  constexpr RequestKind kChat = RequestKind::kChat, kCompletion = RequestKind::kCompletion;
  // A valid chat body with `rest` spliced in, and a valid completion body.
  const auto chat = [](const std::string& rest) {
    return R"({"messages": [{"role": "user", "content": "hi"}])" +
           (rest.empty() ? "" : ", " + rest) + "}";
  };
  const auto completion = [](const std::string& rest) {
    return R"({"prompt": "hi", )" + rest + "}";
  };
  const auto msg = [](const std::string& message) {
    return R"({"messages": [{"role": "user", "content": "hi"}, )" + message + "]}";
  };
  const std::string tool = R"({"type": "function", "function": {"name": "f"}})";
  const std::vector<Rejection> cases = {
      // The body.
      {kChat, "[1]", "", "the request body must be a JSON object, got an array"},
      {kChat, "\"text\"", "", "the request body must be a JSON object"},
      {kChat, "{\"messages\": ", "", "not valid JSON"},
      {kChat, "", "", "not valid JSON"},
      {kChat, "{} x", "", "not valid JSON"},
      {kChat, "{\"temperature\": 1e400}", "", "not valid JSON"},
      // messages
      {kChat, "{}", "messages", "messages: required, expected a non-empty array of messages"},
      {kChat, R"({"messages": []})", "messages", "got an empty array"},
      {kChat, R"({"messages": {"role": "user"}})", "messages", "got an object"},
      {kChat, R"({"messages": ["hi"]})", "messages[0]", "expected an object, got a string"},
      {kChat, msg(R"({"content": "x"})"), "messages[1].role", "required, expected a string"},
      {kChat, msg(R"({"role": "bot", "content": "x"})"), "messages[1].role",
       R"(expected one of "system", "developer", "user", "assistant", "tool", got "bot")"},
      {kChat, msg(R"({"role": 1, "content": "x"})"), "messages[1].role",
       "expected a string, got an integer"},
      {kChat, msg(R"({"role": "user"})"), "messages[1].content",
       "required, expected a string or a non-empty array of text parts"},
      {kChat, msg(R"({"role": "tool", "content": null})"), "messages[1].content", "got null"},
      {kChat, msg(R"({"role": "system", "content": 5})"), "messages[1].content", "got an integer"},
      {kChat, msg(R"({"role": "user", "content": []})"), "messages[1].content",
       "got an empty array"},
      {kChat, msg(R"({"role": "user", "content": ["x"]})"), "messages[1].content[0]",
       "expected an object, got a string"},
      {kChat, msg(R"({"role": "user", "content": [{"type": "text", "text": "a"},
               {"type": "image_url", "image_url": {"url": "http://x"}}]})"),
       "messages[1].content[1].type", R"(only "text" (text parts) is supported, got "image_url")"},
      {kChat, msg(R"({"role": "user", "content": [{"type": "text"}]})"),
       "messages[1].content[0].text", "required, expected a string"},
      {kChat, msg(R"({"role": "assistant", "reasoning_content": 1})"),
       "messages[1].reasoning_content", "expected a string, got an integer"},
      {kChat, msg(R"({"role": "assistant", "tool_calls": {}})"), "messages[1].tool_calls",
       "expected an array of tool calls, got an object"},
      {kChat, msg(R"({"role": "assistant", "tool_calls": [{"type": "function"}]})"),
       "messages[1].tool_calls[0].function", "required, expected an object"},
      {kChat,
       msg(R"({"role": "assistant", "tool_calls": [{"function": {"name": "", "arguments": "{}"}}]})"),
       "messages[1].tool_calls[0].function.name", R"(expected a non-empty string, got "")"},
      {kChat,
       msg(R"({"role": "assistant", "tool_calls": [{"type": "tool", "function": {"name": "f", "arguments": "{}"}}]})"),
       "messages[1].tool_calls[0].type", R"(only "function" is supported, got "tool")"},
      {kChat,
       msg(R"({"role": "assistant", "tool_calls": [{"id": 3, "function": {"name": "f", "arguments": "{}"}}]})"),
       "messages[1].tool_calls[0].id", "expected a string, got an integer"},
      {kChat, msg(R"({"role": "assistant", "tool_calls": [{"function": {"name": "f"}}]})"),
       "messages[1].tool_calls[0].function.arguments",
       "required, expected a JSON object, or a string holding one"},
      {kChat,
       msg(R"({"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": "[1]"}}]})"),
       "messages[1].tool_calls[0].function.arguments",
       R"(expected a JSON object, or a string holding one, got "[1]")"},
      {kChat,
       msg(R"({"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": "{x"}}]})"),
       "messages[1].tool_calls[0].function.arguments", R"(got "{x")"},
      {kChat,
       msg(R"({"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": 1}}]})"),
       "messages[1].tool_calls[0].function.arguments", "got an integer"},
      {kChat, msg(R"({"role": "tool", "content": "r", "tool_call_id": 1})"),
       "messages[1].tool_call_id", "expected a string, got an integer"},
      // tools, tool_choice, chat_template_kwargs
      {kChat, chat(R"("tools": {})"), "tools", "expected an array of tools, got an object"},
      {kChat, chat(R"("tools": [{"function": {"name": "f"}}])"), "tools[0].type",
       "required, expected a string"},
      {kChat, chat(R"("tools": [{"type": "retrieval", "function": {"name": "f"}}])"),
       "tools[0].type", R"(only "function" is supported, got "retrieval")"},
      {kChat, chat(R"("tools": [{"type": "function"}])"), "tools[0].function",
       "required, expected an object"},
      {kChat, chat(R"("tools": [{"type": "function", "function": {"name": ""}}])"),
       "tools[0].function.name", "expected a non-empty string"},
      {kChat,
       chat(R"("tools": [{"type": "function", "function": {"name": "f", "description": 1}}])"),
       "tools[0].function.description", "expected a string, got an integer"},
      {kChat,
       chat(R"("tools": [{"type": "function", "function": {"name": "f", "parameters": "{}"}}])"),
       "tools[0].function.parameters", "expected an object, got a string"},
      {kChat, chat(R"("tool_choice": "any")"), "tool_choice",
       R"(expected "none", "auto", "required" or a named function, got "any")"},
      {kChat, chat(R"("tool_choice": 1)"), "tool_choice",
       "expected a string or an object, got an integer"},
      {kChat, chat(R"("tools": [)" + tool + R"(], "tool_choice": {"type": "function"})"),
       "tool_choice.function", "required, expected an object"},
      {kChat, chat(R"("tools": [)" + tool + R"(], "tool_choice": {"function": {"name": "f"}})"),
       "tool_choice.type", "required, expected a string"},
      {kChat, chat(R"("chat_template_kwargs": [])"), "chat_template_kwargs",
       "expected an object, got an empty array"},
      {kChat, chat(R"("chat_template_kwargs": {"enable_thinking": "no"})"),
       "chat_template_kwargs.enable_thinking", "expected a boolean, got a string"},
      // prompt
      {kCompletion, "{}", "prompt", "prompt: required, expected a string"},
      {kCompletion, R"({"prompt": ""})", "prompt", R"(expected a non-empty string, got "")"},
      {kCompletion, R"({"prompt": [""]})", "prompt[0]", "expected a non-empty string"},
      {kCompletion, R"({"prompt": 5})", "prompt", "expected a string, got an integer"},
      {kCompletion, R"({"prompt": [1, 2, 3]})", "prompt",
       "only one text prompt is supported (a string, or an array holding one), got an array of 3 "
       "elements"},
      {kCompletion, R"({"prompt": [[1, 2]]})", "prompt", "got an array holding an array"},
      {kCompletion, R"({"prompt": ["a", "b"]})", "prompt", "only one text prompt is supported"},
      {kCompletion, R"({"prompt": []})", "prompt", "got an array of 0 elements"},
      // Sampling.
      {kChat, chat(R"("model": 5)"), "model", "model: expected a string, got an integer"},
      {kChat, chat(R"("temperature": 3.5)"), "temperature",
       "temperature: expected a number in [0, 2], got 3.5"},
      {kChat, chat(R"("temperature": 3)"), "temperature", "got 3"},
      {kChat, chat(R"("temperature": -0.1)"), "temperature", "got -0.1"},
      {kChat, chat(R"("temperature": "1")"), "temperature", "expected a number, got a string"},
      {kChat, chat(R"("top_p": 0)"), "top_p", "top_p: expected a number in (0, 1], got 0"},
      {kChat, chat(R"("top_p": 1e-50)"), "top_p", "got 1e-50"},  // 0 as a float
      {kChat, chat(R"("top_p": 1.5)"), "top_p", "got 1.5"},
      {kChat, chat(R"("top_k": -2)"), "top_k", "top_k: expected an integer >= -1, got -2"},
      {kChat, chat(R"("top_k": 2.5)"), "top_k", "got 2.5"},
      {kChat, chat(R"("top_k": 1e30)"), "top_k", "got 1e+30"},
      {kChat, chat(R"("top_k": 18446744073709551615)"), "top_k", "got 18446744073709551615"},
      {kChat, chat(R"("top_k": true)"), "top_k", "expected an integer >= -1, got a boolean"},
      {kChat, chat(R"("seed": 1.5)"), "seed", "seed: expected an integer, got 1.5"},
      {kChat, chat(R"("seed": "7")"), "seed", "expected an integer, got a string"},
      {kChat, chat(R"("max_tokens": "10")"), "max_tokens",
       "max_tokens: expected an integer in [1, 2147483647], got a string"},
      {kChat, chat(R"("max_tokens": 0)"), "max_tokens", "got 0"},
      {kChat, chat(R"("max_tokens": 2147483648)"), "max_tokens", "got 2147483648"},
      {kChat, chat(R"("max_completion_tokens": -5, "max_tokens": 5)"), "max_completion_tokens",
       "got -5"},
      {kChat, chat(R"("max_completion_tokens": 5, "max_tokens": 0)"), "max_tokens", "got 0"},
      {kChat, chat(R"("stop": "")"), "stop", R"(stop: expected a non-empty string, got "")"},
      {kChat, chat(R"("stop": ["a", ""])"), "stop[1]", "expected a non-empty string"},
      {kChat, chat(R"("stop": ["a", 1])"), "stop[1]", "expected a string, got an integer"},
      {kChat, chat(R"("stop": 1)"), "stop", "expected a string or an array of strings"},
      {kChat,
       chat(
           R"("stop": ["1","2","3","4","5","6","7","8","9","10","11","12","13","14","15","16","17"])"),
       "stop", "expected at most 16 stop strings, got 17"},
      // Streaming.
      {kChat, chat(R"("stream": "true")"), "stream", "stream: expected a boolean, got a string"},
      {kChat, chat(R"("stream_options": {"include_usage": true})"), "stream_options",
       "only allowed when stream is true"},
      {kChat, chat(R"("stream": false, "stream_options": {})"), "stream_options",
       "only allowed when stream is true"},
      {kChat, chat(R"("stream": true, "stream_options": true)"), "stream_options",
       "expected an object, got a boolean"},
      {kChat, chat(R"("stream": true, "stream_options": {"include_usage": 1})"),
       "stream_options.include_usage", "expected a boolean, got an integer"},
      // Unsupported: accepted only at the value that does not change the answer.
      {kChat, chat(R"("n": 2)"), "n", "only n = 1 is supported, got 2"},
      {kChat, chat(R"("n": "1")"), "n", "expected an integer, got a string"},
      {kCompletion, completion(R"("best_of": 3)"), "best_of", "only best_of = 1 is supported"},
      {kChat, chat(R"("logprobs": true)"), "logprobs", "only false is supported, got true"},
      {kChat, chat(R"("logprobs": 1)"), "logprobs", "expected a boolean, got an integer"},
      {kCompletion, completion(R"("logprobs": 5)"), "logprobs", "only 0 is supported, got 5"},
      {kChat, chat(R"("top_logprobs": 2)"), "top_logprobs", "only 0 is supported, got 2"},
      {kCompletion, completion(R"("echo": true)"), "echo", "only false is supported"},
      {kCompletion, completion(R"("suffix": "")"), "suffix", R"(only null is supported, got "")"},
      {kChat, chat(R"("response_format": {"type": "json_object"})"), "response_format.type",
       R"(only "text" is supported, got "json_object")"},
      {kChat, chat(R"("response_format": "json")"), "response_format",
       "expected an object, got a string"},
      {kChat, chat(R"("presence_penalty": 0.5)"), "presence_penalty",
       "only 0 is supported, got 0.5"},
      {kChat, chat(R"("frequency_penalty": -1)"), "frequency_penalty", "got -1"},
      {kChat, chat(R"("frequency_penalty": "0")"), "frequency_penalty",
       "expected a number, got a string"},
      {kChat, chat(R"("repetition_penalty": 1.1)"), "repetition_penalty",
       "only 1 is supported, got 1.1"},
      {kChat, chat(R"("logit_bias": {"15": 100})"), "logit_bias",
       "only {} is supported, got an object"},
      {kChat, chat(R"("logit_bias": [])"), "logit_bias", "expected an object"},
      {kChat, chat(R"("min_p": 0.1)"), "min_p", "only 0 is supported"},
      {kCompletion, completion(R"("min_tokens": 5)"), "min_tokens", "only 0 is supported"},
      {kChat, chat(R"("ignore_eos": 1)"), "ignore_eos", "expected a boolean"},
      {kChat, chat(R"("guided_json": {"type": "object"})"), "guided_json",
       "only null is supported"},
  };
  for (const Rejection& c : cases) {
    const RequestError e = rejection(c.body, c.kind);
    EXPECT_EQ(e.status(), 400) << c.body;
    EXPECT_EQ(e.param(), c.param) << c.body << "\n  -> " << e.what();
    EXPECT_NE(std::string(e.what()).find(c.message), std::string::npos)
        << c.body << "\n  -> " << e.what() << "\n  expected to contain: " << c.message;
  }
}

TEST(OpenAiRequest, LongStringsAreCutAtACharacterInMessages) {
  // 39 ASCII bytes, then a 4-byte character across the 40-byte cut.
  const std::string role = std::string(39, 'r') + "\xF0\x9F\x98\x80" + "tail";
  const RequestError e = rejection(R"({"messages": [{"role": ")" + role + R"(", "content": "x"}]})",
                                   RequestKind::kChat);
  EXPECT_NE(std::string(e.what()).find("got \"" + std::string(39, 'r') + "...\""),
            std::string::npos)
      << e.what();
  EXPECT_NO_THROW(e.body().dump());
}

TEST(OpenAiRequest, InvalidUtf8IsNotJson) {
  for (const std::string& bytes : {std::string("\xFF"), std::string("\xC3"),  // truncated é
                                   std::string("\xED\xA0\x80"),               // a surrogate
                                   std::string("\xC0\xAF")}) {                // overlong '/'
    const RequestError e = rejection(
        R"({"messages": [{"role": "user", "content": ")" + bytes + R"("}]})", RequestKind::kChat);
    EXPECT_EQ(e.param(), "");
    EXPECT_NE(std::string(e.what()).find("not valid JSON"), std::string::npos) << e.what();
    EXPECT_NO_THROW(e.body().dump());
  }
  const RequestError lone =
      rejection(R"({"prompt": "\ud800"})", RequestKind::kCompletion);  // an escaped lone surrogate
  EXPECT_NE(std::string(lone.what()).find("not valid JSON"), std::string::npos) << lone.what();
  // Valid UTF-8, escaped or not, passes.
  EXPECT_EQ(
      parse_openai_request(R"({"prompt": "é\u4e2d\ud83d\ude00"})", RequestKind::kCompletion).prompt,
      "é\xE4\xB8\xAD\xF0\x9F\x98\x80");
}

TEST(OpenAiRequest, DeepNestingIsRejectedBeforeParsing) {
  for (const std::string& body :
       {std::string(100000, '['), std::string(1000000, '[') + std::string(1000000, ']'),
        R"({"messages": [{"role": "user", "content": "x", "extra": )" + std::string(100000, '[') +
            std::string(100000, ']') + "}]}"}) {
    const RequestError e = rejection(body, RequestKind::kChat);
    EXPECT_EQ(e.param(), "");
    EXPECT_NE(std::string(e.what()).find("nested deeper than 64 levels"), std::string::npos);
  }
  // The limit is exact: kMaxRequestDepth levels pass, brackets inside strings do not count.
  const auto nested = [](int levels) {
    const int inner = levels - 3;  // the body, messages and the message are 3 levels
    return R"({"messages": [{"role": "user", "content": "[[[{{{", "x": )" +
           std::string(inner, '[') + std::string(inner, ']') + "}]}";
  };
  EXPECT_NO_THROW(parse_openai_request(nested(kMaxRequestDepth), RequestKind::kChat));
  EXPECT_EQ(rejection(nested(kMaxRequestDepth + 1), RequestKind::kChat).param(), "");

  // A tool call's arguments text is JSON too, and kept for the template.
  const std::string deep_arguments = std::string(100, '[') + std::string(100, ']');
  const RequestError e = rejection(
      R"({"messages": [{"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": ")" +
          deep_arguments + R"("}}]}]})",
      RequestKind::kChat);
  EXPECT_EQ(e.param(), "messages[0].tool_calls[0].function.arguments");
  EXPECT_NE(std::string(e.what()).find("nested deeper than 64 levels"), std::string::npos);
}

TEST(OpenAiRequest, ErrorBodyHasOpenAisShape) {
  const RequestError e =
      rejection(R"({"prompt": "x", "temperature": 3.5})", RequestKind::kCompletion);
  EXPECT_EQ(e.body().dump(),
            R"({"error":{"message":"temperature: expected a number in [0, 2], got 3.5",)"
            R"("type":"invalid_request_error","param":"temperature","code":null}})");
  const RequestError whole = rejection("[]", RequestKind::kChat);
  EXPECT_EQ(whole.body()["error"]["param"], nullptr);
  EXPECT_EQ(whole.body()["error"]["message"],
            "the request body must be a JSON object, got an empty array");
  EXPECT_EQ(RequestError(503, "busy", "", "server_error").body()["error"]["type"], "server_error");
}

}  // namespace
}  // namespace whittle
