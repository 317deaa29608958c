// A small embedded HTTP server (civetweb) for what every process serves besides gRPC: /metrics,
// /healthz and the coordinator's status page. Handlers are plain functions from a request to a
// response, matched by exact path.
#ifndef PSRV_COMMON_HTTP_SERVER_H_
#define PSRV_COMMON_HTTP_SERVER_H_

#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>

#include "absl/status/statusor.h"

struct mg_connection;
struct mg_context;

namespace psrv {

struct HttpRequest {
  std::string method;  // "GET" or "HEAD" (others are answered 405 before any handler runs).
  std::string path;    // URL-decoded, without the query: "/metrics".
  std::string query;   // After '?', undecoded; "" if none.
};

struct HttpResponse {
  int status = 200;
  std::string content_type = "text/plain; charset=utf-8";
  std::string body;
};

// Runs on one of the server's threads, possibly concurrently with other requests.
using HttpHandler = std::function<HttpResponse(const HttpRequest&)>;

// Thread-safe. Stops (waiting for the handlers that are running) when destroyed.
class HttpServer {
 public:
  struct Options {
    std::string host = "0.0.0.0";  // IPv4 address, or "::" for every IPv6 (and IPv4) address.
    int port = 0;                  // 0: any free port (see port()).
    int threads = 2;               // Requests handled at once.
    // Non-empty: every path but `open_paths` answers 401 (with WWW-Authenticate) unless the
    // request has "Authorization: Bearer <bearer_token>" (compared in constant time).
    std::string bearer_token;
    std::set<std::string> open_paths;
  };

  // Listens and serves `handlers` by exact path; other paths get 404. UNAVAILABLE (with
  // civetweb's reason) if the address cannot be bound, e.g. the port is in use.
  static absl::StatusOr<std::unique_ptr<HttpServer>> Start(
      const Options& options, std::map<std::string, HttpHandler> handlers);

  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  int port() const { return port_; }  // The port bound.

 private:
  HttpServer(std::map<std::string, HttpHandler> handlers, const Options& options);
  // Whether the request may reach `path`'s handler (no token set, an open path, or the token).
  bool Authorized(mg_connection* connection, const std::string& path) const;
  static int HandleRequest(mg_connection* connection, void* self);

  const std::map<std::string, HttpHandler> handlers_;
  const std::string bearer_token_;
  const std::set<std::string> open_paths_;
  mg_context* context_ = nullptr;
  std::string host_;
  int port_ = 0;
};

}  // namespace psrv

#endif  // PSRV_COMMON_HTTP_SERVER_H_
