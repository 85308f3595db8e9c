// The HTTP server; see server.h.
#include "serve/server.h"

#include <httplib.h>
#include <sys/socket.h>

#include <fmt/core.h>

#include "util/error.h"

namespace whittle {
namespace {

using ojson = nlohmann::ordered_json;
using std::chrono::milliseconds;

void send_error(httplib::Response& res, const RequestError& e) {
  res.status = e.status();
  res.set_content(e.body().dump(), "application/json");
}

// How long a streaming request waits for tokens before it checks the connection again.
constexpr milliseconds kEventWait{250};

}  // namespace

Server::Server(Engine& engine, const ServedModel& model, ServerOptions options)
    : engine_(engine),
      model_(model),
      options_(std::move(options)),
      http_(std::make_unique<httplib::Server>()) {
  // Every waiting or running request holds an HTTP thread while it waits; a few more answer
  // /health, /v1/models and the 429s while the queue is full.
  const size_t threads =
      static_cast<size_t>(engine_.options().max_waiting + engine_.options().parallel + 8);
  http_->new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  http_->set_payload_max_length(options_.max_body_bytes);
  // cpp-httplib listens with a backlog of 5: 32 clients connecting at once overflow it, and a
  // connection whose handshake the kernel dropped can fail later as a read error. The listening
  // socket is kept so that bind() can listen again with the system's maximum.
  http_->set_socket_options([this](int fd) {
    const int yes = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);  // what cpp-httplib's default does
    listen_fd_ = fd;
  });

  http_->set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
    if (options_.api_key.empty() || req.path == "/health")
      return httplib::Server::HandlerResponse::Unhandled;
    if (req.get_header_value("Authorization") == "Bearer " + options_.api_key)
      return httplib::Server::HandlerResponse::Unhandled;
    send_error(res, RequestError(401,
                                 req.has_header("Authorization")
                                     ? "the API key is wrong (Authorization: Bearer KEY)"
                                     : "an API key is needed (Authorization: Bearer KEY)",
                                 "", "authentication_error"));
    return httplib::Server::HandlerResponse::Handled;
  });
  http_->set_error_handler([](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return;
    const std::string message = res.status == 404
                                    ? fmt::format("no route for {} {}", req.method, req.path)
                                : res.status == 413 ? std::string("the request body is too large")
                                                    : fmt::format("HTTP {}", res.status);
    send_error(res, RequestError(res.status, message));
  });
  http_->set_exception_handler(
      [](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
        try {
          std::rethrow_exception(ep);
        } catch (const RequestError& e) {
          send_error(res, e);
        } catch (const std::exception& e) {
          send_error(res, RequestError(500, e.what(), "", "server_error"));
        }
      });

  http_->Get("/health", [](const httplib::Request&, httplib::Response& res) {
    res.set_content(R"({"status":"ok"})", "application/json");
  });
  http_->Get("/v1/models", [this](const httplib::Request&, httplib::Response& res) {
    res.set_content(models_list(model_, engine_.ctx()).dump(), "application/json");
  });

  const auto generate = [this](RequestKind kind) {
    return [this, kind](const httplib::Request& req, httplib::Response& res) {
      PreparedRequest prepared =
          prepare_request(parse_openai_request(req.body, kind), model_, engine_.ctx());
      const bool stream = prepared.request.stream;
      std::shared_ptr<Stream> s = engine_.submit(prepared.job);
      auto answer = std::make_shared<Response>(std::move(prepared), std::move(s), model_);
      if (stream) {
        res.set_header("Cache-Control", "no-cache");
        res.set_chunked_content_provider(
            "text/event-stream", [answer](size_t, httplib::DataSink& sink) {
              const std::string events = answer->next_events(kEventWait);
              if (!events.empty() && !sink.write(events.data(), events.size())) {
                answer->cancel();  // the client is gone
                return false;
              }
              if (answer->done()) sink.done();
              return true;
            });
        return;
      }
      // Most answers come within the first wait and go out whole, with their length.
      std::string body = answer->wait_body(options_.plain_wait);
      if (answer->done()) {
        res.set_content(body, "application/json");
        return;
      }
      res.set_chunked_content_provider(
          "application/json", [answer, probe = options_.probe](size_t, httplib::DataSink& sink) {
            const std::string body = answer->wait_body(probe);
            const std::string_view out = answer->done() ? std::string_view(body) : " ";
            if (!sink.write(out.data(), out.size())) {
              answer->cancel();
              return false;
            }
            if (answer->done()) sink.done();
            return true;
          });
    };
  };
  http_->Post("/v1/chat/completions", generate(RequestKind::kChat));
  http_->Post("/v1/completions", generate(RequestKind::kCompletion));
}

Server::~Server() {
  stop();
}

void Server::bind() {
  port_ = options_.port == 0
              ? http_->bind_to_any_port(options_.host)
              : (http_->bind_to_port(options_.host, options_.port) ? options_.port : -1);
  if (port_ < 0)
    fail("cannot listen on {}:{} (in use, or not an address of this machine)", options_.host,
         options_.port);
  if (listen_fd_ >= 0) ::listen(listen_fd_, SOMAXCONN);
}

void Server::serve() {
  http_->listen_after_bind();
}

void Server::stop() {
  if (http_) http_->stop();
}

}  // namespace whittle
