// The OpenAI request bodies `whittle serve` accepts, parsed and validated before anything is
// queued: POST /v1/chat/completions and POST /v1/completions. Every field the server acts on is
// checked for type and range; a bad one is a RequestError (HTTP 400) whose message and `param` name
// the field, as OpenAI's and vLLM's servers answer. Fields the server does not act on and that do
// not change the answer (user, metadata, logit_bias = {}, presence_penalty = 0, ...) are accepted
// and ignored; ones that would change it and are not supported (n > 1, logprobs, a JSON response
// format, best_of > 1, ...) are a 400 naming the field, never silently ignored.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace whittle {

// An error answered to an HTTP client: the status and OpenAI's error object
//   {"error": {"message": ..., "type": ..., "param": ... | null, "code": ... | null}}
class RequestError : public std::runtime_error {
 public:
  RequestError(int status, std::string message, std::string param = "",
               std::string type = "invalid_request_error")
      : std::runtime_error(message),
        status_(status),
        param_(std::move(param)),
        type_(std::move(type)) {}
  int status() const { return status_; }
  const std::string& param() const { return param_; }  // "" when no one field is to blame
  const std::string& type() const { return type_; }
  nlohmann::ordered_json body() const;

 private:
  int status_;
  std::string param_, type_;
};

enum class RequestKind { kChat, kCompletion };

// The deepest nesting of arrays and objects a body (or a tool call's `arguments` text) may have:
// copying, comparing and dumping JSON recurse once per level, so a body of 10^6 '[' would overflow
// the stack. Real requests, JSON schemas of tools included, stay far below.
inline constexpr int kMaxRequestDepth = 64;

// How the model may call tools (OpenAI `tool_choice`): "auto" (the default with tools), "none"
// (tools are not rendered), "required", or one named function.
struct ToolChoice {
  enum class Mode { kAuto, kNone, kRequired, kFunction } mode = Mode::kAuto;
  std::string function;  // kFunction: the name, which is one of the request's tools
};

struct OpenAiRequest {
  RequestKind kind = RequestKind::kChat;
  std::string model;  // as sent; "" when absent

  // kChat. `messages`: a non-empty array of objects, each with a `role` among system, developer,
  // user, assistant, tool; `content` a string, null (assistant with tool_calls) or an array of
  // {"type": "text", "text": string} parts; assistant `tool_calls` each {"id"?, "type"?:
  // "function", "function": {"name": string, "arguments": JSON text or object}};
  // `reasoning_content` a string; tool messages a `tool_call_id` string (optional). Kept as sent,
  // for the chat template. `tools`: null or a non-empty array of {"type": "function", "function":
  // {"name": string, "description"?: string, "parameters"?: object}}.
  nlohmann::ordered_json messages = nlohmann::ordered_json::array();
  nlohmann::ordered_json tools;  // null when absent or empty
  ToolChoice tool_choice;
  std::optional<bool> enable_thinking;  // chat_template_kwargs.enable_thinking (as vLLM takes it)

  // kCompletion: `prompt`, a string or an array holding one string.
  std::string prompt;

  // Sampling; unset: the model's generation_config.json decides (serve/generation.h).
  std::optional<float> temperature;  // [0, 2]; 0 = greedy
  std::optional<float> top_p;        // (0, 1]
  std::optional<int64_t> top_k;      // >= 0, or -1 (vLLM's "off", stored as 0)
  std::optional<uint64_t> seed;      // any JSON integer (a negative one as its two's complement)
  // max_tokens or max_completion_tokens (the newer name wins when both are sent): >= 1.
  std::optional<int64_t> max_tokens;
  std::vector<std::string> stop;  // a string or an array of up to 16 non-empty strings
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage (only with stream)
  bool ignore_eos = false;     // vLLM's extension: generate past the model's EOS ids
};

// Parse and validate a body. Throws RequestError (400) naming the field; never anything else for
// any input (the fuzz target holds it to that).
OpenAiRequest parse_openai_request(std::string_view body, RequestKind kind);

}  // namespace whittle
