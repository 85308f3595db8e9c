// Server: the HTTP face of the engine (cpp-httplib from Debian; no HTTP parsing of our own).
//   POST /v1/chat/completions, POST /v1/completions   (stream: server-sent events, data: [DONE])
//   GET  /v1/models, GET /health
// Errors are OpenAI error objects: 400 for a bad request, 401 for a wrong or missing API key (when
// one is set; /health stays open), 404 for an unknown path, 429 when the queue is full, 503 while
// shutting down. A client that goes away cancels its generation, which frees its KV pages: a
// streaming one at the next event it cannot be sent; a non-streaming one within about two seconds
// (after the first second the response is sent chunked, with JSON-insignificant leading spaces,
// so that a closed connection shows as a failed write — cpp-httplib 0.11 cannot ask the socket).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "serve/engine.h"
#include "serve/openai_api.h"

namespace httplib {
class Server;
}

namespace whittle {

struct ServerOptions {
  std::string host = "127.0.0.1";
  int port = 8080;           // 0: any free port (port() says which)
  std::string api_key = "";  // "": no key needed
  size_t max_body_bytes = 32u << 20;
  // A whole-response request still running after `plain_wait` is answered chunked, and the
  // connection probed every `probe` (see above).
  std::chrono::milliseconds plain_wait{1000}, probe{1000};
};

class Server {
 public:
  Server(Engine& engine, const ServedModel& model, ServerOptions options);
  ~Server();
  // Binds the socket (throws Error naming host and port when it cannot), then serves until stop().
  void bind();
  void serve();
  int port() const { return port_; }
  // Stops accepting connections and returns once the requests in hand have been answered; call
  // Engine::stop first so that they end. Any thread; idempotent.
  void stop();

 private:
  Engine& engine_;
  const ServedModel& model_;
  ServerOptions options_;
  std::unique_ptr<httplib::Server> http_;
  int port_ = 0;
  int listen_fd_ = -1;
};

}  // namespace whittle
