#include "serve/openai_request.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>

namespace whittle {
namespace {

using ojson = nlohmann::ordered_json;

constexpr size_t kMaxStops = 16;  // OpenAI's limit is 4; vLLM has none. 16 bounds the stop check.
constexpr int64_t kMaxTokensLimit = std::numeric_limits<int32_t>::max();
constexpr size_t kQuotedChars = 40;  // of a string value quoted in an error message

// Whether `text` nests arrays and objects deeper than kMaxRequestDepth, counting brackets outside
// strings: exact for valid JSON, and a cheap scan before parsing. nlohmann parses and destroys
// without recursion, but copying, comparing and dumping a value recurse once per level: messages
// nested 10^6 deep would overflow the stack wherever the request is copied or rendered.
bool nested_too_deep(std::string_view text) {
  int depth = 0;
  bool in_string = false, escaped = false;
  for (const char c : text) {
    if (in_string) {
      if (escaped)
        escaped = false;
      else if (c == '\\')
        escaped = true;
      else if (c == '"')
        in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > kMaxRequestDepth) return true;
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return false;
}

std::string type_of(const ojson& v) {
  switch (v.type()) {
    case ojson::value_t::string:
      return "a string";
    case ojson::value_t::boolean:
      return "a boolean";
    case ojson::value_t::number_integer:
    case ojson::value_t::number_unsigned:
      return "an integer";
    case ojson::value_t::number_float:
      return "a number";
    case ojson::value_t::object:
      return "an object";
    case ojson::value_t::array:
      return v.empty() ? "an empty array" : "an array";
    default:
      return "null";
  }
}

// A scalar as JSON (a long string cut at a UTF-8 character boundary, so that the error body still
// dumps), a container by its type: dumping one recurses and could be megabytes.
std::string value_of(const ojson& v) {
  if (v.is_string()) {
    std::string s = v.get<std::string>();
    if (s.size() > kQuotedChars) {
      size_t n = kQuotedChars;
      while (n > 0 && (static_cast<unsigned char>(s[n]) & 0xC0) == 0x80) --n;
      s = s.substr(0, n) + "...";
    }
    return ojson(s).dump();
  }
  if (v.is_primitive() && !v.is_null()) return v.dump();
  return type_of(v);
}

// One value of the body and the path that names it in errors and in `param`
// ("messages[2].content", "stream_options.include_usage"). A missing member reads as null: the
// rules treat an absent field and a null one alike, and only the message tells them apart.
class Field {
 public:
  Field(const ojson& value, std::string path, bool missing = false)
      : value_(&value), path_(std::move(path)), missing_(missing) {}

  const ojson& json() const { return *value_; }
  bool null() const { return value_->is_null(); }

  Field operator[](const char* key) const {
    static const ojson kNull;
    std::string path = path_.empty() ? key : path_ + "." + key;
    const auto it = value_->find(key);
    if (it == value_->end()) return Field(kNull, std::move(path), /*missing=*/true);
    return Field(*it, std::move(path));
  }
  Field at(size_t i) const { return Field((*value_)[i], fmt::format("{}[{}]", path_, i)); }

  [[noreturn]] void reject(std::string_view message) const {
    throw RequestError(400, fmt::format("{}: {}", path_, message), path_);
  }
  // A wrong type: names the type given.
  [[noreturn]] void expected(std::string_view what) const {
    if (missing_) reject(fmt::format("required, expected {}", what));
    reject(fmt::format("expected {}, got {}", what, type_of(*value_)));
  }
  // The right type, a wrong value: quotes the value given.
  [[noreturn]] void expected_value(std::string_view what) const {
    reject(fmt::format("expected {}, got {}", what, value_of(*value_)));
  }
  [[noreturn]] void unsupported(std::string_view accepted) const {
    reject(fmt::format("only {} is supported, got {}", accepted, value_of(*value_)));
  }

  const ojson& object() const {
    if (!value_->is_object()) expected("an object");
    return *value_;
  }
  const std::string& string() const {
    if (!value_->is_string()) expected("a string");
    return value_->get_ref<const std::string&>();
  }
  const std::string& non_empty_string() const {
    if (string().empty()) expected_value("a non-empty string");
    return string();
  }
  bool boolean() const {
    if (!value_->is_boolean()) expected("a boolean");
    return value_->get<bool>();
  }
  double number() const {
    if (!value_->is_number()) expected("a number");
    return value_->get<double>();
  }
  // A number in [lo, hi] ((lo, hi] when `open_low`), in float too: the sampler's type, where
  // 1e-50 would be 0.
  float number_in(double lo, double hi, bool open_low = false) const {
    const auto inside = [&](double x) { return (open_low ? x > lo : x >= lo) && x <= hi; };
    const double x = number();
    if (!inside(x) || !inside(static_cast<float>(x)))
      expected_value(fmt::format("a number in {}{}, {}]", open_low ? '(' : '[', lo, hi));
    return static_cast<float>(x);
  }
  // An integer in [lo, hi]; a float that is exactly integral (40.0) counts, as in vLLM (pydantic).
  int64_t integer(int64_t lo = std::numeric_limits<int64_t>::min(),
                  int64_t hi = std::numeric_limits<int64_t>::max(),
                  std::string_view range = "") const {
    const std::string what = range.empty() ? "an integer" : fmt::format("an integer {}", range);
    int64_t i = 0;
    if (value_->is_number_unsigned()) {
      const auto u = value_->get<uint64_t>();
      if (u > static_cast<uint64_t>(hi)) expected_value(what);
      i = static_cast<int64_t>(u);
    } else if (value_->is_number_integer()) {
      i = value_->get<int64_t>();
    } else if (value_->is_number_float()) {
      const double d = value_->get<double>();
      if (d != std::trunc(d) || !(d >= -0x1p63 && d < 0x1p63)) expected_value(what);
      i = static_cast<int64_t>(d);
    } else {
      expected(what);
    }
    if (i < lo || i > hi) expected_value(what);
    return i;
  }

 private:
  const ojson* value_;
  std::string path_;
  bool missing_;
};

constexpr std::string_view kContentTypes = "a string or a non-empty array of text parts";

void check_content(const Field& content, bool may_be_null) {
  if (content.json().is_string() || (content.null() && may_be_null)) return;
  if (!content.json().is_array() || content.json().empty()) content.expected(kContentTypes);
  for (size_t i = 0; i < content.json().size(); ++i) {
    const Field part = content.at(i);
    part.object();
    if (part["type"].string() != "text") part["type"].unsupported("\"text\" (text parts)");
    part["text"].string();
  }
}

void check_tool_call(const Field& call) {
  call.object();
  if (!call["type"].null() && call["type"].string() != "function")
    call["type"].unsupported("\"function\"");
  if (!call["id"].null()) call["id"].string();
  const Field function = call["function"];
  function.object();
  function["name"].non_empty_string();
  const Field arguments = function["arguments"];
  if (arguments.json().is_object()) return;
  constexpr std::string_view kArguments = "a JSON object, or a string holding one";
  if (!arguments.json().is_string()) arguments.expected(kArguments);
  const std::string& text = arguments.string();
  if (nested_too_deep(text))
    arguments.reject(fmt::format("nested deeper than {} levels", kMaxRequestDepth));
  const ojson parsed = ojson::parse(text, nullptr, /*allow_exceptions=*/false);
  if (parsed.is_discarded() || !parsed.is_object()) arguments.expected_value(kArguments);
}

void check_message(const Field& message) {
  message.object();
  const Field role = message["role"];
  const std::string& r = role.string();
  if (r != "system" && r != "developer" && r != "user" && r != "assistant" && r != "tool")
    role.expected_value("one of \"system\", \"developer\", \"user\", \"assistant\", \"tool\"");
  const bool assistant = r == "assistant";
  check_content(message["content"], /*may_be_null=*/assistant);
  if (assistant) {
    const Field calls = message["tool_calls"];
    if (!calls.null()) {
      if (!calls.json().is_array()) calls.expected("an array of tool calls");
      for (size_t i = 0; i < calls.json().size(); ++i) check_tool_call(calls.at(i));
    }
    if (!message["reasoning_content"].null()) message["reasoning_content"].string();
  }
  if (r == "tool" && !message["tool_call_id"].null()) message["tool_call_id"].string();
}

// The tools' names; `tools` is null or an array (possibly empty) of function tools.
std::vector<std::string> check_tools(const Field& tools) {
  std::vector<std::string> names;
  if (tools.null()) return names;
  if (!tools.json().is_array()) tools.expected("an array of tools");
  for (size_t i = 0; i < tools.json().size(); ++i) {
    const Field tool = tools.at(i);
    tool.object();
    if (tool["type"].string() != "function") tool["type"].unsupported("\"function\"");
    const Field function = tool["function"];
    function.object();
    names.push_back(function["name"].non_empty_string());
    if (!function["description"].null()) function["description"].string();
    if (!function["parameters"].null()) function["parameters"].object();
  }
  return names;
}

ToolChoice check_tool_choice(const Field& choice, const std::vector<std::string>& tools) {
  ToolChoice out;
  if (choice.null()) return out;
  if (choice.json().is_string()) {
    const std::string& mode = choice.string();
    if (mode == "none") {
      out.mode = ToolChoice::Mode::kNone;
    } else if (mode == "required") {
      if (tools.empty()) choice.reject("\"required\" needs tools, and the request has no tools");
      out.mode = ToolChoice::Mode::kRequired;
    } else if (mode != "auto") {
      choice.expected_value("\"none\", \"auto\", \"required\" or a named function");
    }
    return out;
  }
  if (!choice.json().is_object()) choice.expected("a string or an object");
  if (choice["type"].string() != "function") choice["type"].unsupported("\"function\"");
  const Field function = choice["function"];
  function.object();
  const Field name = function["name"];
  out.mode = ToolChoice::Mode::kFunction;
  out.function = name.string();
  if (tools.empty()) choice.reject("names a function, and the request has no tools");
  if (std::find(tools.begin(), tools.end(), out.function) == tools.end())
    name.expected_value("the name of one of the tools");
  return out;
}

void parse_chat(ojson& json, const Field& body, OpenAiRequest& out) {
  const Field messages = body["messages"];
  if (!messages.json().is_array() || messages.json().empty())
    messages.expected("a non-empty array of messages");
  for (size_t i = 0; i < messages.json().size(); ++i) check_message(messages.at(i));

  const Field tools = body["tools"];
  const std::vector<std::string> names = check_tools(tools);
  out.tool_choice = check_tool_choice(body["tool_choice"], names);

  const Field kwargs = body["chat_template_kwargs"];
  if (!kwargs.null()) {
    kwargs.object();
    if (!kwargs["enable_thinking"].null())
      out.enable_thinking = kwargs["enable_thinking"].boolean();
  }

  // Validated: taken as sent, without a copy.
  out.messages = std::move(json["messages"]);
  if (!names.empty()) out.tools = std::move(json["tools"]);
}

void parse_completion(const Field& body, OpenAiRequest& out) {
  const Field prompt = body["prompt"];
  const ojson& p = prompt.json();
  if (p.is_array()) {
    if (p.size() != 1 || !p[0].is_string())
      prompt.reject(fmt::format(
          "only one text prompt is supported (a string, or an array holding one), got {}",
          p.size() == 1 ? "an array holding " + type_of(p[0])
                        : fmt::format("an array of {} elements", p.size())));
    out.prompt = prompt.at(0).non_empty_string();
  } else {
    if (!p.is_string()) prompt.expected("a string");
    out.prompt = prompt.non_empty_string();
  }

  const Field logprobs = body["logprobs"];
  if (!logprobs.null() && logprobs.integer() != 0) logprobs.unsupported("0");
  const Field echo = body["echo"];
  if (!echo.null() && echo.boolean()) echo.unsupported("false");
  if (!body["suffix"].null()) body["suffix"].unsupported("null");
}

// The sampling and streaming fields both endpoints take.
void parse_common(const Field& body, RequestKind kind, OpenAiRequest& out) {
  if (!body["model"].null()) out.model = body["model"].string();

  if (!body["temperature"].null()) out.temperature = body["temperature"].number_in(0, 2);
  if (!body["top_p"].null()) out.top_p = body["top_p"].number_in(0, 1, /*open_low=*/true);
  if (!body["top_k"].null())
    out.top_k = std::max<int64_t>(
        0, body["top_k"].integer(-1, std::numeric_limits<int64_t>::max(), ">= -1"));
  if (const Field seed = body["seed"]; !seed.null()) {
    out.seed = seed.json().is_number_unsigned() ? seed.json().get<uint64_t>()
                                                : static_cast<uint64_t>(seed.integer());
  }
  for (const char* key : {"max_tokens", "max_completion_tokens"}) {  // the newer name wins
    if (const Field max = body[key]; !max.null())
      out.max_tokens = max.integer(1, kMaxTokensLimit, fmt::format("in [1, {}]", kMaxTokensLimit));
  }

  const Field stop = body["stop"];
  if (stop.json().is_string()) {
    out.stop.push_back(stop.non_empty_string());
  } else if (stop.json().is_array()) {
    if (stop.json().size() > kMaxStops)
      stop.reject(
          fmt::format("expected at most {} stop strings, got {}", kMaxStops, stop.json().size()));
    for (size_t i = 0; i < stop.json().size(); ++i)
      out.stop.push_back(stop.at(i).non_empty_string());
  } else if (!stop.null()) {
    stop.expected("a string or an array of strings");
  }

  if (!body["stream"].null()) out.stream = body["stream"].boolean();
  if (const Field options = body["stream_options"]; !options.null()) {
    options.object();
    if (!out.stream) options.reject("only allowed when stream is true");
    if (!options["include_usage"].null()) out.include_usage = options["include_usage"].boolean();
  }
  if (const Field f = body["ignore_eos"]; !f.null()) out.ignore_eos = f.boolean();

  // Accepted only at the value that leaves the answer as whittle gives it.
  if (const Field n = body["n"]; !n.null() && n.integer() != 1) n.unsupported("n = 1");
  if (const Field b = body["best_of"]; !b.null() && b.integer() != 1) b.unsupported("best_of = 1");
  if (kind == RequestKind::kChat) {
    if (const Field l = body["logprobs"]; !l.null() && l.boolean()) l.unsupported("false");
  }
  if (const Field t = body["top_logprobs"]; !t.null() && t.integer() != 0) t.unsupported("0");
  if (const Field format = body["response_format"]; !format.null()) {
    format.object();
    if (format["type"].string() != "text") format["type"].unsupported("\"text\"");
  }
  for (const char* key : {"presence_penalty", "frequency_penalty"}) {
    if (const Field p = body[key]; !p.null() && p.number() != 0) p.unsupported("0");
  }
  if (const Field r = body["repetition_penalty"]; !r.null() && r.number() != 1) r.unsupported("1");
  if (const Field bias = body["logit_bias"]; !bias.null() && !bias.object().empty())
    bias.unsupported("{}");
  // vLLM's extensions that change the answer, at their neutral values only.
  for (const char* key : {"min_p", "min_tokens"})
    if (const Field f = body[key]; !f.null() && f.number() != 0) f.unsupported("0");
  for (const char* key : {"guided_json", "guided_regex", "guided_choice", "guided_grammar",
                          "structured_outputs", "logits_processors"})
    if (const Field f = body[key]; !f.null()) f.unsupported("null");
}

}  // namespace

ojson RequestError::body() const {
  ojson error = ojson::object();
  error["message"] = what();
  error["type"] = type_;
  error["param"] = param_.empty() ? ojson() : ojson(param_);
  error["code"] = nullptr;
  ojson out = ojson::object();
  out["error"] = std::move(error);
  return out;
}

OpenAiRequest parse_openai_request(std::string_view text, RequestKind kind) {
  if (nested_too_deep(text))
    throw RequestError(
        400, fmt::format("the request body is nested deeper than {} levels", kMaxRequestDepth));
  try {
    ojson json = ojson::parse(text, nullptr, /*allow_exceptions=*/false);
    if (json.is_discarded())
      throw RequestError(400, "the request body is not valid JSON (RFC 8259, in UTF-8)");
    if (!json.is_object())
      throw RequestError(400, "the request body must be a JSON object, got " + type_of(json));
    const Field body(json, "");
    OpenAiRequest out;
    out.kind = kind;
    if (kind == RequestKind::kChat)
      parse_chat(json, body, out);
    else
      parse_completion(body, out);
    parse_common(body, kind, out);
    return out;
  } catch (const nlohmann::json::exception& e) {  // none expected: every access is type-checked
    throw RequestError(400, fmt::format("the request body could not be read: {}", e.what()));
  }
}

}  // namespace whittle
