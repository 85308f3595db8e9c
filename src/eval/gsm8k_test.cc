// GSM8K items and answers: the answer rule on crafted completions (first "####" with a number wins,
// commas and a trailing period dropped, no "####" means no answer), gold normalisation, and jsonl
// validation errors that name the file and the line.
#include "eval/gsm8k.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>

#include "util/atomic_file.h"
#include "util/error.h"

namespace whittle {
namespace {
namespace fs = std::filesystem;
using ::testing::HasSubstr;

TEST(Gsm8kAnswer, ReadsTheNumberAfterTheMarks) {
  EXPECT_EQ(extract_answer("3 + 4 = 7\n#### 7"), "7");
  EXPECT_EQ(extract_answer("#### 1,234\n"), "1234");
  EXPECT_EQ(extract_answer("so she pays $18.\n#### -18."), "-18");
  EXPECT_EQ(extract_answer("####42 apples"), "42");
  EXPECT_EQ(extract_answer("#### \t3.5"), "3.5");
}

TEST(Gsm8kAnswer, FirstAnswerWinsAsInGsm8k) {
  // The model answered, then went on to write another problem with its own answer.
  EXPECT_EQ(extract_answer("#### 12\nTom has 3 apples.\n#### 3"), "12");
  // A "####" without a number is skipped, as GSM8K's regex search skips it.
  EXPECT_EQ(extract_answer("#### ?\n#### 5"), "5");
}

TEST(Gsm8kAnswer, NoAnswer) {
  EXPECT_EQ(extract_answer(""), std::nullopt);
  EXPECT_EQ(extract_answer("The answer is 7."), std::nullopt);  // the last number is not used
  EXPECT_EQ(extract_answer("### 7"), std::nullopt);
  EXPECT_EQ(extract_answer("#### ,."), std::nullopt);
  EXPECT_EQ(extract_answer("#### -"), std::nullopt);
}

TEST(Gsm8kAnswer, Normalisation) {
  EXPECT_EQ(normalize_answer("  1,000,000 \n"), "1000000");
  EXPECT_EQ(normalize_answer("5."), "5");
  EXPECT_EQ(normalize_answer("5.5"), "5.5");
  EXPECT_EQ(normalize_answer(""), "");
}

class Gsm8kJsonl : public ::testing::Test {
 protected:
  fs::path write(const std::string& text) {
    write_file_atomic(path_, text);
    return path_;
  }
  void TearDown() override { fs::remove(path_); }
  fs::path path_ =
      fs::temp_directory_path() / ("whittle_gsm8k_" + std::to_string(::getpid()) + ".jsonl");
};

TEST_F(Gsm8kJsonl, ReadsItemsAndGold) {
  auto items =
      read_qa_jsonl(write("{\"question\": \"What is 2 + 3?\", \"answer\": \"2 + 3 = 5\\n#### 5\"}\n"
                          "\n"
                          "{\"question\": \"Big?\", \"answer\": \"#### 1,200\", \"extra\": 1}\n"));
  ASSERT_EQ(items.size(), 2u);
  EXPECT_EQ(items[0].line, 1);
  EXPECT_EQ(items[0].question, "What is 2 + 3?");
  EXPECT_EQ(items[0].gold, "5");
  EXPECT_EQ(items[1].line, 3);
  EXPECT_EQ(items[1].gold, "1200");
}

TEST_F(Gsm8kJsonl, ErrorsNameFileAndLine) {
  const std::string ok = "{\"question\": \"q\", \"answer\": \"#### 1\"}\n";
  auto error_of = [&](const std::string& text) {
    try {
      read_qa_jsonl(write(text));
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  const std::string where = path_.string() + ":2: ";
  EXPECT_THAT(error_of(ok + "{\"question\": \"q\", \"answer\": \n"),
              HasSubstr(where + "malformed JSON"));
  EXPECT_THAT(error_of(ok + "[1, 2]\n"), HasSubstr(where + "expected a JSON object"));
  EXPECT_THAT(error_of(ok + "{\"answer\": \"#### 1\"}\n"),
              HasSubstr(where + "missing field 'question'"));
  EXPECT_THAT(error_of(ok + "{\"question\": 3, \"answer\": \"#### 1\"}\n"),
              HasSubstr(where + "field 'question' must be a string"));
  EXPECT_THAT(error_of(ok + "{\"question\": \"q\", \"answer\": \"7\"}\n"),
              HasSubstr(where + "'answer' has no '####"));
  EXPECT_THAT(error_of(ok + "{\"question\": \"q\", \"answer\": \"#### \"}\n"),
              HasSubstr(where + "nothing after"));
  EXPECT_THAT(error_of("\n\n"), HasSubstr("no items"));
  EXPECT_THROW(read_qa_jsonl("/nonexistent/file.jsonl"), Error);
}

}  // namespace
}  // namespace whittle
