// The OpenAI API over the engine, without the HTTP: a validated request (openai_request.h) becomes
// a Job (the chat template rendered, the text encoded, sampling from the request or the model's
// generation_config.json), and the tokens that come back become OpenAI's JSON — a whole response,
// or server-sent-event chunks as they are made. The HTTP layer (server.h) only moves bytes.
//
// Output text is cut at the first stop string (OpenAI `stop`), which is never returned; text that
// could still become one is held back until it cannot. In a chat, GLM-5's thinking is returned as
// `reasoning_content` and its XML tool calls as `tool_calls` (tool_calls.h), streamed as deltas:
// reasoning and content as they come, each tool call whole once its "</tool_call>" arrives.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "serve/engine.h"
#include "serve/generation.h"
#include "serve/openai_request.h"
#include "tokenizer/bpe_tokenizer.h"
#include "tokenizer/chat_template.h"

namespace whittle {

// What the API needs to know about the served model.
struct ServedModel {
  std::string id;  // the name /v1/models lists (the model folder's name)
  const BpeTokenizer* tokenizer = nullptr;
  std::optional<Glm5ChatTemplate> chat_template =
      std::nullopt;  // none: /v1/chat/completions answers 400
  GenerationDefaults defaults = {};
  std::vector<int64_t> stop_ids = {};  // generation_config.json's eos ids
  int64_t created = 0;                 // Unix time the server started, for `created`
};

// The request as the engine runs it, and what reading the output needs.
struct PreparedRequest {
  OpenAiRequest request;
  Job job;
  bool in_thinking = false;  // the prompt ends inside "<think>"
  // tool_choice "required" or a named function: the start of the answer the prompt already holds
  // ("<tool_call>", or "<tool_call>NAME"), so that the model can only go on with a call. The
  // output is read as if the model had written it.
  std::string answer_prefix;
};
// tool_choice "required" and a named function are held to by starting the answer with the call
// (answer_prefix; thinking, if on, is closed first): the model cannot answer in prose, though with
// no grammar it may still write a malformed call, which comes back as text.
// Throws RequestError (400) for what only the model can judge: a conversation the chat template
// cannot render, text that does not encode, a prompt or max_tokens past the context `ctx`.
PreparedRequest prepare_request(OpenAiRequest request, const ServedModel& model, int64_t ctx);

// The text of a generation as it grows: tokens decoded to complete UTF-8 characters, cut at the
// first stop string.
class OutputText {
 public:
  OutputText(const BpeTokenizer& tokenizer, std::vector<std::string> stop);
  // Adds a token's text; returns false once a stop string has been found (later tokens are
  // ignored).
  bool push(int32_t token);
  void finish();  // the generation ended: nothing more is held back
  const std::string& text() const { return text_; }
  // Bytes of text() that no later token can change: all of it, less a tail that may be the start
  // of a stop string.
  size_t stable() const { return stable_; }
  bool stopped() const { return stopped_; }

 private:
  void update();
  StreamDecoder decoder_;
  std::vector<std::string> stop_;
  std::string text_;
  size_t stable_ = 0;
  bool stopped_ = false;
};

// Streams a chat's stable text as OpenAI deltas: {"reasoning_content": ...}, {"content": ...},
// {"tool_calls": [{"index", "id", "type", "function": {"name", "arguments"}}]}.
class ChatDeltas {
 public:
  ChatDeltas(bool in_thinking, nlohmann::ordered_json tools, std::string id_prefix);
  // `text`: the stable text so far (each call a longer prefix of the same text); `final`: the
  // whole output, so nothing is held back. Returns the deltas for what is new.
  std::vector<nlohmann::ordered_json> update(std::string_view text, bool final);
  int tool_calls() const { return calls_; }

 private:
  enum class Mode { kThinking, kContent, kToolCall } mode_;
  void content(std::string_view s, std::vector<nlohmann::ordered_json>& out);
  nlohmann::ordered_json tools_;
  std::string id_prefix_;
  size_t pos_ = 0;
  bool content_started_ = false;
  std::string pending_space_;  // whitespace kept until content follows it
  int calls_ = 0;
};

// One request's answer, made from its Stream on the HTTP thread.
class Response {
 public:
  Response(PreparedRequest prepared, std::shared_ptr<Stream> stream, const ServedModel& model);
  ~Response();  // cancels the generation if it is still running (the client is gone)
  // Streaming: waits up to `timeout` for more output and returns the server-sent events for it
  // ("data: {...}\n\n" each; "" when nothing came), ending with "data: [DONE]\n\n" once done().
  std::string next_events(std::chrono::milliseconds timeout);
  // The same as JSON chunks (without the final [DONE]).
  std::vector<nlohmann::ordered_json> next_chunks(std::chrono::milliseconds timeout);
  // Not streaming: waits up to `timeout`; once done(), returns the whole JSON response, else "".
  std::string wait_body(std::chrono::milliseconds timeout);
  bool done() const { return done_; }
  void cancel() { stream_->cancel(); }

 private:
  // New tokens into text_; `finish_only`: wait for the end rather than for the next token.
  void pull(std::chrono::milliseconds timeout, bool finish_only = false);
  nlohmann::ordered_json chunk(nlohmann::ordered_json choice) const;
  nlohmann::ordered_json usage() const;
  std::string finish_reason() const;

  PreparedRequest prepared_;
  std::shared_ptr<Stream> stream_;
  const ServedModel& model_;
  std::string id_;
  OutputText text_;
  std::optional<ChatDeltas> deltas_;
  Stream::State state_;
  size_t seen_ = 0;       // tokens taken from the stream
  size_t sent_text_ = 0;  // completions streaming: bytes of text sent
  bool started_ = false, finished_ = false, done_ = false;
};

nlohmann::ordered_json models_list(const ServedModel& model, int64_t ctx);

}  // namespace whittle
