// libFuzzer target for BpeTokenizer on the golden GLM-5-form tokenizer. Any input either is invalid
// UTF-8 and throws whittle::Error naming "invalid UTF-8", or encodes; then decode(encode(s)) must
// give s back (with and without added-token parsing), the streaming decoder must emit only whole
// UTF-8 characters and agree with decode, and decoding the input's bytes read as ids must not fail
// for ids in range. Anything else (a crash, a sanitizer report, a mismatch) is a finding.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "tokenizer/bpe_tokenizer.h"
#include "util/error.h"

namespace {

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
