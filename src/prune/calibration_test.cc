// Calibration data: the seeded document order (pinned by values from a Python reimplementation of
// the spelled-out algorithm), packing (every sample seqlen long, the samples' concatenation equal
// to the documents' tokens in that order, each followed by <|endoftext|>), the plain-text forms of
// the bundled corpus, jsonl text and conversations rendered with the bundled chat template, fewer
// samples than asked (a warning) and too few tokens (an error with the numbers), and every
// malformed input refused with the file and the line.
#include "prune/calibration.h"

#include <sys/stat.h>

#include <algorithm>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "tokenizer/bpe_tokenizer.h"
#include "tokenizer/chat_template.h"
#include "util/atomic_file.h"
#include "util/testing.h"

namespace whittle {
namespace {
namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ojson = nlohmann::ordered_json;

fs::path model_dir() {
  return fs::path(WHITTLE_SOURCE_DIR) / "models" / "tiny-glm5";
}

const BpeTokenizer& tokenizer() {
  static const BpeTokenizer tok = BpeTokenizer::load(model_dir() / "tokenizer.json");
  return tok;
}

const Glm5ChatTemplate& chat() {
  static const Glm5ChatTemplate tmpl = Glm5ChatTemplate::load(model_dir());
  return tmpl;
}

int32_t eot() {
  return tokenizer().added_token_id("<|endoftext|>");
}

fs::path write(const ScratchDir& dir, const std::string& name, std::string_view content) {
  const fs::path path = dir.path() / name;
  write_file_atomic(path, content);
  return path;
}

// Twelve short, distinct documents.
std::vector<std::string> prose() {
  std::vector<std::string> docs;
  for (int i = 0; i < 12; ++i)
    docs.push_back(
        fmt::format("Document {} says: the {} quick foxes jumped over {} lazy dogs.\n"
                    "A second line, {}.",
                    i, i * 3, i + 7, i * i));
  return docs;
}

std::string stream_form(const std::vector<std::string>& docs) {
  std::string s;
  for (const auto& d : docs) s += d + "<|endoftext|>";
  return s;
}

std::string corpus_form(const std::vector<std::string>& docs) {
  std::string s;
  for (const auto& d : docs) s += d + "\n<|endoftext|>\n";
  return s;
}

std::vector<int32_t> concatenated(const CalibrationSet& set) {
  std::vector<int32_t> all;
  for (const auto& s : set.samples) all.insert(all.end(), s.begin(), s.end());
  return all;
}

std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(CalibrationPermutation, IsTheSpelledOutAlgorithm) {
  // From a Python transcription of calibration.h's description (SplitMix64, Fisher-Yates, rejection
  // below 2^64 mod b).
  EXPECT_EQ(calibration_permutation(10, 42), (std::vector<size_t>{0, 9, 5, 8, 6, 4, 7, 2, 1, 3}));
  EXPECT_EQ(calibration_permutation(10, 7), (std::vector<size_t>{8, 1, 5, 9, 0, 4, 3, 2, 6, 7}));
  EXPECT_EQ(calibration_permutation(1, 42), (std::vector<size_t>{0}));
  EXPECT_TRUE(calibration_permutation(0, 42).empty());
  std::vector<size_t> p = calibration_permutation(1000, 3);
  std::sort(p.begin(), p.end());
  for (size_t i = 0; i < p.size(); ++i) ASSERT_EQ(p[i], i);
}

TEST(CalibrationDocuments, PlainTextInBothCorpusFormsAndAsOneDocument) {
  ScratchDir dir;
  const std::vector<std::string> docs = prose();
  for (const std::string& text : {stream_form(docs), corpus_form(docs),
                                  // corpus form without the final newline
                                  corpus_form(docs).substr(0, corpus_form(docs).size() - 1)}) {
    const fs::path files[] = {write(dir, "c.txt", text)};
    const auto read = read_calibration_documents(files, nullptr);
    ASSERT_EQ(read.size(), docs.size());
    for (size_t i = 0; i < docs.size(); ++i) {
      EXPECT_EQ(read[i].text, docs[i]);
      EXPECT_EQ(read[i].file, 0u);
    }
    EXPECT_EQ(read[0].line, 1);
    EXPECT_EQ(read[1].line, text.starts_with(docs[0] + "\n<|endoftext|>\n") ? 4 : 2);
  }
  // No separator: the file is one document; trailing newlines go, blank lines inside stay.
  const fs::path one[] = {write(dir, "one.txt", "Para one.\n\nPara two.\n\n")};
  const auto read = read_calibration_documents(one, nullptr);
  ASSERT_EQ(read.size(), 1u);
  EXPECT_EQ(read[0].text, "Para one.\n\nPara two.");
  // Blank documents between separators are skipped.
  const fs::path blanks[] = {
      write(dir, "b.txt", "a<|endoftext|>\n \n<|endoftext|>b<|endoftext|>\n")};
  const auto two = read_calibration_documents(blanks, nullptr);
  ASSERT_EQ(two.size(), 2u);
  EXPECT_EQ(two[0].text, "a");
  EXPECT_EQ(two[1].text, "b");
}

TEST(CalibrationDocuments, TheBundledEvalFilesRoundTrip) {
  // The held-out files are in stream form: their documents, joined back, are the file.
  const fs::path files[] = {model_dir() / "eval" / "chat.txt"};
  const auto docs = read_calibration_documents(files, nullptr);
  std::string joined;
  for (const auto& d : docs) joined += d.text + "<|endoftext|>";
  EXPECT_EQ(joined, read_file(files[0]));
}

TEST(CalibrationPacking, SamplesAreTheDocumentsInSeededOrderWithSeparators) {
  ScratchDir dir;
  const std::vector<std::string> docs = prose();
  const fs::path files[] = {write(dir, "a.txt", stream_form(docs))};
  const CalibrationOptions options{.samples = 4, .seqlen = 37, .seed = 42};
  const CalibrationSet set = load_calibration(files, tokenizer(), nullptr, options);
  ASSERT_EQ(set.samples.size(), 4u);
  for (const auto& s : set.samples) EXPECT_EQ(s.size(), 37u);
  EXPECT_TRUE(set.warning.empty()) << set.warning;
  EXPECT_EQ(set.documents, 12);
  EXPECT_EQ(set.separator, eot());
  EXPECT_EQ(set.fingerprint, calibration_fingerprint(set.samples));

  // Independently: the text of the documents in the permuted order, each followed by the
  // separator, encoded in one go (added tokens split first, so the pieces encode on their own).
  std::string text;
  for (size_t k : calibration_permutation(docs.size(), 42)) text += docs[k] + "<|endoftext|>";
  const std::vector<int32_t> expected = tokenizer().encode(text);
  ASSERT_GE(expected.size(), 4u * 37u);
  const std::vector<int32_t> got = concatenated(set);
  EXPECT_EQ(got, std::vector<int32_t>(expected.begin(), expected.begin() + 4 * 37));
  EXPECT_EQ(std::count(got.begin(), got.end(), eot()),
            set.documents_used - 1 + (got.back() == eot()));
  EXPECT_GE(set.tokens_read, 4 * 37);
  EXPECT_LT(set.documents_used, 12);  // only what the samples need is tokenized
}

TEST(CalibrationPacking, SameSeedSameSamplesOtherSeedOtherOrder) {
  ScratchDir dir;
  const fs::path files[] = {write(dir, "a.txt", corpus_form(prose()))};
  CalibrationOptions options{.samples = 3, .seqlen = 50, .seed = 42};
  const CalibrationSet a = load_calibration(files, tokenizer(), nullptr, options);
  const CalibrationSet b = load_calibration(files, tokenizer(), nullptr, options);
  EXPECT_EQ(a.samples, b.samples);
  EXPECT_EQ(a.fingerprint, b.fingerprint);
  options.seed = 7;
  const CalibrationSet c = load_calibration(files, tokenizer(), nullptr, options);
  EXPECT_NE(a.samples, c.samples);
  EXPECT_NE(a.fingerprint, c.fingerprint);
  // Each starts with the first document of its order.
  for (const auto& [set, seed] : {std::pair{&a, 42}, std::pair{&c, 7}}) {
    const std::vector<int32_t> first =
        tokenizer().encode(prose()[calibration_permutation(12, seed)[0]]);
    EXPECT_TRUE(std::equal(first.begin(), first.end(), set->samples[0].begin()));
  }
}

TEST(CalibrationPacking, DocumentsOfAllFilesArePooledInFileOrder) {
  ScratchDir dir;
  const std::vector<std::string> docs = prose();
  const fs::path files[] = {write(dir, "a.txt", stream_form({docs.begin(), docs.begin() + 5})),
                            write(dir, "b.txt", corpus_form({docs.begin() + 5, docs.end()}))};
  const auto read = read_calibration_documents(files, nullptr);
  ASSERT_EQ(read.size(), 12u);
  for (size_t i = 0; i < 12; ++i) {
    EXPECT_EQ(read[i].text, docs[i]);
    EXPECT_EQ(read[i].file, i < 5 ? 0u : 1u);
  }
  const fs::path single[] = {write(dir, "all.txt", stream_form(docs))};
  const CalibrationOptions options{.samples = 2, .seqlen = 64, .seed = 5};
  EXPECT_EQ(load_calibration(files, tokenizer(), nullptr, options).samples,
            load_calibration(single, tokenizer(), nullptr, options).samples);
}

TEST(CalibrationJsonl, TextAndMessagesRenderedWithTheChatTemplate) {
  ScratchDir dir;
  const ojson messages = ojson::parse(
      R"([{"role": "user", "content": "What is 2 + 3?"},
          {"role": "assistant", "content": "2 + 3 = 5.\n#### 5"}])");
  const ojson tools = ojson::parse(
      R"([{"type": "function", "function": {"name": "add", "parameters": {"type": "object"}}}])");
  std::string jsonl = R"({"text": "Plain words, no template.", "id": 3})"
                      "\n\n" +
                      ojson{{"messages", messages}}.dump() + "\n" +
                      ojson{{"messages", messages}, {"tools", tools}}.dump() + "\r\n";
  const fs::path files[] = {write(dir, "d.JSONL", jsonl)};
  const auto docs = read_calibration_documents(files, &chat());
  ASSERT_EQ(docs.size(), 3u);
  EXPECT_EQ(docs[0].text, "Plain words, no template.");
  EXPECT_EQ(docs[0].line, 1);
  EXPECT_EQ(docs[1].line, 3);
  EXPECT_EQ(docs[2].line, 4);
  EXPECT_EQ(docs[1].text, chat().render(messages, nullptr, ChatTemplateOptions{}));
  EXPECT_EQ(docs[2].text, chat().render(messages, tools, ChatTemplateOptions{}));
  EXPECT_TRUE(docs[1].text.starts_with("[gMASK]<sop><|user|>What is 2 + 3?<|assistant|>"))
      << docs[1].text;
  EXPECT_NE(docs[2].text.find("\"name\": \"add\""), std::string::npos) << docs[2].text;

  // A conversation's tokens start with the template's prefix; a text document's with its words
  // (the tokenizer adds nothing).
  const CalibrationSet set =
      load_calibration(files, tokenizer(), &chat(), {.samples = 1, .seqlen = 40, .seed = 1});
  const auto order = calibration_permutation(3, 1);
  const std::vector<int32_t> first = tokenizer().encode(docs[order[0]].text);
  ASSERT_LE(first.size(), 40u);
  EXPECT_TRUE(std::equal(first.begin(), first.end(), set.samples[0].begin()));
  EXPECT_EQ(set.samples[0][first.size()], eot());
  const std::vector<int32_t> conv = tokenizer().encode(docs[1].text);
  EXPECT_EQ(conv[0], tokenizer().added_token_id("[gMASK]"));
  EXPECT_EQ(conv[1], tokenizer().added_token_id("<sop>"));
  EXPECT_NE(tokenizer().encode(docs[0].text)[0], tokenizer().added_token_id("[gMASK]"));
}

TEST(CalibrationAmount, FewerSamplesThanAskedComeWithAWarning) {
  ScratchDir dir;
  const fs::path files[] = {write(dir, "a.txt", stream_form(prose()))};
  const CalibrationSet all =
      load_calibration(files, tokenizer(), nullptr, {.samples = 1000000, .seqlen = 16, .seed = 42});
  std::string text;
  for (size_t k : calibration_permutation(12, 42)) text += prose()[k] + "<|endoftext|>";
  const int64_t total = static_cast<int64_t>(tokenizer().encode(text).size());
  EXPECT_EQ(all.tokens_read, total);
  ASSERT_EQ(static_cast<int64_t>(all.samples.size()), total / 16);
  EXPECT_THAT(all.warning, HasSubstr(fmt::format("only {} of the 1000000 samples", total / 16)));
  EXPECT_THAT(all.warning, HasSubstr(fmt::format("holds {} tokens", total)));
  EXPECT_THAT(all.warning, HasSubstr("16000000 needed"));
  EXPECT_EQ(all.documents_used, 12);
}

TEST(CalibrationAmount, TooLittleForOneSampleSaysHowMuchIsNeeded) {
  ScratchDir dir;
  const fs::path files[] = {write(dir, "small.txt", "A few words.")};
  const int64_t have = static_cast<int64_t>(tokenizer().encode("A few words.").size()) + 1;
  const std::string msg = error_of([&] {
    load_calibration(files, tokenizer(), nullptr, {.samples = 8, .seqlen = 2048, .seed = 42});
  });
  EXPECT_THAT(msg, HasSubstr(files[0].string()));
  EXPECT_THAT(msg, HasSubstr(fmt::format("holds {} tokens in 1 document (each", have)));
  EXPECT_THAT(msg, HasSubstr("one sample of 2048 tokens needs 2048"));
  EXPECT_THAT(msg, HasSubstr("8 samples need 16384"));
}

TEST(CalibrationErrors, BadOptionsAndTokenizer) {
  ScratchDir dir;
  const fs::path files[] = {write(dir, "a.txt", "words")};
  expect_error([&] { load_calibration(files, tokenizer(), nullptr, {.samples = 0}); },
               {"samples must be at least 1, got 0"});
  expect_error([&] { load_calibration(files, tokenizer(), nullptr, {.seqlen = -1}); },
               {"sequence length must be at least 1, got -1"});
  expect_error(
      [&] {
        load_calibration(files, tokenizer(), nullptr,
                         {.samples = int64_t{1} << 40, .seqlen = int64_t{1} << 40});
      },
      {"too many tokens"});
  expect_error([&] { load_calibration({}, tokenizer(), nullptr, {}); },
               {"no calibration files given"});
  nlohmann::json j = nlohmann::json::parse(read_file(model_dir() / "tokenizer.json"));
  for (auto& t : j["added_tokens"])
    if (t["content"] == "<|endoftext|>") t["content"] = "<|eot|>";
  const BpeTokenizer no_eot = BpeTokenizer::from_json_text(j.dump(), "no-eot.json");
  expect_error([&] { load_calibration(files, no_eot, nullptr, {}); },
               {"no-eot.json", "no <|endoftext|> token"});
}

TEST(CalibrationErrors, UnreadableFilesAreNamed) {
  ScratchDir dir;
  const fs::path missing[] = {dir.path() / "missing.txt"};
  expect_error([&] { read_calibration_documents(missing, nullptr); }, {"missing.txt"});
  const fs::path folder[] = {dir.path()};
  expect_error([&] { read_calibration_documents(folder, nullptr); }, {dir.path().string()});
  for (const char* name : {"empty.txt", "empty.jsonl"}) {
    const fs::path empty[] = {write(dir, name, "")};
    expect_error([&] { read_calibration_documents(empty, nullptr); },
                 {name, "empty calibration file"});
    const fs::path blank[] = {write(dir, name, " \n\n\t\n")};
    expect_error([&] { read_calibration_documents(blank, nullptr); },
                 {name, "empty calibration file"});
  }
  const fs::path seps[] = {write(dir, "seps.txt", "<|endoftext|>\n<|endoftext|>")};
  expect_error([&] { read_calibration_documents(seps, nullptr); }, {"seps.txt", "no documents"});
  const fs::path fifo = dir.path() / "fifo.txt";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  const fs::path fifos[] = {fifo};
  EXPECT_THAT(error_reading_fifo(fifo, [&] { read_calibration_documents(fifos, nullptr); }),
              HasSubstr("fifo.txt"));
}

TEST(CalibrationErrors, InvalidUtf8NamesFileAndLine) {
  ScratchDir dir;
  const fs::path text[] = {write(dir, "bad.txt", "fine\nstill fine\nab\xff\xfe")};
  expect_error([&] { read_calibration_documents(text, nullptr); },
               {"bad.txt:3: invalid UTF-8 at byte 3 of the line"});
  const fs::path first[] = {write(dir, "first.txt", "\xc3")};
  expect_error([&] { read_calibration_documents(first, nullptr); },
               {"first.txt:1: invalid UTF-8 at byte 1 of the line"});
  const fs::path jsonl[] = {
      write(dir, "bad.jsonl", "{\"text\": \"ok\"}\n{\"text\": \"\xc0\xaf\"}\n")};
  expect_error([&] { read_calibration_documents(jsonl, nullptr); },
               {"bad.jsonl:2: invalid UTF-8 at byte 11 of the line"});
}

TEST(CalibrationErrors, MalformedJsonlLinesNameFileAndLine) {
  ScratchDir dir;
  const std::string ok = R"({"text": "fine"})"
                         "\n";
  const struct {
    std::string line;
    std::vector<std::string> parts;
  } cases[] = {
      {R"({"text": "unterminated)", {":2: malformed JSON"}},
      {R"(["text", "x"])", {":2: expected a JSON object", "an array"}},
      {R"("just a string")", {":2: expected a JSON object", "\"just a string\""}},
      {R"({"content": "x"})", {":2: neither \"text\" nor \"messages\""}},
      {R"({"text": "x", "messages": []})", {":2: both \"text\" and \"messages\""}},
      {R"({"text": 5})", {":2: field 'text' must be a string, got 5"}},
      {R"({"text": null})", {":2: field 'text' must be a string, got null"}},
      {R"({"text": " \n "})", {":2: field 'text' is empty"}},
      {R"({"messages": "hello"})", {":2: field 'messages' must be a non-empty array"}},
      {R"({"messages": []})", {":2: field 'messages' must be a non-empty array", "an array"}},
      {R"({"messages": [{"content": "no role"}]})", {":2: chat template: messages[0]", "role"}},
      {R"({"messages": [{"role": "user", "content": {"a": 1}}]})",
       {":2: chat template:", "JSON object"}},
      {R"({"messages": [5]})", {":2: chat template: messages[0]"}},
      {R"({"messages": [{"role": "user", "content": "x"}], "tools": 3})",
       {":2: chat template: tools must be a JSON array"}},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.line);
    const fs::path files[] = {write(dir, "c.jsonl", ok + c.line + "\n" + ok)};
    std::vector<std::string> parts = c.parts;
    parts[0] = "c.jsonl" + parts[0];
    expect_error([&] { read_calibration_documents(files, &chat()); }, parts);
  }
  const fs::path conv[] = {write(dir, "m.jsonl", ok + R"({"messages": [{"role": "user"}]})")};
  expect_error([&] { read_calibration_documents(conv, nullptr); },
               {"m.jsonl:2: 'messages' must be rendered with the model's chat template"});
}

}  // namespace
}  // namespace whittle
