// libFuzzer target for parse_openai_request, the parser of `whittle serve`'s request bodies (any
// bytes a client sends). Every input is parsed as a chat and as a completion request. It must
// either parse or throw RequestError with status 400, a non-empty message that starts with its
// `param` when it has one, and an error body that serializes (the message quotes the client's
// strings, cut short: a cut inside a UTF-8 character would make the dump throw); anything else
// thrown, a crash or a sanitizer report is a finding. A parsed request must hold what the server
// relies on: sampling values in range, a non-empty messages array of objects (chat) or a non-empty
// prompt (completion), null or non-empty tools, a named tool_choice among the tools, 1 to 16
// non-empty stop strings at most, include_usage only with stream, max_tokens >= 1.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "serve/openai_request.h"

namespace {

using whittle::OpenAiRequest;
using whittle::RequestKind;
using whittle::ToolChoice;

bool tool_named(const nlohmann::ordered_json& tools, const std::string& name) {
  for (const auto& t : tools)
    if (t.at("function").at("name") == name) return true;
  return false;
}

void check(const OpenAiRequest& r, RequestKind kind) {
  if (r.kind != kind) __builtin_trap();
  if (r.temperature && !(*r.temperature >= 0 && *r.temperature <= 2)) __builtin_trap();
  if (r.top_p && !(*r.top_p > 0 && *r.top_p <= 1)) __builtin_trap();
  if (r.top_k && *r.top_k < 0) __builtin_trap();
  if (r.max_tokens && !(*r.max_tokens >= 1 && *r.max_tokens <= INT32_MAX)) __builtin_trap();
  if (r.stop.size() > 16) __builtin_trap();
  for (const std::string& s : r.stop)
    if (s.empty()) __builtin_trap();
  if (r.include_usage && !r.stream) __builtin_trap();
  if (kind == RequestKind::kChat) {
    if (!r.messages.is_array() || r.messages.empty()) __builtin_trap();
    for (const auto& m : r.messages)
      if (!m.is_object() || !m.at("role").is_string()) __builtin_trap();
    if (!r.tools.is_null() && (!r.tools.is_array() || r.tools.empty())) __builtin_trap();
    if (r.tool_choice.mode == ToolChoice::Mode::kRequired && r.tools.is_null()) __builtin_trap();
    if (r.tool_choice.mode == ToolChoice::Mode::kFunction &&
        (r.tools.is_null() || !tool_named(r.tools, r.tool_choice.function)))
      __builtin_trap();
    if (!r.prompt.empty()) __builtin_trap();
  } else {
    if (r.prompt.empty() || !r.messages.empty() || !r.tools.is_null()) __builtin_trap();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::vector<char> buffer(data, data + size);  // exactly sized: reads past the end are reported
  const std::string_view body(buffer.data(), buffer.size());
  for (const RequestKind kind : {RequestKind::kChat, RequestKind::kCompletion}) {
    try {
      check(whittle::parse_openai_request(body, kind), kind);
    } catch (const whittle::RequestError& e) {
      const std::string_view message = e.what();
      if (e.status() != 400 || message.empty()) __builtin_trap();
      if (!e.param().empty() && !message.starts_with(e.param() + ": ")) __builtin_trap();
      try {
        if (e.body().dump().empty()) __builtin_trap();
      } catch (...) {
        __builtin_trap();
      }
    } catch (...) {
      __builtin_trap();
    }
  }
  return 0;
}
