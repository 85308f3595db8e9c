// Glm5ChatTemplate: renders the GLM-5/5.1 conversation format natively (no Jinja engine), byte for
// byte what transformers' apply_chat_template(..., tokenize=False) gives with the checkpoint's
// chat_template.jinja. Messages and tools are OpenAI-style JSON, as a server receives them:
//   {"role": "system"|"user"|"assistant"|"tool", "content": string | [parts] | null,
//    "reasoning_content": string, "tool_calls": [{"function": {"name", "arguments": {...}}}]}
// Tool-call arguments may also be a JSON string (the OpenAI wire form); it is parsed first.
#pragma once

#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <span>
#include <string>
#include <string_view>

namespace whittle {

struct ChatTemplateOptions {
  bool add_generation_prompt = false;   // append "<|assistant|><think>" (or "</think>")
  std::optional<bool> enable_thinking;  // unset: the template's default (thinking on)
  std::optional<bool> clear_thinking;   // unset: reasoning kept only after the last user message
};

class Glm5ChatTemplate {
 public:
  // The differences between the template revisions whittle renders.
  struct Variant {
    // GLM-5.1: tools are unwrapped from {"type":"function","function":{...}}, `defer_loading` and
    // `strict` dropped, deferred tools left out. GLM-4.7/5: each tool is dumped as given.
    bool unwrap_tools = true;
    // GLM-5.1: assistant turns after the last user message with no reasoning get "<think></think>"
    // while thinking is on. GLM-4.7/5: a lone "</think>".
    bool empty_think_in_current_turn = true;
  };

  Glm5ChatTemplate() = default;  // GLM-5.1
  explicit Glm5ChatTemplate(Variant variant) : variant_(variant) {}

  // Reads a model folder's chat template (chat_template.jinja, else tokenizer_config.json's
  // "chat_template") and recognises it by content: only a template in known_templates(), whose
  // rendering this class reproduces byte for byte, is accepted, and it gives the variant. Any other
  // template (none, a non-GLM one, GLM-5.2's "Reasoning Effort", a GLM template edited by one
  // character, GLM-5.1's own file until it has been checked) is an Error naming the file: a prompt
  // that differs from what transformers renders would silently change what the model sees, so
  // `--chat` refuses rather than warns.
  static Glm5ChatTemplate load(const std::filesystem::path& model_dir);
  static Glm5ChatTemplate from_template_text(std::string_view jinja, std::string_view source_name);

  // A template text the renderer has been checked against, byte for byte, with transformers'
  // apply_chat_template (tests/golden/tokenizer/chat_golden.json).
  struct KnownTemplate {
    std::string_view name;  // what it is, for messages
    uint64_t fingerprint;   // template_fingerprint() of its text
    Variant variant;
  };
  static std::span<const KnownTemplate> known_templates();
  // FNV-1a 64 of the text after the normalisation Jinja itself applies to a template source (line
  // ends to "\n", one trailing newline dropped), so the .jinja file and tokenizer_config.json's
  // copy of one template agree. An identification, not a security check.
  static uint64_t template_fingerprint(std::string_view jinja);

  // Throws Error for malformed messages (a field of the wrong type, a content shape the template
  // cannot print, invalid UTF-8).
  std::string render(const nlohmann::ordered_json& messages, const nlohmann::ordered_json& tools,
                     const ChatTemplateOptions& options) const;

  const Variant& variant() const { return variant_; }

 private:
  Variant variant_;
};

// Python's json.dumps(value, ensure_ascii=False) (separators ", " and ": ", key order kept): the
// `tojson` filter transformers gives chat templates.
std::string python_json_dumps(const nlohmann::ordered_json& value);

}  // namespace whittle
