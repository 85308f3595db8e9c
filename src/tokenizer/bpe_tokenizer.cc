// BpeTokenizer: loading tokenizer.json and the encode/decode pipeline. The order of steps and every
// tie-break mirror Hugging Face `tokenizers` (added_vocabulary.rs, pre_tokenizers/split.rs,
// pre_tokenizers/byte_level.rs, models/bpe/word.rs), because the goldens are its output.
#include "tokenizer/bpe_tokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <utf8proc.h>

#include <array>
#include <mutex>
#include <nlohmann/json.hpp>
#include <queue>
#include <shared_mutex>
#include <string>
#include <unordered_map>

#include "io/json_excerpt.h"
#include "util/atomic_file.h"
#include "util/error.h"

namespace whittle {

namespace {

using json = nlohmann::json;

// ---------------------------------------------------------------------------------------------
// UTF-8

// The sequence a lead byte starts (the Unicode standard's table 3-7: no overlongs, no surrogates,
// nothing above U+10FFFF): its total length (0 for a byte that cannot lead) and the range allowed
// for its second byte; later bytes are always 0x80..0xBF.
struct Utf8Lead {
  size_t length = 0;
  uint8_t lo = 0x80, hi = 0xBF;
};

Utf8Lead utf8_lead(uint8_t b0) {
  if (b0 < 0x80) return {1};
  if (b0 >= 0xC2 && b0 <= 0xDF) return {2};
  if (b0 >= 0xE0 && b0 <= 0xEF)
    return {3, uint8_t(b0 == 0xE0 ? 0xA0 : 0x80), uint8_t(b0 == 0xED ? 0x9F : 0xBF)};
  if (b0 >= 0xF0 && b0 <= 0xF4)
    return {4, uint8_t(b0 == 0xF0 ? 0x90 : 0x80), uint8_t(b0 == 0xF4 ? 0x8F : 0xBF)};
  return {};
}

// How many bytes from s[i] are a valid prefix of the sequence s[i] leads (at least 1, at most its
// length; fewer when a byte is out of range or the text ends).
size_t utf8_valid_prefix(std::string_view s, size_t i, const Utf8Lead& lead) {
  size_t k = 1;
  for (; k < lead.length && i + k < s.size(); ++k) {
    const uint8_t c = static_cast<uint8_t>(s[i + k]);
    if (c < (k == 1 ? lead.lo : 0x80) || c > (k == 1 ? lead.hi : 0xBF)) break;
  }
  return k;
}

// Length of the valid UTF-8 sequence starting at s[i], or 0 if none starts there.
size_t utf8_sequence_length(std::string_view s, size_t i) {
  const Utf8Lead lead = utf8_lead(static_cast<uint8_t>(s[i]));
  if (lead.length == 0) return 0;
  return utf8_valid_prefix(s, i, lead) == lead.length ? lead.length : 0;
}

// Decodes the code point of a valid sequence of length `len` at s[i].
char32_t decode_utf8(std::string_view s, size_t i, size_t len) {
  const auto b = [&](size_t k) { return static_cast<char32_t>(static_cast<uint8_t>(s[i + k])); };
  switch (len) {
    case 1:
      return b(0);
    case 2:
      return ((b(0) & 0x1F) << 6) | (b(1) & 0x3F);
    case 3:
      return ((b(0) & 0x0F) << 12) | ((b(1) & 0x3F) << 6) | (b(2) & 0x3F);
    default:
      return ((b(0) & 0x07) << 18) | ((b(1) & 0x3F) << 12) | ((b(2) & 0x3F) << 6) | (b(3) & 0x3F);
  }
}

void append_utf8(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

// Rust's char::is_whitespace (the White_Space property), which added-token lstrip/rstrip use.
bool is_unicode_whitespace(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F ||
         c == 0x3000;
}

// A "word" character for single_word added tokens: letters, marks, numbers and '_' (regex \w).
bool is_word_char(char32_t c) {
  if (c == '_') return true;
  switch (utf8proc_category(static_cast<utf8proc_int32_t>(c))) {
    case UTF8PROC_CATEGORY_LU:
    case UTF8PROC_CATEGORY_LL:
    case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM:
    case UTF8PROC_CATEGORY_LO:
    case UTF8PROC_CATEGORY_MN:
    case UTF8PROC_CATEGORY_MC:
    case UTF8PROC_CATEGORY_ME:
    case UTF8PROC_CATEGORY_ND:
    case UTF8PROC_CATEGORY_NL:
    case UTF8PROC_CATEGORY_NO:
    case UTF8PROC_CATEGORY_PC:
      return true;
    default:
      return false;
  }
}

// Code point ending at byte `end` (exclusive) of valid UTF-8 text.
char32_t code_point_before(std::string_view s, size_t end, size_t* start_out) {
  size_t start = end - 1;
  while (start > 0 && (static_cast<uint8_t>(s[start]) & 0xC0) == 0x80) --start;
  *start_out = start;
  return decode_utf8(s, start, end - start);
}

// Start of a trailing sequence that is a valid UTF-8 prefix but not yet a whole character, or
// s.size() when the text does not end in one.
size_t incomplete_utf8_tail(std::string_view s) {
  for (size_t back = 1; back <= std::min<size_t>(3, s.size()); ++back) {
    const size_t i = s.size() - back;
    const uint8_t b = static_cast<uint8_t>(s[i]);
    if ((b & 0xC0) == 0x80) continue;  // a continuation byte: its lead is further back
    const Utf8Lead lead = utf8_lead(b);
    if (lead.length <= back) return s.size();
    return utf8_valid_prefix(s, i, lead) == back ? i : s.size();
  }
  return s.size();
}

// ---------------------------------------------------------------------------------------------
// GPT-2 byte-level alphabet: every byte is shown as a printable code point so that BPE tokens are
// strings. tokenizer.json stores tokens in this alphabet; internally whittle works on raw bytes.

struct ByteLevelAlphabet {
  std::array<char32_t, 256> byte_to_cp{};
  std::array<int16_t, 512> cp_to_byte{};  // -1 where a code point is not in the alphabet

  ByteLevelAlphabet() {
    cp_to_byte.fill(-1);
    std::array<bool, 256> direct{};
    for (int b = '!'; b <= '~'; ++b) direct[b] = true;
    for (int b = 0xA1; b <= 0xAC; ++b) direct[b] = true;
    for (int b = 0xAE; b <= 0xFF; ++b) direct[b] = true;
    int shifted = 0;
    for (int b = 0; b < 256; ++b) {
      byte_to_cp[b] = direct[b] ? static_cast<char32_t>(b) : static_cast<char32_t>(256 + shifted++);
      cp_to_byte[byte_to_cp[b]] = static_cast<int16_t>(b);
    }
  }

  // The raw bytes a token string stands for; nullopt if it has a code point outside the alphabet.
  std::optional<std::string> to_bytes(std::string_view token) const {
    std::string out;
    for (size_t i = 0; i < token.size();) {
      const size_t len = utf8_sequence_length(token, i);
      if (len == 0) return std::nullopt;
      const char32_t cp = decode_utf8(token, i, len);
      if (cp >= cp_to_byte.size() || cp_to_byte[cp] < 0) return std::nullopt;
      out += static_cast<char>(cp_to_byte[cp]);
      i += len;
    }
    return out;
  }
};

const ByteLevelAlphabet& byte_level() {
  static const ByteLevelAlphabet alphabet;
  return alphabet;
}

// ---------------------------------------------------------------------------------------------
// PCRE2 scratch space per thread: match data and a JIT stack are not shareable between threads,
// the compiled pattern is.

struct RegexScratch {
  pcre2_match_data* match_data = nullptr;
  pcre2_match_context* context = nullptr;
  pcre2_jit_stack* jit_stack = nullptr;

  RegexScratch() {
    match_data = pcre2_match_data_create(16, nullptr);
    context = pcre2_match_context_create(nullptr);
    // The default 32 KiB JIT stack is too small for `\s+` over very long whitespace runs.
    jit_stack = pcre2_jit_stack_create(64 * 1024, 8 * 1024 * 1024, nullptr);
    if (!match_data || !context || !jit_stack) throw std::bad_alloc();
    pcre2_jit_stack_assign(context, nullptr, jit_stack);
  }
  ~RegexScratch() {
    pcre2_jit_stack_free(jit_stack);
    pcre2_match_context_free(context);
    pcre2_match_data_free(match_data);
  }
  RegexScratch(const RegexScratch&) = delete;
  RegexScratch& operator=(const RegexScratch&) = delete;
};

RegexScratch& regex_scratch() {
  thread_local RegexScratch scratch;
  return scratch;
}

struct CompiledRegex {
  pcre2_code* code = nullptr;
  ~CompiledRegex() { pcre2_code_free(code); }
};

// A segment of the input after the added-token split: either an added token or plain text.
struct Segment {
  size_t begin, end;
  int32_t added_id;  // -1 for plain text
};

struct MergeTarget {
  int32_t rank;
  int32_t new_id;
};

uint64_t pair_key(int32_t left, int32_t right) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right);
}

const json& require(const json& object, const char* key, const std::string& where,
                    const std::string& source) {
  if (!object.is_object() || !object.contains(key))
    fail("{}: missing field '{}{}'", source, where.empty() ? "" : where + ".", key);
  return object.at(key);
}

// The Split regex as `tokenizers` reads it. Its Oniguruma takes \s and [[:space:]] to be Unicode
// White_Space; PCRE2 (with UCP) adds U+180E MONGOLIAN VOWEL SEPARATOR, a format character since
// Unicode 6.3, through its hard-coded \h list. That is the only code point where they differ, and
// PCRE2's \p{White_Space} (10.40+) is exactly the property, valid inside and outside classes, so
// \s, \S and the POSIX space classes are rewritten to it. Escaped characters (\\s is a backslash
// and an s) and \Q...\E quoting are copied as they are.
std::string with_unicode_white_space(std::string_view pattern) {
  std::string out;
  out.reserve(pattern.size() + 64);
  bool in_class = false;
  for (size_t i = 0; i < pattern.size(); ++i) {
    const char c = pattern[i];
    if (c == '\\' && i + 1 < pattern.size()) {
      const char next = pattern[i + 1];
      if (next == 's' || next == 'S') {
        out += next == 's' ? "\\p{White_Space}" : "\\P{White_Space}";
        ++i;
      } else if (next == 'Q') {
        const size_t end = pattern.find("\\E", i + 2);
        const size_t stop = end == std::string_view::npos ? pattern.size() : end + 2;
        out.append(pattern.substr(i, stop - i));
        i = stop - 1;
      } else {
        out.append(pattern.substr(i, 2));
        ++i;
      }
      continue;
    }
    if (!in_class && c == '[') {
      in_class = true;
      out += c;
      // A ']' right after '[' or '[^' is a literal member, not the end of the class.
      if (i + 1 < pattern.size() && pattern[i + 1] == '^') out += pattern[++i];
      if (i + 1 < pattern.size() && pattern[i + 1] == ']') out += pattern[++i];
      continue;
    }
    if (in_class && c == '[' && i + 1 < pattern.size() && pattern[i + 1] == ':') {
      const size_t end = pattern.find(":]", i + 2);
      if (end != std::string_view::npos) {
        const std::string_view name = pattern.substr(i + 2, end - i - 2);
        if (name == "space" || name == "^space")
          out += name == "space" ? "\\p{White_Space}" : "\\P{White_Space}";
        else
          out.append(pattern.substr(i, end + 2 - i));
        i = end + 1;
        continue;
      }
    }
    if (in_class && c == ']') in_class = false;
    out += c;
  }
  return out;
}

bool json_flag(const json& object, const char* key, bool fallback) {
  if (!object.contains(key) || object.at(key).is_null()) return fallback;
  return object.at(key).get<bool>();
}

}  // namespace

// ---------------------------------------------------------------------------------------------

struct BpeTokenizer::Impl {
  std::string source;
  std::unordered_map<std::string, int32_t> token_to_id;  // tokenizer.json spelling → id
  std::unordered_map<std::string, int32_t> bytes_to_id;  // raw bytes → BPE id (ignore_merges)
  std::vector<std::string> id_token;                     // id → tokenizer.json spelling
  std::vector<std::string> id_bytes;                     // id → raw bytes decode() emits
  std::vector<uint8_t> id_special;
  std::array<int32_t, 256> byte_id{};  // initial symbol per byte, -1 if none
  std::unordered_map<uint64_t, MergeTarget> merges;
  std::vector<AddedToken> added;
  std::array<std::vector<int32_t>, 256> added_by_first_byte;  // indices into `added`, longest first
  std::optional<int32_t> unk_id;
  bool fuse_unk = false;
  bool ignore_merges = false;
  CompiledRegex split_regex;

  mutable std::shared_mutex cache_mutex;
  mutable std::unordered_map<std::string, std::vector<int32_t>> word_cache;
  static constexpr size_t kCacheCapacity = 65536;
  static constexpr size_t kCacheMaxWordBytes = 128;

  void parse(const json& doc);
  void parse_model(const json& model, size_t added_count);
  void parse_pre_tokenizer(const json& pre);
  void parse_added(const json& added_tokens);

  void find_added(std::string_view text, size_t begin, size_t end, bool normalized_pass,
                  bool parse_special, std::vector<Segment>& out) const;
  void encode_text(std::string_view text, std::vector<int32_t>& out) const;
  void encode_word(std::string_view word, std::vector<int32_t>& out) const;
  void merge_word(std::string_view word, std::vector<int32_t>& out) const;
};

void BpeTokenizer::Impl::parse_model(const json& model, size_t added_count) {
  const std::string where = "model";
  if (model.contains("type") && model.at("type") != "BPE")
    fail("{}: unsupported model.type {} (only \"BPE\" is supported)", source,
         json_excerpt(model.at("type")));
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    if (model.contains(key) && !model.at(key).is_null() && model.at(key) != "")
      fail("{}: unsupported model.{} {} (byte-level BPE expects null)", source, key,
           json_excerpt(model.at(key)));
  }
  if (json_flag(model, "byte_fallback", false))
    fail("{}: unsupported model.byte_fallback true (byte-level BPE expects false)", source);
  if (model.contains("dropout") && !model.at("dropout").is_null() &&
      model.at("dropout").get<double>() != 0.0)
    fail("{}: unsupported model.dropout {} (inference expects null)", source,
         json_excerpt(model.at("dropout")));
  ignore_merges = json_flag(model, "ignore_merges", false);
  fuse_unk = json_flag(model, "fuse_unk", false);

  const json& vocab = require(model, "vocab", where, source);
  if (!vocab.is_object()) fail("{}: model.vocab must be an object of token → id", source);
  const ByteLevelAlphabet& alphabet = byte_level();
  // whittle keeps id → token tables, so ids must be dense: below the number of entries of
  // model.vocab and added_tokens together (tokens that appear in both are counted twice, which
  // leaves room for them). `tokenizers` itself takes any u32 id; a trained tokenizer.json never has
  // gaps, and an id such as 2^31 - 1 would otherwise cost a table of 2^31 entries.
  const size_t id_bound = vocab.size() + added_count;
  int32_t max_id = -1;
  for (const auto& [token, value] : vocab.items()) {
    if (!value.is_number_integer() || (!value.is_number_unsigned() && value.get<int64_t>() < 0))
      fail("{}: model.vocab[{}] must be a non-negative integer id, got {}", source,
           json(token).dump(), json_excerpt(value));
    if (value.get<uint64_t>() >= id_bound)
      fail(
          "{}: model.vocab[{}] has id {}, but {} model.vocab entries and {} added tokens allow ids "
          "0..{} only (whittle needs dense ids)",
          source, json(token).dump(), json_excerpt(value), vocab.size(), added_count, id_bound - 1);
    max_id = std::max(max_id, value.get<int32_t>());
  }
  id_token.assign(max_id + 1, std::string());
  id_bytes.assign(max_id + 1, std::string());
  std::vector<const std::string*> owner(max_id + 1, nullptr);
  byte_id.fill(-1);
  for (const auto& [token, value] : vocab.items()) {
    const int32_t id = value.get<int32_t>();
    // `tokenizers` would keep one of the two for decoding, whichever its hash map iterates last.
    if (owner[id])
      fail("{}: model.vocab maps both {} and {} to id {}", source, json(*owner[id]).dump(),
           json(token).dump(), id);
    owner[id] = &token;
    token_to_id[token] = id;
    id_token[id] = token;
    if (auto bytes = alphabet.to_bytes(token)) {
      id_bytes[id] = *bytes;
      if (bytes->size() == 1) byte_id[static_cast<uint8_t>((*bytes)[0])] = id;
      bytes_to_id.emplace(std::move(*bytes), id);
    } else {
      // Not reachable from byte-level text; decode still emits it as its own UTF-8.
      id_bytes[id] = token;
    }
  }

  if (model.contains("unk_token") && !model.at("unk_token").is_null()) {
    const std::string unk = model.at("unk_token").get<std::string>();
    auto it = token_to_id.find(unk);
    if (it == token_to_id.end())
      fail("{}: model.unk_token {} is not in model.vocab", source, json(unk).dump());
    unk_id = it->second;
  }

  const json& merge_list = require(model, "merges", where, source);
  if (!merge_list.is_array()) fail("{}: model.merges must be an array", source);
  merges.reserve(merge_list.size() * 2);
  int32_t rank = 0;
  for (const json& entry : merge_list) {
    std::string left, right;
    if (entry.is_string()) {
      const std::string text = entry.get<std::string>();
      const size_t space = text.find(' ', 1);
      if (space == std::string::npos)
        fail("{}: model.merges[{}] = {} is not \"left right\"", source, rank, json_excerpt(entry));
      left = text.substr(0, space);
      right = text.substr(space + 1);
    } else if (entry.is_array() && entry.size() == 2 && entry[0].is_string() &&
               entry[1].is_string()) {
      left = entry[0].get<std::string>();
      right = entry[1].get<std::string>();
    } else {
      fail("{}: model.merges[{}] = {} is neither \"left right\" nor [left, right]", source, rank,
           json_excerpt(entry));
    }
    const auto find = [&](const std::string& token) {
      auto it = token_to_id.find(token);
      if (it == token_to_id.end())
        fail("{}: model.merges[{}] uses {} which is not in model.vocab", source, rank,
             json(token).dump());
      return it->second;
    };
    const int32_t left_id = find(left), right_id = find(right), merged_id = find(left + right);
    // Later duplicates win, as in tokenizers' HashMap construction.
    merges[pair_key(left_id, right_id)] = MergeTarget{rank, merged_id};
    ++rank;
  }
}

void BpeTokenizer::Impl::parse_pre_tokenizer(const json& pre) {
  // Accepted: GLM-5's Sequence[Split(Regex, Isolated), ByteLevel(use_regex=false)], or a lone
  // ByteLevel with its GPT-2 regex.
  std::string pattern;
  uint32_t compile_options = PCRE2_UTF | PCRE2_UCP;
  const auto check_byte_level = [&](const json& node, const std::string& where,
                                    bool regex_allowed) {
    if (json_flag(node, "add_prefix_space", false))
      fail("{}: unsupported {}.add_prefix_space true (GLM-5 uses false)", source, where);
    const bool use_regex = json_flag(node, "use_regex", true);
    if (use_regex && !regex_allowed)
      fail("{}: unsupported {}.use_regex true after a Split (GLM-5 uses false)", source, where);
    return use_regex;
  };
  if (pre.is_null()) fail("{}: pre_tokenizer is null; a byte-level BPE needs ByteLevel", source);
  const std::string type = require(pre, "type", "pre_tokenizer", source).get<std::string>();
  if (type == "ByteLevel") {
    if (check_byte_level(pre, "pre_tokenizer", true))
      pattern = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
    else
      fail("{}: unsupported pre_tokenizer ByteLevel without a regex (nothing splits words)",
           source);
  } else if (type == "Sequence") {
    const json& steps = require(pre, "pretokenizers", "pre_tokenizer", source);
    if (!steps.is_array() || steps.size() != 2)
      fail("{}: unsupported pre_tokenizer.pretokenizers: expected [Split, ByteLevel], got {} steps",
           source, steps.is_array() ? steps.size() : 0);
    const json& split = steps[0];
    const std::string where = "pre_tokenizer.pretokenizers[0]";
    if (!split.is_object() || split.value("type", "") != "Split")
      fail("{}: unsupported {}.type {} (expected \"Split\")", source, where,
           split.is_object() && split.contains("type") ? json_excerpt(split.at("type")) : "null");
    if (split.value("behavior", "") != "Isolated")
      fail("{}: unsupported {}.behavior {} (only \"Isolated\" is supported)", source, where,
           split.contains("behavior") ? json_excerpt(split.at("behavior")) : "null");
    if (json_flag(split, "invert", false)) fail("{}: unsupported {}.invert true", source, where);
    const json& pat = require(split, "pattern", where, source);
    if (pat.contains("Regex")) {
      pattern = pat.at("Regex").get<std::string>();
    } else if (pat.contains("String")) {
      pattern = pat.at("String").get<std::string>();
      compile_options |= PCRE2_LITERAL;
    } else {
      fail("{}: {}.pattern must hold \"Regex\" or \"String\", got {}", source, where,
           json_excerpt(pat));
    }
    const json& second = steps[1];
    if (!second.is_object() || second.value("type", "") != "ByteLevel")
      fail(
          "{}: unsupported pre_tokenizer.pretokenizers[1].type {} (expected \"ByteLevel\")", source,
          second.is_object() && second.contains("type") ? json_excerpt(second.at("type")) : "null");
    check_byte_level(second, "pre_tokenizer.pretokenizers[1]", false);
  } else {
    fail(
        "{}: unsupported pre_tokenizer.type \"{}\" (expected Sequence[Split, ByteLevel] or "
        "ByteLevel)",
        source, type);
  }

  if (!(compile_options & PCRE2_LITERAL)) pattern = with_unicode_white_space(pattern);
  int error_code = 0;
  PCRE2_SIZE error_offset = 0;
  split_regex.code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                                   compile_options, &error_code, &error_offset, nullptr);
  if (!split_regex.code) {
    std::array<PCRE2_UCHAR, 256> message{};
    pcre2_get_error_message(error_code, message.data(), message.size());
    fail("{}: pre-tokenizer regex does not compile at offset {}: {}", source, error_offset,
         reinterpret_cast<const char*>(message.data()));
  }
  // JIT is an optimisation; pcre2_match falls back to the interpreter when it is unavailable.
  pcre2_jit_compile(split_regex.code, PCRE2_JIT_COMPLETE);
}

void BpeTokenizer::Impl::parse_added(const json& added_tokens) {
  if (added_tokens.is_null()) return;
  if (!added_tokens.is_array()) fail("{}: added_tokens must be an array", source);
  // `tokenizers` does not take added_tokens' ids as given: a token already in model.vocab (or added
  // before) keeps that id, any other gets the next one after the model.vocab entries and the added
  // tokens so far (AddedVocabulary::add_tokens). A file saved by `tokenizers` always agrees; an id
  // that does not would encode differently here, so it is refused.
  const int64_t model_entries = static_cast<int64_t>(token_to_id.size());
  std::unordered_map<std::string, int32_t> added_ids;
  int64_t max_added = -1;
  for (size_t i = 0; i < added_tokens.size(); ++i) {
    const json& entry = added_tokens[i];
    const std::string where = fmt::format("added_tokens[{}]", i);
    AddedToken token;
    token.content = require(entry, "content", where, source).get<std::string>();
    if (token.content.empty()) fail("{}: {}.content is empty", source, where);
    if (find_invalid_utf8(token.content)) fail("{}: {}.content is not valid UTF-8", source, where);
    const json& id = require(entry, "id", where, source);
    if (!id.is_number_integer() || (!id.is_number_unsigned() && id.get<int64_t>() < 0))
      fail("{}: {}.id of {} must be a non-negative integer, got {}", source, where,
           json(token.content).dump(), json_excerpt(id));
    int64_t expected;
    const char* why;
    if (auto it = added_ids.find(token.content); it != added_ids.end()) {
      expected = it->second;
      why = "an earlier added token with the same content has it";
    } else if (auto vt = token_to_id.find(token.content); vt != token_to_id.end()) {
      expected = vt->second;
      why = "its id in model.vocab";
    } else {
      expected = max_added >= model_entries ? max_added + 1 : model_entries;
      why = "the next id after model.vocab and the added tokens before it";
      if (expected < static_cast<int64_t>(id_token.size()) && !id_token[expected].empty())
        fail(
            "{}: {} {} would get id {}, which model.vocab already gives to {} (model.vocab ids "
            "have a gap)",
            source, where, json(token.content).dump(), expected, json(id_token[expected]).dump());
    }
    if (id.get<uint64_t>() != static_cast<uint64_t>(expected))
      fail("{}: {} {} has id {}, but tokenizers numbers it {} ({})", source, where,
           json(token.content).dump(), json_excerpt(id), expected, why);
    token.id = static_cast<int32_t>(expected);
    added_ids.emplace(token.content, token.id);
    max_added = std::max(max_added, expected);
    token.special = json_flag(entry, "special", false);
    token.lstrip = json_flag(entry, "lstrip", false);
    token.rstrip = json_flag(entry, "rstrip", false);
    token.single_word = json_flag(entry, "single_word", false);
    token.normalized = json_flag(entry, "normalized", !token.special);
    added.push_back(token);
  }
  int32_t max_id = static_cast<int32_t>(id_token.size()) - 1;
  for (const AddedToken& token : added) max_id = std::max(max_id, token.id);
  id_token.resize(max_id + 1);
  id_bytes.resize(max_id + 1);
  id_special.assign(max_id + 1, 0);
  const ByteLevelAlphabet& alphabet = byte_level();
  for (const AddedToken& token : added) {
    token_to_id[token.content] = token.id;
    id_token[token.id] = token.content;
    // The ByteLevel decoder maps a token through the alphabet when every character is in it and
    // otherwise keeps the token's own UTF-8 (byte_level.rs decode_chain).
    id_bytes[token.id] = alphabet.to_bytes(token.content).value_or(token.content);
    id_special[token.id] = token.special;
  }
  for (size_t i = 0; i < added.size(); ++i)
    added_by_first_byte[static_cast<uint8_t>(added[i].content[0])].push_back(
        static_cast<int32_t>(i));
  for (auto& bucket : added_by_first_byte) {
    std::stable_sort(bucket.begin(), bucket.end(), [&](int32_t a, int32_t b) {
      return added[a].content.size() > added[b].content.size();
    });
  }
}

void BpeTokenizer::Impl::parse(const json& doc) {
  if (!doc.is_object()) fail("{}: top level must be a JSON object", source);
  if (doc.contains("normalizer") && !doc.at("normalizer").is_null())
    fail("{}: unsupported normalizer {} (GLM-5's byte-level BPE has none; expected null)", source,
         doc.at("normalizer").value("type", std::string("?")));
  if (doc.contains("decoder") && !doc.at("decoder").is_null() &&
      doc.at("decoder").value("type", "") != "ByteLevel")
    fail("{}: unsupported decoder.type {} (expected \"ByteLevel\")", source,
         doc.at("decoder").contains("type") ? json_excerpt(doc.at("decoder").at("type")) : "null");
  const json& added_tokens = doc.contains("added_tokens") ? doc.at("added_tokens") : json();
  parse_model(require(doc, "model", "", source), added_tokens.is_array() ? added_tokens.size() : 0);
  parse_pre_tokenizer(require(doc, "pre_tokenizer", "", source));
  parse_added(added_tokens);
  if (id_special.size() < id_token.size()) id_special.resize(id_token.size(), 0);
}

// Splits text[begin, end) around added-token matches, as AddedVocabulary::find_matches does: the
// leftmost match wins, the longest one at that position; lstrip/rstrip widen it over whitespace.
void BpeTokenizer::Impl::find_added(std::string_view text, size_t begin, size_t end,
                                    bool normalized_pass, bool parse_special,
                                    std::vector<Segment>& out) const {
  size_t start_offset = begin;
  size_t pos = begin;
  while (pos < end) {
    const AddedToken* best = nullptr;
    for (int32_t index : added_by_first_byte[static_cast<uint8_t>(text[pos])]) {
      const AddedToken& token = added[index];
      if (token.normalized != normalized_pass) continue;
      if (token.content.size() <= end - pos &&
          text.compare(pos, token.content.size(), token.content) == 0) {
        best = &token;
        break;  // bucket is sorted longest first
      }
    }
    if (!best) {
      ++pos;
      continue;
    }
    size_t start = pos, stop = pos + best->content.size();
    pos = stop;  // the matcher resumes after the raw match whatever happens to it below
    if (best->special && !parse_special) continue;
    if (best->single_word) {
      size_t unused;
      const bool space_before =
          start == begin || !is_word_char(code_point_before(text, start, &unused));
      bool space_after = stop == end;
      if (!space_after) {
        const size_t len = utf8_sequence_length(text, stop);
        space_after = !is_word_char(decode_utf8(text, stop, len));
      }
      if (!space_before || !space_after) continue;
    }
    if (best->lstrip) {
      size_t new_start = start;
      while (new_start > begin) {
        size_t cp_start;
        if (!is_unicode_whitespace(code_point_before(text, new_start, &cp_start))) break;
        new_start = cp_start;
      }
      start = std::max(new_start, start_offset);
    }
    if (best->rstrip) {
      while (stop < end) {
        const size_t len = utf8_sequence_length(text, stop);
        if (!is_unicode_whitespace(decode_utf8(text, stop, len))) break;
        stop += len;
      }
    }
    if (start_offset < start) out.push_back(Segment{start_offset, start, -1});
    out.push_back(Segment{start, stop, best->id});
    start_offset = stop;
    pos = std::max(pos, stop);
  }
  if (start_offset < end) out.push_back(Segment{start_offset, end, -1});
}

// BPE over one pre-token's bytes, exactly as tokenizers' Word::merge_all: a min-heap of
// (rank, position), stale entries dropped when popped.
void BpeTokenizer::Impl::merge_word(std::string_view word, std::vector<int32_t>& out) const {
  struct Symbol {
    int32_t id;
    int32_t prev, next;
    uint32_t len;
  };
  std::vector<Symbol> symbols;
  symbols.reserve(word.size());
  for (size_t i = 0; i < word.size(); ++i) {
    int32_t id = byte_id[static_cast<uint8_t>(word[i])];
    if (id < 0) {
      if (!unk_id) continue;  // tokenizers drops a character with no token when there is no unk
      if (fuse_unk && !symbols.empty() && symbols.back().id == *unk_id) {
        symbols.back().len += 1;
        continue;
      }
      id = *unk_id;
    }
    const int32_t index = static_cast<int32_t>(symbols.size());
    symbols.push_back(Symbol{id, index - 1, index + 1, 1});
  }
  if (symbols.empty()) return;
  symbols.back().next = -1;

  struct Candidate {
    int32_t rank;
    int32_t pos;
    int32_t new_id;
    bool operator>(const Candidate& other) const {
      return rank != other.rank ? rank > other.rank : pos > other.pos;
    }
  };
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<Candidate>> queue;
  const auto lookup = [&](int32_t left, int32_t right) -> const MergeTarget* {
    auto it = merges.find(pair_key(left, right));
    return it == merges.end() ? nullptr : &it->second;
  };
  for (size_t i = 0; i + 1 < symbols.size(); ++i) {
    if (const MergeTarget* m = lookup(symbols[i].id, symbols[i + 1].id))
      queue.push(Candidate{m->rank, static_cast<int32_t>(i), m->new_id});
  }
  while (!queue.empty()) {
    const Candidate top = queue.top();
    queue.pop();
    Symbol& current = symbols[top.pos];
    if (current.len == 0 || current.next == -1) continue;
    const Symbol right = symbols[current.next];
    const MergeTarget* target = lookup(current.id, right.id);
    if (!target || target->new_id != top.new_id) continue;
    current.id = top.new_id;
    current.len += right.len;
    symbols[current.next].len = 0;
    current.next = right.next;
    if (right.next >= 0) symbols[right.next].prev = top.pos;
    if (current.prev >= 0) {
      if (const MergeTarget* m = lookup(symbols[current.prev].id, current.id))
        queue.push(Candidate{m->rank, current.prev, m->new_id});
    }
    if (current.next >= 0) {
      if (const MergeTarget* m = lookup(current.id, symbols[current.next].id))
        queue.push(Candidate{m->rank, top.pos, m->new_id});
    }
  }
  for (int32_t i = 0; i >= 0; i = symbols[i].next) out.push_back(symbols[i].id);
}

void BpeTokenizer::Impl::encode_word(std::string_view word, std::vector<int32_t>& out) const {
  if (ignore_merges) {
    auto it = bytes_to_id.find(std::string(word));
    if (it != bytes_to_id.end()) {
      out.push_back(it->second);
      return;
    }
  }
  if (word.size() > kCacheMaxWordBytes) {
    merge_word(word, out);
    return;
  }
  std::string key(word);
  {
    std::shared_lock lock(cache_mutex);
    auto it = word_cache.find(key);
    if (it != word_cache.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  const size_t first = out.size();
  merge_word(word, out);
  std::unique_lock lock(cache_mutex);
  if (word_cache.size() < kCacheCapacity)
    word_cache.emplace(std::move(key), std::vector<int32_t>(out.begin() + first, out.end()));
}

// Pre-tokenizes one plain-text segment with the Split regex (Isolated: matches and the gaps
// between them are both pieces) and runs BPE on each piece.
void BpeTokenizer::Impl::encode_text(std::string_view text, std::vector<int32_t>& out) const {
  RegexScratch& scratch = regex_scratch();
  const auto subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  size_t pos = 0;
  while (pos < text.size()) {
    const int rc = pcre2_match(split_regex.code, subject, text.size(), pos, PCRE2_NO_UTF_CHECK,
                               scratch.match_data, scratch.context);
    if (rc == PCRE2_ERROR_NOMATCH) {
      encode_word(text.substr(pos), out);
      return;
    }
    if (rc < 0) {
      std::array<PCRE2_UCHAR, 256> message{};
      pcre2_get_error_message(rc, message.data(), message.size());
      fail("{}: pre-tokenizer regex failed at byte {}: {}", source, pos,
           reinterpret_cast<const char*>(message.data()));
    }
    const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(scratch.match_data);
    const size_t start = ovector[0], stop = ovector[1];
    if (start > pos) encode_word(text.substr(pos, start - pos), out);
    if (stop > start) {
      encode_word(text.substr(start, stop - start), out);
      pos = stop;
    } else {
      // An empty match splits nothing; step over one character so the scan always advances.
      const size_t len = std::max<size_t>(1, utf8_sequence_length(text, start));
      if (start >= text.size()) break;
      encode_word(text.substr(start, len), out);
      pos = start + len;
    }
  }
}

// ---------------------------------------------------------------------------------------------

BpeTokenizer::BpeTokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
BpeTokenizer::BpeTokenizer(BpeTokenizer&&) noexcept = default;
BpeTokenizer& BpeTokenizer::operator=(BpeTokenizer&&) noexcept = default;
BpeTokenizer::~BpeTokenizer() = default;

BpeTokenizer BpeTokenizer::load(const std::filesystem::path& tokenizer_json) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(tokenizer_json, ec))
    fail("{}: tokenizer file not found", tokenizer_json.string());
  return from_json_text(read_file(tokenizer_json), tokenizer_json.string());
}

BpeTokenizer BpeTokenizer::from_json_text(std::string_view json_text,
                                          std::string_view source_name) {
  auto impl = std::make_unique<Impl>();
  impl->source = std::string(source_name);
  json doc;
  try {
    doc = json::parse(json_text);
  } catch (const json::parse_error& e) {
    fail("{}: malformed JSON: {}", impl->source, e.what());
  }
  try {
    impl->parse(doc);
  } catch (const json::exception& e) {
    // A field of the wrong JSON type; nlohmann names the expected type.
    fail("{}: unexpected tokenizer.json content: {}", impl->source, e.what());
  }
  return BpeTokenizer(std::move(impl));
}

std::vector<int32_t> BpeTokenizer::encode(std::string_view text, bool parse_special) const {
  if (const auto bad = find_invalid_utf8(text)) {
    fail("{}: cannot encode text: invalid UTF-8 at byte offset {} (byte 0x{:02x})", impl_->source,
         *bad, static_cast<uint8_t>(text[*bad]));
  }
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 1);
  // Pass 1: tokens matched on the raw text; pass 2: "normalized" tokens on the remaining pieces
  // (the same text here, since there is no normalizer).
  std::vector<Segment> first, segments;
  impl_->find_added(text, 0, text.size(), /*normalized_pass=*/false, parse_special, first);
  for (const Segment& segment : first) {
    if (segment.added_id >= 0)
      segments.push_back(segment);
    else
      impl_->find_added(text, segment.begin, segment.end, /*normalized_pass=*/true, parse_special,
                        segments);
  }
  for (const Segment& segment : segments) {
    if (segment.added_id >= 0)
      ids.push_back(segment.added_id);
    else
      impl_->encode_text(text.substr(segment.begin, segment.end - segment.begin), ids);
  }
  return ids;
}

std::string BpeTokenizer::decode(std::span<const int32_t> ids, bool skip_special) const {
  std::string bytes;
  for (int32_t id : ids) {
    if (skip_special && is_special(id)) continue;
    bytes += token_bytes(id);
  }
  return utf8_lossy(bytes);
}

std::string_view BpeTokenizer::token_bytes(int32_t id) const {
  if (id < 0 || id >= vocab_size())
    fail("{}: token id {} is outside the vocabulary [0, {})", impl_->source, id, vocab_size());
  return impl_->id_bytes[id];
}

bool BpeTokenizer::is_special(int32_t id) const {
  if (id < 0 || id >= vocab_size())
    fail("{}: token id {} is outside the vocabulary [0, {})", impl_->source, id, vocab_size());
  return impl_->id_special[id] != 0;
}

std::optional<int32_t> BpeTokenizer::token_to_id(std::string_view token) const {
  auto it = impl_->token_to_id.find(std::string(token));
  if (it == impl_->token_to_id.end()) return std::nullopt;
  return it->second;
}

std::string_view BpeTokenizer::id_to_token(int32_t id) const {
  if (id < 0 || id >= vocab_size())
    fail("{}: token id {} is outside the vocabulary [0, {})", impl_->source, id, vocab_size());
  return impl_->id_token[id];
}

int32_t BpeTokenizer::vocab_size() const {
  return static_cast<int32_t>(impl_->id_token.size());
}

const std::vector<AddedToken>& BpeTokenizer::added_tokens() const {
  return impl_->added;
}

int32_t BpeTokenizer::added_token_id(std::string_view content) const {
  for (const AddedToken& token : impl_->added)
    if (token.content == content) return token.id;
  fail("{}: no added token {} (the checkpoint's tokenizer lacks it)", impl_->source,
       json(std::string(content)).dump());
}

const std::string& BpeTokenizer::source_name() const {
  return impl_->source;
}

// ---------------------------------------------------------------------------------------------

StreamDecoder::StreamDecoder(const BpeTokenizer& tokenizer, bool skip_special)
    : tokenizer_(&tokenizer), skip_special_(skip_special) {}

std::string StreamDecoder::push(int32_t id) {
  if (skip_special_ && tokenizer_->is_special(id)) return {};
  pending_ += tokenizer_->token_bytes(id);
  // Everything before a trailing valid-but-incomplete sequence is final: no later byte can change
  // how it decodes. The incomplete tail waits for the next token.
  const size_t keep_from = incomplete_utf8_tail(pending_);
  std::string ready = utf8_lossy(std::string_view(pending_).substr(0, keep_from));
  pending_.erase(0, keep_from);
  return ready;
}

std::string StreamDecoder::flush() {
  std::string rest = utf8_lossy(pending_);
  pending_.clear();
  return rest;
}

// ---------------------------------------------------------------------------------------------

std::optional<size_t> find_invalid_utf8(std::string_view text) {
  for (size_t i = 0; i < text.size();) {
    if (static_cast<uint8_t>(text[i]) < 0x80) {
      ++i;
      continue;
    }
    const size_t len = utf8_sequence_length(text, i);
    if (len == 0) return i;
    i += len;
  }
  return std::nullopt;
}

std::string utf8_lossy(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  for (size_t i = 0; i < bytes.size();) {
    const uint8_t b0 = static_cast<uint8_t>(bytes[i]);
    if (b0 < 0x80) {
      out += static_cast<char>(b0);
      ++i;
      continue;
    }
    const size_t len = utf8_sequence_length(bytes, i);
    if (len > 0) {
      out.append(bytes.substr(i, len));
      i += len;
      continue;
    }
    // Replace the maximal subpart: the lead byte plus the continuation bytes that were valid.
    const size_t consumed = utf8_valid_prefix(bytes, i, utf8_lead(b0));
    append_utf8(out, 0xFFFD);
    i += consumed;
  }
  return out;
}

}  // namespace whittle
