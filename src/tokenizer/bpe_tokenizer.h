// BpeTokenizer: the byte-level BPE of a Hugging Face tokenizer.json, in the form GLM-5 ships
// (no normalizer; Split(regex, Isolated) then ByteLevel without its own regex; BPE; ByteLevel
// decoder; added tokens after the regular ids). encode() matches `tokenizers`'
// `encode(text, add_special_tokens=False)` id for id; decode() matches `decode(ids,
// skip_special_tokens)`, including its lossy UTF-8 repair. StreamDecoder turns generated ids into
// text without ever splitting a UTF-8 character.
//
// The Split regex runs on PCRE2, with \s and [[:space:]] rewritten to \p{White_Space} (Oniguruma's
// set; PCRE2's own \s also matches U+180E). Known difference: PCRE2's Unicode tables (10.42:
// Unicode 14) are older than the Oniguruma ones `tokenizers` uses; code points assigned since (e.g.
// U+1C89..U+1C8A, CJK Extension I, the Unicode 16 scripts) can pre-tokenize differently.
//
// Thread safety: a loaded BpeTokenizer is immutable except for an internal word cache guarded by
// a shared mutex; encode/decode may be called concurrently from any number of threads.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace whittle {

// One entry of tokenizer.json's `added_tokens`, with the flags `tokenizers` honours while
// splitting.
struct AddedToken {
  int32_t id = 0;
  std::string content;
  bool special = false;  // skipped by decode(skip_special); not matched when parse_special=false
  bool lstrip = false;   // the match also swallows whitespace on its left
  bool rstrip = false;   // ... and on its right
  bool single_word = false;  // matched only when not inside a word
  bool normalized = false;   // matched on normalized text; same as raw here (no normalizer)
};

class BpeTokenizer {
 public:
  // Reads and validates `tokenizer.json`. Throws Error naming the file and the field for a
  // missing file, malformed JSON, or a model/normalizer/pre-tokenizer/decoder it does not support.
  static BpeTokenizer load(const std::filesystem::path& tokenizer_json);
  // Same from JSON text already in memory; `source_name` is what errors call it.
  static BpeTokenizer from_json_text(std::string_view json_text, std::string_view source_name);

  BpeTokenizer(BpeTokenizer&&) noexcept;
  BpeTokenizer& operator=(BpeTokenizer&&) noexcept;
  ~BpeTokenizer();

  // Text to ids. Added tokens are split out first (longest match at the leftmost position). With
  // parse_special=false, tokens flagged `special` are encoded as ordinary text (as `tokenizers`
  // does with encode_special_tokens=True); non-special added tokens are still recognised.
  // Throws Error("invalid UTF-8 at byte offset N ...") for input that is not UTF-8.
  std::vector<int32_t> encode(std::string_view text, bool parse_special = true) const;

  // Ids to text; invalid UTF-8 produced by partial tokens becomes U+FFFD as in `tokenizers`.
  // Throws Error for an id outside [0, vocab_size()).
  std::string decode(std::span<const int32_t> ids, bool skip_special = false) const;

  // The raw bytes one id stands for (an added token's content, or a BPE token's bytes).
  std::string_view token_bytes(int32_t id) const;
  bool is_special(int32_t id) const;

  std::optional<int32_t> token_to_id(std::string_view token) const;  // vocab or added token
  // The token's string as tokenizer.json spells it (byte-level alphabet for BPE tokens).
  std::string_view id_to_token(int32_t id) const;
  // One past the largest id (BPE vocab and added tokens together).
  int32_t vocab_size() const;

  const std::vector<AddedToken>& added_tokens() const;
  // The id of an added token by its content, e.g. "<|user|>"; throws Error if there is none.
  int32_t added_token_id(std::string_view content) const;

  const std::string& source_name() const;

 private:
  struct Impl;
  explicit BpeTokenizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Incremental detokenizer for generation: push() returns the text that is complete so far (never a
// partial UTF-8 character); flush() returns the rest. The concatenation of everything returned
// equals tokenizer.decode(all ids, skip_special).
class StreamDecoder {
 public:
  explicit StreamDecoder(const BpeTokenizer& tokenizer, bool skip_special = false);
  explicit StreamDecoder(BpeTokenizer&&,
                         bool = false) = delete;  // it keeps a pointer to the tokenizer
  std::string push(int32_t id);
  std::string flush();

 private:
  const BpeTokenizer* tokenizer_;
  bool skip_special_;
  std::string pending_;
};

// UTF-8 helpers shared with the chat template and the server.
// Byte offset of the first invalid UTF-8 sequence, or nullopt when `text` is valid UTF-8.
std::optional<size_t> find_invalid_utf8(std::string_view text);
// `bytes` as UTF-8 with each maximal invalid subpart replaced by U+FFFD (Rust's from_utf8_lossy).
std::string utf8_lossy(std::string_view bytes);

}  // namespace whittle
