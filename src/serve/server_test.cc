// The engine and the server end to end on loopback, on the bundled random model: greedy output
// through the engine (alone or batched with others, from a reused prefix or not) and through HTTP
// equals the generation loop's; the server-sent-event framing; the error statuses; a client that
// goes away frees its pages.
#include "serve/server.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <httplib.h>

#include <thread>

#include "model/demo_model_test_fixture.h"
#include "serve/generation.h"
#include "util/error.h"

namespace whittle {
namespace {

using ojson = nlohmann::ordered_json;
using namespace std::chrono_literals;

class ServeTest : public DemoModelTest {
 protected:
  static std::vector<int32_t> reference(std::span<const int32_t> prompt, int64_t max_tokens,
                                        std::vector<int64_t> stop_ids = {},
                                        int64_t sample_vocab = 0) {
    KvCache cache(model_->config());
    return generate(*model_, cache, prompt,
                    GenerationOptions{.max_tokens = max_tokens,
                                      .sampling = {.temperature = 0.0f},
                                      .sample_vocab = sample_vocab,
                                      .stop_ids = std::move(stop_ids)})
        .tokens;
  }
  static Job greedy(std::vector<int32_t> prompt, int64_t max_tokens) {
    return Job{
        .prompt = std::move(prompt), .max_tokens = max_tokens, .sampling = {.temperature = 0.0f}};
  }
  static Stream::State drain(Stream& s) {
    Stream::State all, part;
    while (all.finish == FinishReason::kRunning) {
      s.wait(all.tokens.size(), 10s, part);
      all.tokens.insert(all.tokens.end(), part.tokens.begin(), part.tokens.end());
      all.finish = part.finish;
      all.prompt_tokens = part.prompt_tokens;
      all.cached_tokens = part.cached_tokens;
      all.error = part.error;
    }
    return all;
  }
  static std::vector<int32_t> prompt(int seed, size_t n) {
    std::vector<int32_t> p(n);
    // Ids below the random model's 2,048.
    for (size_t i = 0; i < n; ++i) p[i] = static_cast<int32_t>((seed * 977 + i * 131) % 2000);
    return p;
  }
};

TEST_F(ServeTest, EngineAloneEqualsTheGenerationLoop) {
  Engine engine(*model_, {.parallel = 1});
  const std::vector<int32_t> p = prompt(1, 9);
  Stream::State s = drain(*engine.submit(greedy(p, 24)));
  EXPECT_EQ(s.finish, FinishReason::kLength);
  EXPECT_EQ(s.tokens, reference(p, 24));
  EXPECT_EQ(s.prompt_tokens, 9);
  // The first token comes from the prompt's pass; each of the other 23 from a decode step. (The
  // step that ended the stream is counted when it returns: `running` is set after that.)
  for (int i = 0; i < 500 && engine.stats().running > 0; ++i) std::this_thread::sleep_for(10ms);
  const Engine::Stats stats = engine.stats();
  EXPECT_EQ(stats.decode_steps, 23);
  EXPECT_EQ(stats.decoded_tokens, 23);
  EXPECT_GT(stats.decode_seconds, 0);
}

TEST_F(ServeTest, BatchedEqualsSequential) {
  Engine engine(*model_, {.parallel = 4});
  std::vector<std::shared_ptr<Stream>> streams;
  for (int i = 0; i < 6; ++i)  // more than fit at once: the last two wait for a free slot
    streams.push_back(engine.submit(greedy(prompt(i, 3 + 5 * i), 10 + 3 * i)));
  for (int i = 0; i < 6; ++i)
    EXPECT_EQ(drain(*streams[i]).tokens, reference(prompt(i, 3 + 5 * i), 10 + 3 * i)) << i;
  EXPECT_EQ(engine.stats().running, 0);
}

// On the fast kernels, which the server runs: a request's tokens are computed as if it ran alone
// (the kernels' tests check the bits), so greedy output is the generation loop's whatever the load.
TEST_F(ServeTest, OnTheFastKernelsBatchedGreedyEqualsAlone) {
  GlmMoeDsa fast = GlmMoeDsa::load(model_dir(), *pool_, Kernels::kFast);
  Engine engine(fast, {.parallel = 8});
  std::vector<std::shared_ptr<Stream>> streams;
  for (int i = 0; i < 10; ++i) streams.push_back(engine.submit(greedy(prompt(i, 2 + 7 * i), 40)));
  for (int i = 0; i < 10; ++i) {
    KvCache cache(fast.config());
    const std::vector<int32_t> alone =
        generate(fast, cache, prompt(i, 2 + 7 * i),
                 GenerationOptions{.max_tokens = 40, .sampling = {.temperature = 0.0f}})
            .tokens;
    EXPECT_EQ(drain(*streams[i]).tokens, alone) << i;
  }
}

TEST_F(ServeTest, PromptsLongerThanAChunkRunInPieces) {
  Engine engine(*model_, {.parallel = 2, .prefill_chunk = 7});
  const std::vector<int32_t> p = prompt(3, 40);
  auto a = engine.submit(greedy(p, 8));
  auto b = engine.submit(greedy(prompt(4, 5), 30));
  const std::vector<int32_t> ref = reference(p, 8);
  const Stream::State sa = drain(*a);
  // A prompt run in chunks attends to its cached part in whichever form is cheaper: the same
  // argmax on this model, though not the same bits as one prefill.
  EXPECT_EQ(sa.tokens, ref);
  EXPECT_EQ(drain(*b).tokens, reference(prompt(4, 5), 30));
}

TEST_F(ServeTest, AResentConversationReusesItsPages) {
  Engine engine(*model_, {.parallel = 1});
  const std::vector<int32_t> first = prompt(5, 150);
  Stream::State a = drain(*engine.submit(greedy(first, 12)));
  EXPECT_EQ(a.cached_tokens, 0);
  // The next turn: the whole history plus new tokens.
  std::vector<int32_t> second = first;
  second.insert(second.end(), a.tokens.begin(), a.tokens.end());
  for (int32_t t : prompt(6, 20)) second.push_back(t);
  Stream::State b = drain(*engine.submit(greedy(second, 12)));
  // The first request's cache held its prompt and all its output but the last token.
  EXPECT_EQ(b.cached_tokens, static_cast<int64_t>(first.size() + a.tokens.size() - 1));
  EXPECT_EQ(b.tokens, reference(second, 12));
  EXPECT_EQ(engine.stats().prefix_hits, 1);
}

// A stop string cancels the generation; the agent's next turn starts with what it received.
TEST_F(ServeTest, ACancelledSequenceIsReusedToo) {
  Engine engine(*model_, {.parallel = 1});
  const std::vector<int32_t> first = prompt(8, 70);
  auto s = engine.submit(greedy(first, 3000));
  Stream::State got;
  while (got.tokens.size() < 5) {
    Stream::State part;
    s->wait(got.tokens.size(), 10s, part);
    got.tokens.insert(got.tokens.end(), part.tokens.begin(), part.tokens.end());
  }
  s->cancel();
  const Stream::State rest = drain(*s);
  EXPECT_EQ(rest.finish, FinishReason::kCancelled);
  std::vector<int32_t> second = first;
  second.insert(second.end(), got.tokens.begin(), got.tokens.begin() + 5);
  for (int32_t t : prompt(9, 10)) second.push_back(t);
  const Stream::State b = drain(*engine.submit(greedy(second, 8)));
  EXPECT_GE(b.cached_tokens, static_cast<int64_t>(first.size() + 4));
  EXPECT_EQ(b.tokens, reference(second, 8));
}

TEST_F(ServeTest, CancelFreesThePages) {
  Engine engine(*model_, {.parallel = 2, .prefix_cache = 0});
  auto s = engine.submit(greedy(prompt(7, 10), 2000));
  Stream::State part;
  s->wait(0, 10s, part);
  ASSERT_EQ(part.finish, FinishReason::kRunning) << part.error;
  ASSERT_FALSE(part.tokens.empty());
  EXPECT_GT(engine.stats().kv_used, 0u);
  s->cancel();
  EXPECT_EQ(drain(*s).finish, FinishReason::kCancelled);
  for (int i = 0; i < 100 && engine.stats().kv_used > 0; ++i) std::this_thread::sleep_for(10ms);
  EXPECT_EQ(engine.stats().kv_used, 0u);
}

TEST_F(ServeTest, StopCancelsWhatRunsAndWhatWaits) {
  Engine engine(*model_, {.parallel = 1});
  std::vector<std::shared_ptr<Stream>> streams;
  for (int i = 0; i < 3; ++i) streams.push_back(engine.submit(greedy(prompt(i, 5), 4000)));
  Stream::State first;
  streams[0]->wait(0, 10s, first);  // the first one runs
  engine.stop(/*cancel=*/true);     // returns: the model thread has ended
  for (auto& s : streams) EXPECT_EQ(drain(*s).finish, FinishReason::kCancelled);
  EXPECT_EQ(engine.stats().cancelled, 1);  // the two that waited never ran
  EXPECT_EQ(engine.stats().kv_used, 0u);
}

TEST_F(ServeTest, SubmitRefusesWhatCanNeverRunAndAFullQueue) {
  Engine engine(*model_, {.parallel = 1, .max_waiting = 1, .ctx = 3000});
  const auto status = [&](Job job) {
    try {
      engine.submit(std::move(job));
    } catch (const RequestError& e) {
      return e.status();
    }
    return 200;
  };
  EXPECT_EQ(status(greedy({}, 5)), 400);
  EXPECT_EQ(status(greedy({1, 2, 5000}, 5)), 400);  // outside the vocabulary
  EXPECT_EQ(status(greedy({1, -2}, 5)), 400);
  EXPECT_EQ(status(greedy(prompt(1, 3000), 1)), 400);
  EXPECT_EQ(status(greedy(prompt(1, 2000), 1001)), 400);
  // One runs, one waits, and one finds the queue full (each takes thousands of steps).
  std::vector<int> got;
  for (int i = 0; i < 3; ++i) got.push_back(status(greedy(prompt(i, 5), 2990)));
  // Which (one or two) depends on when the model thread admits the first.
  EXPECT_GE(std::count(got.begin(), got.end(), 429), 1) << got[0] << got[1] << got[2];
  engine.stop(/*cancel=*/true);
  EXPECT_EQ(status(greedy(prompt(1, 5), 5)), 503);
}

// The server on a free loopback port, with the random model.
class ServerTest : public ServeTest {
 protected:
  void start(EngineOptions e = {}, ServerOptions o = {}) {
    tokenizer_ = std::make_unique<BpeTokenizer>(BpeTokenizer::load(model_dir() / "tokenizer.json"));
    model_info_.id = "tiny-glm5-random";
    model_info_.tokenizer = tokenizer_.get();
    model_info_.chat_template = Glm5ChatTemplate::load(model_dir());
    model_info_.defaults = generation_defaults(model_->config());
    model_info_.stop_ids = model_->config().eos_token_ids;
    e.sample_vocab = tokenizer_->vocab_size();
    engine_ = std::make_unique<Engine>(*model_, e);
    o.port = 0;
    server_ = std::make_unique<Server>(*engine_, model_info_, o);
    server_->bind();
    thread_ = std::thread([this] { server_->serve(); });
    client_ = std::make_unique<httplib::Client>("127.0.0.1", server_->port());
    client_->set_read_timeout(60, 0);
  }
  void TearDown() override {
    if (engine_) engine_->stop(true);
    if (server_) server_->stop();
    if (thread_.joinable()) thread_.join();
  }
  httplib::Result post(const std::string& path, const ojson& body,
                       const httplib::Headers& headers = {}) {
    return client_->Post(path.c_str(), headers, body.dump(), "application/json");
  }
  // The text the generation loop makes for a completion prompt, greedy.
  std::string reference_text(const std::string& prompt, int64_t max_tokens) {
    const std::vector<int32_t> ids =
        reference(tokenizer_->encode(prompt), max_tokens, model_->config().eos_token_ids,
                  tokenizer_->vocab_size());
    StreamDecoder d(*tokenizer_, /*skip_special=*/true);
    std::string text;
    for (int32_t id : ids) text += d.push(id);
    return text + d.flush();
  }

  std::unique_ptr<BpeTokenizer> tokenizer_;
  ServedModel model_info_;
  std::unique_ptr<Engine> engine_;
  std::unique_ptr<Server> server_;
  std::thread thread_;
  std::unique_ptr<httplib::Client> client_;
};

TEST_F(ServerTest, HealthModelsAndErrors) {
  start({}, {.api_key = "sesame"});
  auto health = client_->Get("/health");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 200);
  auto no_key = client_->Get("/v1/models");
  ASSERT_TRUE(no_key);
  EXPECT_EQ(no_key->status, 401);
  EXPECT_EQ(ojson::parse(no_key->body)["error"]["type"], "authentication_error");
  const httplib::Headers key{{"Authorization", "Bearer sesame"}};
  auto wrong = client_->Get("/v1/models", httplib::Headers{{"Authorization", "Bearer nope"}});
  EXPECT_EQ(wrong->status, 401);
  auto models = client_->Get("/v1/models", key);
  ASSERT_EQ(models->status, 200);
  EXPECT_EQ(ojson::parse(models->body)["data"][0]["id"], "tiny-glm5-random");
  auto missing = client_->Get("/v1/nothing", key);
  EXPECT_EQ(missing->status, 404);
  EXPECT_TRUE(ojson::parse(missing->body).contains("error"));
  auto bad_json =
      client_->Post("/v1/chat/completions", key, "{\"messages\": [", "application/json");
  ASSERT_EQ(bad_json->status, 400);
  EXPECT_TRUE(ojson::parse(bad_json->body)["error"]["message"].is_string());
  auto bad_field = post("/v1/completions", {{"prompt", "hi"}, {"temperature", -1}}, key);
  ASSERT_EQ(bad_field->status, 400);
  EXPECT_EQ(ojson::parse(bad_field->body)["error"]["param"], "temperature");
  auto too_long = post("/v1/completions", {{"prompt", "hi"}, {"max_tokens", 100000}}, key);
  ASSERT_EQ(too_long->status, 400);
  EXPECT_EQ(ojson::parse(too_long->body)["error"]["param"], "max_tokens");
}

TEST_F(ServerTest, APromptPastTheContextNamesItsField) {
  start({.ctx = 32});
  std::string long_text;
  for (int i = 0; i < 40; ++i) long_text += "word ";
  auto completion = post("/v1/completions", {{"prompt", long_text}});
  ASSERT_EQ(completion->status, 400);
  EXPECT_EQ(ojson::parse(completion->body)["error"]["param"], "prompt");
  EXPECT_THAT(ojson::parse(completion->body)["error"]["message"].get<std::string>(),
              ::testing::HasSubstr("this server's context is 32 tokens"));
  auto chat =
      post("/v1/chat/completions", {{"messages", {{{"role", "user"}, {"content", long_text}}}}});
  ASSERT_EQ(chat->status, 400);
  EXPECT_EQ(ojson::parse(chat->body)["error"]["param"], "messages");
}

TEST_F(ServerTest, GreedyCompletionEqualsTheGenerationLoop) {
  start();
  const std::string p = "Once upon a time";
  auto r = post("/v1/completions", {{"prompt", p}, {"max_tokens", 20}, {"temperature", 0}});
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  const ojson body = ojson::parse(r->body);
  EXPECT_EQ(body["object"], "text_completion");
  EXPECT_EQ(body["choices"][0]["text"], reference_text(p, 20));
  EXPECT_EQ(body["usage"]["prompt_tokens"], tokenizer_->encode(p).size());
  EXPECT_EQ(body["usage"]["total_tokens"].get<int64_t>(),
            body["usage"]["prompt_tokens"].get<int64_t>() +
                body["usage"]["completion_tokens"].get<int64_t>());
}

TEST_F(ServerTest, StreamingIsServerSentEventsThatAddUpToTheWholeAnswer) {
  start();
  const ojson request{{"messages", {{{"role", "user"}, {"content", "Hello there"}}}},
                      {"max_tokens", 24},
                      {"temperature", 0},
                      {"chat_template_kwargs", {{"enable_thinking", false}}}};
  auto whole = post("/v1/chat/completions", request);
  ASSERT_EQ(whole->status, 200) << whole->body;
  const ojson message = ojson::parse(whole->body)["choices"][0]["message"];

  ojson streaming = request;
  streaming["stream"] = true;
  streaming["stream_options"] = {{"include_usage", true}};
  auto r = post("/v1/chat/completions", streaming);
  ASSERT_EQ(r->status, 200);
  EXPECT_EQ(r->get_header_value("Content-Type"), "text/event-stream");
  // Every event is one "data: " line and a blank line; the last is [DONE].
  ASSERT_TRUE(r->body.ends_with("data: [DONE]\n\n")) << r->body;
  std::string content;
  ojson usage;
  std::string finish;
  size_t events = 0;
  for (size_t at = 0; at < r->body.size();) {
    ASSERT_EQ(r->body.compare(at, 6, "data: "), 0) << r->body.substr(at);
    const size_t end = r->body.find("\n\n", at);
    ASSERT_NE(end, std::string::npos);
    const std::string data = r->body.substr(at + 6, end - at - 6);
    at = end + 2;
    ++events;
    if (data == "[DONE]") {
      EXPECT_EQ(at, r->body.size());
      break;
    }
    const ojson chunk = ojson::parse(data);
    EXPECT_EQ(chunk["object"], "chat.completion.chunk");
    if (!chunk["usage"].is_null()) usage = chunk["usage"];
    if (chunk["choices"].empty()) continue;
    const ojson& c = chunk["choices"][0];
    if (c["delta"].contains("content")) content += c["delta"]["content"].get<std::string>();
    if (!c["finish_reason"].is_null()) finish = c["finish_reason"];
  }
  EXPECT_GT(events, 3u);
  EXPECT_EQ(content, message["content"].is_null() ? "" : message["content"].get<std::string>());
  EXPECT_EQ(finish, ojson::parse(whole->body)["choices"][0]["finish_reason"]);
  // The same counts; the second request found the first's prompt cached.
  const ojson whole_usage = ojson::parse(whole->body)["usage"];
  EXPECT_EQ(usage["prompt_tokens"], whole_usage["prompt_tokens"]);
  EXPECT_EQ(usage["completion_tokens"], whole_usage["completion_tokens"]);
  EXPECT_EQ(usage["prompt_tokens_details"]["cached_tokens"],
            whole_usage["prompt_tokens"].get<int64_t>() - 1);
}

TEST_F(ServerTest, StopStringsEndTheAnswerAndAreNotReturned) {
  start();
  const std::string p = "Once upon a time";
  const std::string full = reference_text(p, 30);
  ASSERT_GT(full.size(), 12u);
  // A few whole characters from the middle.
  const auto boundary = [&](size_t i) {
    while (i < full.size() && (static_cast<unsigned char>(full[i]) & 0xC0) == 0x80) ++i;
    return i;
  };
  const size_t from = boundary(8), to = boundary(from + 3);
  ASSERT_LT(to, full.size());
  const std::string stop = full.substr(from, to - from);
  auto r = post("/v1/completions",
                {{"prompt", p}, {"max_tokens", 30}, {"temperature", 0}, {"stop", stop}});
  ASSERT_EQ(r->status, 200);
  const ojson c = ojson::parse(r->body)["choices"][0];
  EXPECT_EQ(c["text"], full.substr(0, full.find(stop)));
  EXPECT_EQ(c["finish_reason"], "stop");
}

TEST_F(ServerTest, ANamedToolChoiceStartsTheAnswerWithThatCall) {
  start();
  const ojson tools = ojson::parse(R"([{"type": "function", "function": {"name": "get_weather",
      "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}])");
  const ojson request{
      {"messages", {{{"role", "user"}, {"content", "Weather in Paris?"}}}},
      {"tools", tools},
      {"tool_choice", {{"type", "function"}, {"function", {{"name", "get_weather"}}}}},
      {"max_tokens", 8},
      {"temperature", 0}};
  auto r = post("/v1/chat/completions", request);
  ASSERT_EQ(r->status, 200) << r->body;
  const ojson message = ojson::parse(r->body)["choices"][0]["message"];
  // The random model cannot finish a call; what it wrote is kept, after the forced start.
  if (message.contains("tool_calls"))
    EXPECT_EQ(message["tool_calls"][0]["function"]["name"], "get_weather");
  else
    EXPECT_TRUE(message["content"].get<std::string>().starts_with("<tool_call>get_weather"))
        << message.dump();
  EXPECT_FALSE(message.contains("reasoning_content"));
}

TEST_F(ServerTest, AClientThatGoesAwayFreesItsPages) {
  start({.parallel = 2, .prefix_cache = 0});
  int chunks = 0;
  httplib::Request req;
  req.method = "POST";
  req.path = "/v1/completions";
  req.body = ojson{{"prompt", "Once"}, {"max_tokens", 3000}, {"stream", true}}.dump();
  req.set_header("Content-Type", "application/json");
  req.content_receiver = [&](const char*, size_t, uint64_t, uint64_t) { return ++chunks < 3; };
  client_->send(req);  // returns when the receiver gives up: the connection is closed
  EXPECT_EQ(chunks, 3);
  for (int i = 0; i < 500 && engine_->stats().kv_used > 0; ++i) std::this_thread::sleep_for(10ms);
  EXPECT_EQ(engine_->stats().kv_used, 0u);
  EXPECT_EQ(engine_->stats().running, 0);
}

TEST_F(ServerTest, AWholeResponseClientThatGoesAwayIsNoticedToo) {
  start({.parallel = 2, .prefix_cache = 0},
        {.plain_wait = std::chrono::milliseconds(20), .probe = std::chrono::milliseconds(20)});
  httplib::Request req;
  req.method = "POST";
  req.path = "/v1/completions";
  req.body = ojson{{"prompt", "Once"}, {"max_tokens", 4000}, {"ignore_eos", true}}.dump();
  req.set_header("Content-Type", "application/json");
  int received = 0;
  // The first bytes are the probes' spaces; the client hangs up on them.
  req.content_receiver = [&](const char*, size_t, uint64_t, uint64_t) { return ++received < 2; };
  client_->send(req);
  EXPECT_EQ(received, 2);
  for (int i = 0; i < 500 && (engine_->stats().cancelled == 0 || engine_->stats().kv_used > 0); ++i)
    std::this_thread::sleep_for(10ms);
  EXPECT_EQ(engine_->stats().cancelled, 1);
  EXPECT_EQ(engine_->stats().finished, 0);  // it did not run to its 4,000 tokens
  EXPECT_EQ(engine_->stats().kv_used, 0u);
}

}  // namespace
}  // namespace whittle
