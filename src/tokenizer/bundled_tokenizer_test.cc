// The bundled model's tokenizer (models/tiny-glm5/tokenizer.json, trained by
// tools/train/train_tokenizer.py) against its golden, written from Hugging Face `tokenizers` by the
// same script: tests/golden/tiny_glm5_tokenizer/encode_golden.jsonl (strings from the held-out eval
// files of every domain plus tricky strings). whittle must reproduce the ids exactly.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "tokenizer/bpe_tokenizer.h"
#include "util/atomic_file.h"

namespace whittle {
namespace {

using json = nlohmann::json;

std::filesystem::path model_dir() {
  return std::filesystem::path(WHITTLE_SOURCE_DIR) / "models" / "tiny-glm5";
}

std::filesystem::path golden_path() {
  return std::filesystem::path(WHITTLE_SOURCE_DIR) / "tests" / "golden" / "tiny_glm5_tokenizer" /
         "encode_golden.jsonl";
}

const BpeTokenizer& bundled() {
  static const BpeTokenizer tokenizer = BpeTokenizer::load(model_dir() / "tokenizer.json");
  return tokenizer;
}

struct Golden {
  json header;
  std::vector<json> records;
};

const Golden& golden() {
  static const Golden file = [] {
    Golden out;
    std::ifstream in(golden_path());
    EXPECT_TRUE(in) << "missing " << golden_path();
    std::string line;
    std::getline(in, line);
    out.header = json::parse(line);
    while (std::getline(in, line)) out.records.push_back(json::parse(line));
    return out;
  }();
  return file;
}

std::vector<int32_t> ids_of(const json& array) {
  return array.get<std::vector<int32_t>>();
}
std::string escaped(const std::string& text) {
  return json(text).dump();
}

TEST(BundledTokenizer, VocabularyIs4096WithGlm5AddedTokensLast) {
  const BpeTokenizer& tok = bundled();
  EXPECT_EQ(tok.vocab_size(), 4096);
  ASSERT_EQ(tok.added_tokens().size(), 36u);
  const json config = json::parse(read_file(model_dir() / "tokenizer_config.json"));
  const json& decoder = config.at("added_tokens_decoder");
  ASSERT_EQ(decoder.size(), 36u);
  for (const auto& [id_text, entry] : decoder.items()) {
    const int32_t id = std::stoi(id_text);
    const std::string content = entry.at("content");
    EXPECT_EQ(tok.added_token_id(content), id) << content;
    EXPECT_EQ(tok.is_special(id), entry.at("special").get<bool>()) << content;
  }
  // GLM-5 order, directly after the 4060 BPE ids.
  EXPECT_EQ(tok.added_token_id("<|endoftext|>"), 4060);
  EXPECT_EQ(tok.added_token_id("[gMASK]"), 4062);
  EXPECT_EQ(tok.added_token_id("<sop>"), 4064);
  EXPECT_EQ(tok.added_token_id("<|user|>"), 4067);
  EXPECT_EQ(tok.added_token_id("<|assistant|>"), 4068);
  EXPECT_EQ(tok.added_token_id("<|observation|>"), 4069);
  EXPECT_EQ(tok.added_token_id("<think>"), 4081);
  EXPECT_EQ(tok.added_token_id("</think>"), 4082);
  EXPECT_EQ(tok.added_token_id("/nothink"), 4091);
  EXPECT_EQ(tok.added_token_id("<|video|>"), 4095);
}

TEST(BundledTokenizer, GoldenCoversEveryDomain) {
  EXPECT_GE(golden().records.size(), 300u);
  EXPECT_EQ(golden().header.value("strings", 0u), golden().records.size());
  size_t gsm8k = 0, chat = 0;
  for (const json& r : golden().records) {
    const std::string text = r["text"];
    gsm8k += text.find("#### ") != std::string::npos && text.find("<<") != std::string::npos;
    chat += text.find("<|assistant|>") != std::string::npos;
  }
  EXPECT_GT(gsm8k, 20u);
  EXPECT_GT(chat, 20u);
}

TEST(BundledTokenizer, EncodeMatchesOracleForEveryGoldenString) {
  const BpeTokenizer& tok = bundled();
  size_t mismatches = 0;
  for (const json& r : golden().records) {
    const std::string text = r["text"];
    const auto actual = tok.encode(text);
    if (actual != ids_of(r["ids"]) && ++mismatches <= 10)
      ADD_FAILURE() << "encode(" << escaped(text) << ") = " << json(actual).dump() << ", oracle "
                    << r["ids"].dump();
    const json& raw = r.contains("ids_no_special") ? r["ids_no_special"] : r["ids"];
    if (tok.encode(text, /*parse_special=*/false) != ids_of(raw) && ++mismatches <= 10)
      ADD_FAILURE() << "encode(" << escaped(text) << ", parse_special=false) differs from oracle";
  }
  EXPECT_EQ(mismatches, 0u);
}

TEST(BundledTokenizer, DecodeMatchesOracleAndRoundTrips) {
  const BpeTokenizer& tok = bundled();
  for (const json& r : golden().records) {
    const std::string text = r["text"];
    const auto ids = ids_of(r["ids"]);
    const std::string decoded = r.value("decoded", text);
    const std::string decoded_skip = r.value("decoded_skip", decoded);
    EXPECT_EQ(tok.decode(ids), decoded) << escaped(text);
    EXPECT_EQ(tok.decode(ids, /*skip_special=*/true), decoded_skip) << escaped(text);
    EXPECT_EQ(tok.decode(tok.encode(text)), text) << escaped(text);
  }
}

// FNV-1a (64-bit) over the ids as little-endian int32 bytes, as train_tokenizer.py computes it.
std::string fnv1a64_ids(const std::vector<int32_t>& ids) {
  uint64_t h = 0xCBF29CE484222325ull;
  for (int32_t id : ids) {
    const uint32_t u = static_cast<uint32_t>(id);
    for (int shift = 0; shift < 32; shift += 8) {
      h ^= (u >> shift) & 0xFFu;
      h *= 0x100000001B3ull;
    }
  }
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(h));
  return buf;
}

TEST(BundledTokenizer, WholeHeldOutFilesMatchOracle) {
  // Every token of the four held-out eval files (~57k tokens), not just the sampled strings.
  const BpeTokenizer& tok = bundled();
  const json& files = golden().header.at("eval_files");
  ASSERT_EQ(files.size(), 4u);
  for (const auto& [rel, expected] : files.items()) {
    const std::string text = read_file(std::filesystem::path(WHITTLE_SOURCE_DIR) / rel);
    const auto ids = tok.encode(text);
    EXPECT_EQ(ids.size(), expected.at("tokens").get<size_t>())
        << rel
        << " (if the eval file was regenerated: tools/train/train_tokenizer.py --golden-only)";
    EXPECT_EQ(fnv1a64_ids(ids), expected.at("ids_fnv1a64").get<std::string>()) << rel;
    EXPECT_EQ(tok.decode(ids), text) << rel;
  }
}

TEST(BundledTokenizer, MongolianVowelSeparatorIsNotWhitespace) {
  // U+180E has been a format character since Unicode 6.3; PCRE2's \s still matched it, so " \u180e"
  // pre-tokenized as one whitespace run (256 = "  "). Ids from tokenizers 0.23.3:
  //   Tokenizer.from_file("models/tiny-glm5/tokenizer.json").encode(s,
  //   add_special_tokens=False).ids
  // U+1680 and U+2028 are White_Space in both and are controls.
  const BpeTokenizer& tok = bundled();
  const std::vector<std::pair<std::string, std::vector<int32_t>>> cases = {
      {"  \u180e", {220, 220, 157, 254, 236}},
      {"  \u180e\u180e", {220, 220, 157, 254, 236, 157, 254, 236}},
      {"a  \u180eb", {64, 220, 220, 157, 254, 236, 65}},
      {"\n  \u180e", {198, 220, 220, 157, 254, 236}},
      {"  \u1680", {256, 157, 248, 222}},
      {"  \u2028", {256, 578, 101}},
  };
  for (const auto& [text, ids] : cases) {
    EXPECT_EQ(tok.encode(text), ids) << escaped(text);
    EXPECT_EQ(tok.decode(ids), text) << escaped(text);
  }
}

TEST(BundledTokenizer, ChatTemplateIsTheGlm5One) {
  const json config = json::parse(read_file(model_dir() / "tokenizer_config.json"));
  const std::string tmpl = config.at("chat_template");
  EXPECT_EQ(tmpl, read_file(model_dir() / "chat_template.jinja"));
  EXPECT_EQ(tmpl, read_file(std::filesystem::path(WHITTLE_SOURCE_DIR) / "tests" / "golden" /
                            "tokenizer" / "chat_template.jinja"));
}

}  // namespace
}  // namespace whittle
