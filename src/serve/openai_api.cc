// The OpenAI API over the engine; see openai_api.h.
#include "serve/openai_api.h"

#include <fmt/core.h>

#include <algorithm>
#include <random>

#include "serve/tool_calls.h"
#include "util/error.h"

namespace whittle {
namespace {

using ojson = nlohmann::ordered_json;

std::string random_id(std::string_view prefix) {
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  return fmt::format("{}{:016x}", prefix, rng());
}

// Length of the longest tail of `text` that is a proper start of `word` (text that may still
// become `word` when more comes).
size_t partial_tail(std::string_view text, std::string_view word) {
  for (size_t n = std::min(text.size(), word.size() - 1); n > 0; --n)
    if (word.starts_with(text.substr(text.size() - n))) return n;
  return 0;
}

bool is_space(std::string_view s) {
  return s.find_first_not_of(kTrimmedSpace) == s.npos;
}

}  // namespace

PreparedRequest prepare_request(OpenAiRequest request, const ServedModel& model, int64_t ctx) {
  PreparedRequest p;
  std::string text;
  if (request.kind == RequestKind::kChat) {
    if (!model.chat_template)
      throw RequestError(400, fmt::format("the model {} has no chat template whittle can render; "
                                          "use /v1/completions",
                                          model.id));
    const bool use_tools = request.tool_choice.mode != ToolChoice::Mode::kNone;
    ChatTemplateOptions options{.add_generation_prompt = true,
                                .enable_thinking = request.enable_thinking,
                                .clear_thinking = std::nullopt};
    try {
      text = model.chat_template->render(request.messages, use_tools ? request.tools : ojson(),
                                         options);
    } catch (const Error& e) {
      throw RequestError(400, e.what(), "messages");
    }
    p.in_thinking = text.ends_with(kThinkBegin);
    const ToolChoice& choice = request.tool_choice;
    if (choice.mode == ToolChoice::Mode::kRequired || choice.mode == ToolChoice::Mode::kFunction) {
      if (p.in_thinking) text += kThinkEnd;
      p.in_thinking = false;
      p.answer_prefix = std::string(kCallBegin);
      if (choice.mode == ToolChoice::Mode::kFunction) p.answer_prefix += choice.function;
      text += p.answer_prefix;
    }
  } else {
    text = request.prompt;
  }
  try {
    p.job.prompt = model.tokenizer->encode(text);
  } catch (const Error& e) {
    throw RequestError(400, e.what(), request.kind == RequestKind::kChat ? "messages" : "prompt");
  }
  const auto prompt = static_cast<int64_t>(p.job.prompt.size());
  SamplingParams& s = p.job.sampling;
  s = model.defaults.sampling;
  if (request.temperature) s.temperature = *request.temperature;
  if (request.top_p) s.top_p = *request.top_p;
  if (request.top_k) s.top_k = *request.top_k;
  s.seed = request.seed ? *request.seed : std::random_device{}();
  // The model's default length is cut to the context without a word; a length the client asked
  // for that does not fit is its error (Engine::submit answers 400, as vLLM does).
  p.job.max_tokens = request.max_tokens
                         ? *request.max_tokens
                         : std::min(model.defaults.max_tokens, std::max<int64_t>(1, ctx - prompt));
  if (!request.ignore_eos) p.job.stop_ids = model.stop_ids;
  if (request.kind == RequestKind::kChat) p.job.prompt_field = "messages";
  p.request = std::move(request);
  return p;
}

OutputText::OutputText(const BpeTokenizer& tokenizer, std::vector<std::string> stop)
    : decoder_(tokenizer, /*skip_special=*/true), stop_(std::move(stop)) {}

bool OutputText::push(int32_t token) {
  if (stopped_) return false;
  text_ += decoder_.push(token);
  update();
  return !stopped_;
}

void OutputText::finish() {
  if (!stopped_) text_ += decoder_.flush();
  update();
  if (!stopped_) stable_ = text_.size();
}

void OutputText::update() {
  if (stopped_) return;
  // A stop string can only have appeared in the new text and the tail held back before it.
  size_t hold = 0;
  for (const std::string& s : stop_) {
    const size_t from = stable_ >= s.size() ? stable_ - s.size() + 1 : 0;
    const size_t at = text_.find(s, from);
    if (at != std::string::npos) {
      text_.resize(at);
      stopped_ = true;
    }
  }
  if (stopped_) {
    // Several stop strings: the cut above keeps the earliest, as each later find only shortens.
    stable_ = text_.size();
    return;
  }
  for (const std::string& s : stop_) hold = std::max(hold, partial_tail(text_, s));
  stable_ = text_.size() - hold;
}

ChatDeltas::ChatDeltas(bool in_thinking, ojson tools, std::string id_prefix)
    : mode_(in_thinking ? Mode::kThinking : Mode::kContent),
      tools_(std::move(tools)),
      id_prefix_(std::move(id_prefix)) {}

void ChatDeltas::content(std::string_view s, std::vector<ojson>& out) {
  if (s.empty()) return;
  // Content is trimmed as parse_assistant_output trims it: space before the first text, after the
  // last, and left where a tool call was taken out, is not sent.
  if (is_space(s)) {
    if (content_started_) pending_space_ += s;
    return;
  }
  std::string piece;
  if (!content_started_) {
    s.remove_prefix(s.find_first_not_of(kTrimmedSpace));
    content_started_ = true;
  } else {
    piece = std::move(pending_space_);
    pending_space_.clear();
  }
  // Trailing space waits: it is sent only if more text follows.
  const size_t end = s.find_last_not_of(kTrimmedSpace) + 1;
  piece += s.substr(0, end);
  pending_space_ = std::string(s.substr(end));
  out.push_back(ojson{{"content", piece}});
}

std::vector<ojson> ChatDeltas::update(std::string_view text, bool final) {
  std::vector<ojson> out;
  while (pos_ < text.size()) {
    const std::string_view rest = text.substr(pos_);
    if (mode_ == Mode::kThinking) {
      const size_t end = rest.find(kThinkEnd);
      const size_t n = end != std::string_view::npos ? end
                       : final                       ? rest.size()
                                                     : rest.size() - partial_tail(rest, kThinkEnd);
      if (n > 0) out.push_back(ojson{{"reasoning_content", std::string(rest.substr(0, n))}});
      pos_ += n;
      if (end == std::string_view::npos) break;
      pos_ += kThinkEnd.size();
      mode_ = Mode::kContent;
    } else if (mode_ == Mode::kContent) {
      const size_t begin = rest.find(kCallBegin);
      const size_t n = begin != std::string_view::npos ? begin
                       : final                         ? rest.size()
                               : rest.size() - partial_tail(rest, kCallBegin);
      content(rest.substr(0, n), out);
      pos_ += n;
      if (begin == std::string_view::npos) break;
      mode_ = Mode::kToolCall;
    } else {
      const size_t end = rest.find(kCallEnd);
      if (end == std::string_view::npos) {
        if (!final) break;
        content(rest, out);  // unterminated: the text as it is, as parse_assistant_output keeps it
        pos_ = text.size();
        break;
      }
      const std::string_view call_text = rest.substr(0, end + kCallEnd.size());
      AssistantOutput parsed = parse_assistant_output(call_text, false, tools_);
      if (parsed.tool_calls.size() == 1) {
        ojson call = tool_call_to_openai(parsed.tool_calls[0], random_id(id_prefix_));
        call = ojson{{"index", calls_++},
                     {"id", call["id"]},
                     {"type", "function"},
                     {"function", call["function"]}};
        out.push_back(ojson{{"tool_calls", ojson::array({call})}});
        pending_space_.clear();
      } else {
        content(call_text, out);  // malformed: kept as text
      }
      pos_ += call_text.size();
      mode_ = Mode::kContent;
    }
  }
  if (final) pending_space_.clear();
  return out;
}

Response::Response(PreparedRequest prepared, std::shared_ptr<Stream> stream,
                   const ServedModel& model)
    : prepared_(std::move(prepared)),
      stream_(std::move(stream)),
      model_(model),
      id_(random_id(prepared_.request.kind == RequestKind::kChat ? "chatcmpl-" : "cmpl-")),
      text_(*model.tokenizer, prepared_.request.stop) {
  if (prepared_.request.kind == RequestKind::kChat)
    deltas_.emplace(prepared_.in_thinking,
                    prepared_.request.tool_choice.mode == ToolChoice::Mode::kNone
                        ? ojson()
                        : prepared_.request.tools,
                    "call_");
}

Response::~Response() {
  stream_->cancel();
}

void Response::pull(std::chrono::milliseconds timeout, bool finish_only) {
  if (finished_) return;
  // A stop string can only be found in the text, so a request with one reads every token.
  stream_->wait(seen_, timeout, state_, finish_only && prepared_.request.stop.empty());
  seen_ += state_.tokens.size();
  for (int32_t t : state_.tokens)
    if (!text_.push(t)) {
      stream_->cancel();  // a stop string: the rest is not wanted
      break;
    }
  if (text_.stopped() || state_.finish != FinishReason::kRunning) {
    text_.finish();
    finished_ = true;
  }
}

std::string Response::finish_reason() const {
  if (text_.stopped()) return "stop";
  if (state_.finish == FinishReason::kStopId && deltas_ && deltas_->tool_calls() > 0)
    return "tool_calls";
  return finish_reason_name(state_.finish);
}

ojson Response::usage() const {
  // Sampled tokens, a final stop id included (vLLM counts it too).
  const auto completion =
      static_cast<int64_t>(seen_) + (state_.finish == FinishReason::kStopId ? 1 : 0);
  return ojson{{"prompt_tokens", state_.prompt_tokens},
               {"completion_tokens", completion},
               {"total_tokens", state_.prompt_tokens + completion},
               {"prompt_tokens_details", {{"cached_tokens", state_.cached_tokens}}}};
}

ojson Response::chunk(ojson choice) const {
  const bool chat = prepared_.request.kind == RequestKind::kChat;
  ojson c{{"id", id_},
          {"object", chat ? "chat.completion.chunk" : "text_completion"},
          {"created", model_.created},
          {"model", model_.id},
          {"choices", choice.is_null() ? ojson::array() : ojson::array({std::move(choice)})}};
  if (prepared_.request.include_usage) c["usage"] = nullptr;
  return c;
}

std::string Response::next_events(std::chrono::milliseconds timeout) {
  std::string events;
  for (const ojson& c : next_chunks(timeout)) events += "data: " + c.dump() + "\n\n";
  if (done_) events += "data: [DONE]\n\n";
  return events;
}

std::vector<ojson> Response::next_chunks(std::chrono::milliseconds timeout) {
  std::vector<ojson> chunks;
  if (done_) return chunks;
  const auto send = [&](ojson j) { chunks.push_back(std::move(j)); };
  const bool chat = prepared_.request.kind == RequestKind::kChat;
  if (!started_) {
    started_ = true;
    if (chat)
      send(chunk(ojson{{"index", 0},
                       {"delta", {{"role", "assistant"}, {"content", ""}}},
                       {"logprobs", nullptr},
                       {"finish_reason", nullptr}}));
  }
  pull(timeout);
  const std::string_view stable = std::string_view(text_.text()).substr(0, text_.stable());
  if (chat) {
    for (ojson& d : deltas_->update(prepared_.answer_prefix + std::string(stable), finished_))
      send(chunk(ojson{{"index", 0},
                       {"delta", std::move(d)},
                       {"logprobs", nullptr},
                       {"finish_reason", nullptr}}));
  } else if (stable.size() > sent_text_) {
    send(chunk(ojson{{"index", 0},
                     {"text", std::string(stable.substr(sent_text_))},
                     {"logprobs", nullptr},
                     {"finish_reason", nullptr}}));
    sent_text_ = stable.size();
  }
  if (finished_) {
    if (state_.finish == FinishReason::kError)
      send(RequestError(500, "generation failed: " + state_.error, "", "server_error").body());
    ojson last{{"index", 0}, {"logprobs", nullptr}, {"finish_reason", finish_reason()}};
    if (chat)
      last["delta"] = ojson::object();
    else
      last["text"] = "";
    send(chunk(std::move(last)));
    if (prepared_.request.include_usage) {
      ojson u = chunk(nullptr);
      u["usage"] = usage();
      send(u);
    }
    done_ = true;
  }
  return chunks;
}

std::string Response::wait_body(std::chrono::milliseconds timeout) {
  pull(timeout, /*finish_only=*/true);
  if (!finished_) return "";
  done_ = true;
  if (state_.finish == FinishReason::kError)
    return RequestError(500, "generation failed: " + state_.error, "", "server_error")
        .body()
        .dump();
  const bool chat = prepared_.request.kind == RequestKind::kChat;
  ojson choice{{"index", 0}};
  if (chat) {
    const bool tools = prepared_.request.tool_choice.mode != ToolChoice::Mode::kNone;
    AssistantOutput out =
        parse_assistant_output(prepared_.answer_prefix + text_.text(), prepared_.in_thinking,
                               tools ? prepared_.request.tools : ojson());
    ojson message{{"role", "assistant"},
                  {"content", out.content.empty() && !out.tool_calls.empty() ? ojson(nullptr)
                                                                             : ojson(out.content)}};
    if (prepared_.in_thinking) message["reasoning_content"] = out.reasoning_content;
    if (!out.tool_calls.empty()) {
      ojson calls = ojson::array();
      for (const ParsedToolCall& c : out.tool_calls)
        calls.push_back(tool_call_to_openai(c, random_id("call_")));
      message["tool_calls"] = std::move(calls);
    }
    choice["message"] = std::move(message);
    choice["logprobs"] = nullptr;
    std::string reason = finish_reason();
    if (reason == "stop" && !out.tool_calls.empty() && !text_.stopped()) reason = "tool_calls";
    choice["finish_reason"] = reason;
  } else {
    choice["text"] = text_.text();
    choice["logprobs"] = nullptr;
    choice["finish_reason"] = finish_reason();
  }
  ojson body{{"id", id_},
             {"object", chat ? "chat.completion" : "text_completion"},
             {"created", model_.created},
             {"model", model_.id},
             {"choices", ojson::array({std::move(choice)})},
             {"usage", usage()}};
  return body.dump();
}

ojson models_list(const ServedModel& model, int64_t ctx) {
  return ojson{{"object", "list"},
               {"data", ojson::array({ojson{{"id", model.id},
                                            {"object", "model"},
                                            {"created", model.created},
                                            {"owned_by", "whittle"},
                                            {"max_model_len", ctx}}})}};
}

}  // namespace whittle
