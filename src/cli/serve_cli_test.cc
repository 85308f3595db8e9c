// `whittle serve` and `whittle chat` as a user runs them: bad options are named before anything
// loads; the server answers on the port it prints and ends cleanly (exit 0) on SIGTERM, cancelling
// a request still running; `chat` answers turn after turn, clears its history on /reset and ends
// on /exit.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <httplib.h>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <regex>
#include <thread>

#include "util/testing.h"

namespace whittle {
namespace {
using ::testing::HasSubstr;

const std::filesystem::path kModel =
    std::filesystem::path(WHITTLE_SOURCE_DIR) / "models/tiny-glm5-random";

CommandOutcome whittle(const std::vector<std::string>& args, const std::string& redirect = "2>&1") {
  std::vector<std::string> cmd = {WHITTLE_BINARY};
  cmd.insert(cmd.end(), args.begin(), args.end());
  return run_command(cmd, redirect);
}

TEST(ServeCli, BadOptionsAreNamed) {
  EXPECT_THAT(whittle({"serve", kModel.string(), "--kv-budget", "12X"}).output,
              HasSubstr("--kv-budget: unknown unit 'X'"));
  EXPECT_THAT(whittle({"serve", kModel.string(), "--kv-budget", "-5"}).output,
              HasSubstr("--kv-budget: expected a byte count"));
  EXPECT_THAT(whittle({"serve", kModel.string(), "--ctx", "100000"}).output,
              HasSubstr("--ctx 100000 is past the model's context of 4096"));
  EXPECT_EQ(whittle({"serve", kModel.string(), "--port", "70000"}).status, 2);
  const CommandOutcome missing = whittle({"serve", "/nonexistent/model"});
  EXPECT_EQ(missing.status, 1);
  EXPECT_THAT(missing.output, HasSubstr("/nonexistent/model: no such model folder"));
}

TEST(ServeCli, AnswersOnItsPortAndStopsCleanlyOnSigterm) {
  int err[2];
  ASSERT_EQ(pipe(err), 0);
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    dup2(err[1], 2);
    close(err[0]);
    execl(WHITTLE_BINARY, WHITTLE_BINARY, "serve", kModel.c_str(), "--port", "0", "--threads", "1",
          nullptr);
    _exit(127);
  }
  close(err[1]);
  FILE* log = fdopen(err[0], "r");
  std::string text;
  int port = 0;
  char line[4096];
  while (port == 0 && std::fgets(line, sizeof line, log)) {
    text += line;
    std::smatch m;
    const std::string s(line);
    if (std::regex_search(s, m, std::regex(R"(listening on http://127\.0\.0\.1:(\d+))")))
      port = std::stoi(m[1]);
  }
  ASSERT_GT(port, 0) << text;
  httplib::Client client("127.0.0.1", port);
  auto health = client.Get("/health");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 200);
  // A long request still running when SIGTERM comes is cancelled and answered.
  std::atomic<bool> streaming{false};
  std::string body;
  std::thread slow([&] {
    httplib::Client c("127.0.0.1", port);
    c.set_read_timeout(60, 0);
    httplib::Request req;
    req.method = "POST";
    req.path = "/v1/completions";
    req.body = nlohmann::json{
        {"prompt", "Once"},
        {"max_tokens", 4000},
        {"stream", true},
        {"ignore_eos",
         true}}.dump();
    req.set_header("Content-Type", "application/json");
    req.content_receiver = [&](const char* data, size_t n, uint64_t, uint64_t) {
      body.append(data, n);
      streaming = true;
      return true;
    };
    EXPECT_TRUE(c.send(req));
  });
  for (int i = 0; i < 3000 && !streaming; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  EXPECT_TRUE(streaming);
  kill(pid, SIGTERM);
  slow.join();
  EXPECT_THAT(body, HasSubstr("\"finish_reason\":\"abort\""));
  EXPECT_TRUE(body.ends_with("data: [DONE]\n\n"))
      << body.substr(body.size() - std::min<size_t>(body.size(), 300));
  while (std::fgets(line, sizeof line, log)) text += line;
  std::fclose(log);
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  EXPECT_TRUE(WIFEXITED(status)) << text;
  EXPECT_EQ(WEXITSTATUS(status), 0) << text;
  EXPECT_THAT(text, HasSubstr("SIGTERM: cancelling running requests"));
  EXPECT_THAT(text, HasSubstr("whittle serve: stopped"));
}

TEST(ChatCli, AnswersTurnsResetsAndExits) {
  const std::string script = (std::filesystem::temp_directory_path() /
                              ("whittle_chat_" + std::to_string(getpid()) + ".txt"))
                                 .string();
  {
    std::FILE* f = std::fopen(script.c_str(), "w");
    std::fputs("hello\nand again\n/reset\nhello\n/exit\n", f);
    std::fclose(f);
  }
  const CommandOutcome r =
      whittle({"chat", kModel.string(), "-n", "4", "--threads", "1"}, "< " + script + " 2>&1");
  std::filesystem::remove(script);
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("(history cleared)"));
  // A prompt for each of the four lines that are not /exit, and one for /exit.
  size_t prompts = 0;
  for (size_t at = 0; (at = r.output.find("> ", at)) != std::string::npos; at += 2) ++prompts;
  EXPECT_GE(prompts, 5u);
}

}  // namespace
}  // namespace whittle
