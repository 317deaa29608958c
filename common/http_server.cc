// HttpServer over civetweb's C API.
#include "common/http_server.h"

#include <civetweb.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <mutex>
#include <optional>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/auth_tokens.h"

namespace psrv {
namespace {

const char* StatusText(int status) {
  switch (status) {
    case 200:
      return "OK";
    case 400:
      return "Bad Request";
    case 401:
      return "Unauthorized";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 500:
      return "Internal Server Error";
    case 503:
      return "Service Unavailable";
    default:
      return "Unknown";
  }
}

void Send(mg_connection* connection, const HttpResponse& response, bool head,
          const char* extra_headers = "") {
  const std::string header = absl::StrCat(
      "HTTP/1.1 ", response.status, " ", StatusText(response.status), "\r\n",
      "Content-Type: ", response.content_type, "\r\n", "Content-Length: ", response.body.size(),
      "\r\n", "Cache-Control: no-store\r\n", extra_headers, "Connection: close\r\n\r\n");
  mg_write(connection, header.data(), header.size());
  if (!head && !response.body.empty()) {
    mg_write(connection, response.body.data(), response.body.size());
  }
}

// civetweb's own messages (bad requests, socket errors) are not worth a log line each.
int QuietLog(const mg_connection*, const char*) { return 1; }

std::string ListeningPorts(const std::string& host, int port) {
  if (host.empty()) return absl::StrCat(port);
  if (host.find(':') != std::string::npos) {
    // IPv6; "+" also accepts IPv4 on "[::]".
    return host == "::" || host == "[::]" ? absl::StrCat("+", port)
                                          : absl::StrCat("[", host, "]:", port);
  }
  return absl::StrCat(host, ":", port);
}

// Opens and closes a connection to 127.0.0.1:port (or `host`), which wakes civetweb's listening
// thread.
void Poke(const std::string& host, int port) {
  sockaddr_in address = {};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<uint16_t>(port));
  const bool any = host.empty() || host == "0.0.0.0" || host.find(':') != std::string::npos;
  if (inet_pton(AF_INET, any ? "127.0.0.1" : host.c_str(), &address.sin_addr) != 1) return;
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return;
  connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address));
  close(fd);
}

}  // namespace

HttpServer::HttpServer(std::map<std::string, HttpHandler> handlers, const Options& options)
    : handlers_(std::move(handlers)),
      bearer_token_(options.bearer_token),
      open_paths_(options.open_paths) {}

absl::StatusOr<std::unique_ptr<HttpServer>> HttpServer::Start(
    const Options& options, std::map<std::string, HttpHandler> handlers) {
  static std::once_flag library_init;
  std::call_once(library_init, [] { mg_init_library(0); });
  std::unique_ptr<HttpServer> server(new HttpServer(std::move(handlers), options));
  const std::string ports = ListeningPorts(options.host, options.port);
  const std::string threads = absl::StrCat(options.threads > 0 ? options.threads : 1);
  const char* config[] = {"listening_ports",    ports.c_str(), "num_threads", threads.c_str(),
                          "request_timeout_ms", "10000",       nullptr};
  mg_callbacks callbacks = {};
  callbacks.log_message = &QuietLog;
  mg_init_data init = {};
  init.callbacks = &callbacks;
  init.user_data = server.get();
  init.configuration_options = config;
  char error_text[256] = {0};
  mg_error_data error = {};
  error.text = error_text;
  error.text_buffer_size = sizeof(error_text);
  server->context_ = mg_start2(&init, &error);
  if (server->context_ == nullptr) {
    return absl::UnavailableError(absl::StrCat("cannot serve HTTP on ", ports, ": ",
                                               error_text[0] ? error_text : "unknown error"));
  }
  mg_set_request_handler(server->context_, "/", &HttpServer::HandleRequest, server.get());
  mg_server_port bound[4] = {};
  const int count = mg_get_server_ports(server->context_, 4, bound);
  if (count <= 0 || bound[0].port <= 0) {
    return absl::UnavailableError(absl::StrCat("cannot tell the port bound for ", ports));
  }
  server->port_ = bound[0].port;
  server->host_ = options.host;
  return server;
}

HttpServer::~HttpServer() {
  if (context_ == nullptr) return;
  // civetweb's listening thread notices mg_stop only between polls of its sockets, every 2 s; a
  // connection ends the poll at once.
  std::atomic<bool> stopped{false};
  std::thread stopper([this, &stopped] {
    mg_stop(context_);
    stopped = true;
  });
  for (int i = 0; i < 1000 && !stopped; ++i) {
    Poke(host_, port_);
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  stopper.join();
}

bool HttpServer::Authorized(mg_connection* connection, const std::string& path) const {
  if (bearer_token_.empty() || open_paths_.count(path) > 0) return true;
  const char* header = mg_get_header(connection, "Authorization");
  const std::optional<std::string> token = ParseBearer(header != nullptr ? header : "");
  return token.has_value() && ConstantTimeEquals(*token, bearer_token_);
}

int HttpServer::HandleRequest(mg_connection* connection, void* self) {
  const HttpServer* server = static_cast<const HttpServer*>(self);
  const mg_request_info* info = mg_get_request_info(connection);
  HttpRequest request;
  request.method = info->request_method != nullptr ? info->request_method : "";
  request.path = info->local_uri != nullptr ? info->local_uri : "";
  request.query = info->query_string != nullptr ? info->query_string : "";
  const bool head = request.method == "HEAD";
  if (request.method != "GET" && !head) {
    HttpResponse response{405, "text/plain; charset=utf-8", "only GET and HEAD\n"};
    Send(connection, response, false, "Allow: GET, HEAD\r\n");
    return response.status;
  }
  if (!server->Authorized(connection, request.path)) {  // Before the 404 that lists the paths.
    HttpResponse response{401, "text/plain; charset=utf-8",
                          "this page needs \"Authorization: Bearer TOKEN\" (--http_token_file)\n"};
    Send(connection, response, head, "WWW-Authenticate: Bearer realm=\"psrv\"\r\n");
    return response.status;
  }
  auto handler = server->handlers_.find(request.path);
  if (handler == server->handlers_.end()) {
    std::string paths;
    for (const auto& [path, unused] : server->handlers_) absl::StrAppend(&paths, " ", path);
    HttpResponse response{404, "text/plain; charset=utf-8",
                          absl::StrCat("not found: ", request.path, "\nserved here:", paths, "\n")};
    Send(connection, response, head);
    return response.status;
  }
  const HttpResponse response = handler->second(request);
  Send(connection, response, head);
  return response.status;
}

}  // namespace psrv
