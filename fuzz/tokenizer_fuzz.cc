// libFuzzer target for BpeTokenizer on the golden GLM-5-form tokenizer. Any input either is invalid
// UTF-8 and throws whittle::Error naming "invalid UTF-8", or encodes; then decode(encode(s)) must
// give s back (with and without added-token parsing), the streaming decoder must emit only whole
// UTF-8 characters and agree with decode, and decoding the input's bytes read as ids must not fail
// for ids in range. Anything else (a crash, a sanitizer report, a mismatch) is a finding.
//
// An input that is a JSON object with a "model" key is a tokenizer.json instead (seeds
// fuzz/seeds/tokenizer_fuzz/*.json): BpeTokenizer::from_json_text must load it or throw
// whittle::Error naming the file; any other exception (std::bad_alloc from an id near 2^31 was one)
// is a finding. A loaded tokenizer must have no more ids than model.vocab and added_tokens have
// entries, and must encode a few fixed strings into ids that decode.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "tokenizer/bpe_tokenizer.h"
#include "util/error.h"

namespace {

void check_tokenizer_json(std::string_view text, const nlohmann::json& doc) {
  std::optional<whittle::BpeTokenizer> tok;
  try {
    tok.emplace(whittle::BpeTokenizer::from_json_text(text, "fuzz/tokenizer.json"));
  } catch (const whittle::Error& e) {
    if (std::string_view(e.what()).substr(0, 20) != "fuzz/tokenizer.json:") __builtin_trap();
    return;
  }
  size_t entries = doc.contains("added_tokens") && doc["added_tokens"].is_array()
                       ? doc["added_tokens"].size()
                       : 0;
  if (doc["model"].is_object() && doc["model"].contains("vocab"))
    entries += doc["model"]["vocab"].size();
  if (static_cast<size_t>(tok->vocab_size()) > entries) __builtin_trap();
  for (const char* sample :
       {"Hello world", "  \u180e x\t\n", "<|user|>hi", "\xe4\xbd\xa0\xe5\xa5\xbd 123"}) {
    try {
      const std::vector<int32_t> ids = tok->encode(sample);
      for (int32_t id : ids)
        if (id < 0 || id >= tok->vocab_size()) __builtin_trap();
      (void)tok->decode(ids);
    } catch (const whittle::Error& e) {  // e.g. a fuzzed regex past PCRE2's match limit
      if (std::string_view(e.what()).substr(0, 20) != "fuzz/tokenizer.json:") __builtin_trap();
    }
  }
}

const whittle::BpeTokenizer& tokenizer() {
  static const whittle::BpeTokenizer tok = whittle::BpeTokenizer::load(
      std::string(WHITTLE_SOURCE_DIR) + "/tests/golden/tokenizer/tokenizer.json");
  return tok;
}

void check_round_trip(const whittle::BpeTokenizer& tok, std::string_view text, bool parse_special) {
  const std::vector<int32_t> ids = tok.encode(text, parse_special);
  if (tok.decode(ids) != text) __builtin_trap();
  whittle::StreamDecoder stream(tok);
  std::string streamed;
  for (int32_t id : ids) {
    const std::string piece = stream.push(id);
    if (whittle::find_invalid_utf8(piece)) __builtin_trap();
    streamed += piece;
  }
  streamed += stream.flush();
  if (streamed != text) __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const whittle::BpeTokenizer& tok = tokenizer();
  // Exactly-sized heap copy so a read past the end is an ASan report.
  std::vector<char> buffer(data, data + size);
  const std::string_view text(buffer.data(), buffer.size());

  if (size > 0 && data[0] == '{') {
    const nlohmann::json doc = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
    if (!doc.is_discarded() && doc.is_object() && doc.contains("model")) {
      check_tokenizer_json(text, doc);
      return 0;
    }
  }
  if (whittle::find_invalid_utf8(text)) {
    try {
      tok.encode(text);
    } catch (const whittle::Error& e) {
      if (!std::strstr(e.what(), "invalid UTF-8")) __builtin_trap();
      return 0;
    }
    __builtin_trap();  // invalid UTF-8 must not encode
  }
  check_round_trip(tok, text, /*parse_special=*/true);
  check_round_trip(tok, text, /*parse_special=*/false);

  // The same bytes as little-endian 16-bit ids: decode is lossy but must yield valid UTF-8 and
  // stream identically.
  std::vector<int32_t> ids;
  for (size_t i = 0; i + 1 < size; i += 2)
    ids.push_back(static_cast<int32_t>((data[i] | (data[i + 1] << 8)) % tok.vocab_size()));
  const std::string decoded = tok.decode(ids);
  if (whittle::find_invalid_utf8(decoded)) __builtin_trap();
  whittle::StreamDecoder stream(tok, /*skip_special=*/false);
  std::string streamed;
  for (int32_t id : ids) streamed += stream.push(id);
  streamed += stream.flush();
  if (streamed != decoded) __builtin_trap();
  return 0;
}
