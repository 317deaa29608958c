// HttpServer on 127.0.0.1 with port 0: routing by exact path, status codes, HEAD, busy ports.
#include "common/http_server.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "common/http_client.h"

namespace psrv {
namespace {

using ::testing::HasSubstr;

std::unique_ptr<HttpServer> StartTestServer(std::atomic<int>* calls) {
  HttpServer::Options options;
  options.host = "127.0.0.1";
  options.port = 0;
  absl::StatusOr<std::unique_ptr<HttpServer>> server = HttpServer::Start(
      options, {{"/hello",
                 [calls](const HttpRequest& request) {
                   ++*calls;
                   return HttpResponse{200, "text/html; charset=utf-8",
                                       "<p>hello " + request.query + "</p>"};
                 }},
                {"/broken", [](const HttpRequest&) {
                   return HttpResponse{503, "text/plain", "not ready\n"};
                 }}});
  EXPECT_TRUE(server.ok()) << server.status();
  return server.ok() ? *std::move(server) : nullptr;
}

TEST(HttpServerTest, ServesHandlersByExactPath) {
  std::atomic<int> calls{0};
  std::unique_ptr<HttpServer> server = StartTestServer(&calls);
  ASSERT_NE(server, nullptr);
  ASSERT_GT(server->port(), 0);

  absl::StatusOr<HttpGetResult> hello = HttpGet("127.0.0.1", server->port(), "/hello?x=1");
  ASSERT_TRUE(hello.ok()) << hello.status();
  EXPECT_EQ(hello->status, 200);
  EXPECT_EQ(hello->body, "<p>hello x=1</p>");
  EXPECT_EQ(hello->headers["content-type"], "text/html; charset=utf-8");
  EXPECT_EQ(hello->headers["content-length"], "16");

  absl::StatusOr<HttpGetResult> broken = HttpGet("127.0.0.1", server->port(), "/broken");
  ASSERT_TRUE(broken.ok());
  EXPECT_EQ(broken->status, 503);
  EXPECT_EQ(broken->body, "not ready\n");

  absl::StatusOr<HttpGetResult> missing = HttpGet("127.0.0.1", server->port(), "/hello/more");
  ASSERT_TRUE(missing.ok());
  EXPECT_EQ(missing->status, 404);
  EXPECT_THAT(missing->body, HasSubstr("served here: /broken /hello"));
  EXPECT_EQ(calls.load(), 1);
}

TEST(HttpServerTest, ConcurrentRequests) {
  std::atomic<int> calls{0};
  std::unique_ptr<HttpServer> server = StartTestServer(&calls);
  ASSERT_NE(server, nullptr);
  std::vector<std::thread> threads;
  std::atomic<int> ok{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 20; ++i) {
        absl::StatusOr<HttpGetResult> r = HttpGet("127.0.0.1", server->port(), "/hello");
        if (r.ok() && r->status == 200) ++ok;
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(ok.load(), 80);
  EXPECT_EQ(calls.load(), 80);
}

TEST(HttpServerTest, BusyPortIsUnavailable) {
  std::atomic<int> calls{0};
  std::unique_ptr<HttpServer> first = StartTestServer(&calls);
  ASSERT_NE(first, nullptr);
  HttpServer::Options options;
  options.host = "127.0.0.1";
  options.port = first->port();
  absl::StatusOr<std::unique_ptr<HttpServer>> second = HttpServer::Start(options, {});
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(second.status().message(), HasSubstr("cannot serve HTTP on 127.0.0.1:"));
}

TEST(HttpServerTest, StoppedServerRefusesConnections) {
  std::atomic<int> calls{0};
  std::unique_ptr<HttpServer> server = StartTestServer(&calls);
  ASSERT_NE(server, nullptr);
  const int port = server->port();
  server.reset();
  absl::StatusOr<HttpGetResult> r = HttpGet("127.0.0.1", port, "/hello", absl::Seconds(2));
  EXPECT_FALSE(r.ok());
}

TEST(HttpServerTest, BearerTokenGuardsEveryPathButTheOpenOnes) {
  HttpServer::Options options;
  options.host = "127.0.0.1";
  options.bearer_token = "0123456789abcdef-http";
  options.open_paths = {"/healthz"};
  auto ok = [](const HttpRequest&) { return HttpResponse{200, "text/plain", "ok\n"}; };
  absl::StatusOr<std::unique_ptr<HttpServer>> server =
      HttpServer::Start(options, {{"/metrics", ok}, {"/healthz", ok}});
  ASSERT_TRUE(server.ok()) << server.status();
  const int port = (*server)->port();
  auto get = [&](const std::string& path, const std::string& authorization) {
    std::map<std::string, std::string> headers;
    if (!authorization.empty()) headers["Authorization"] = authorization;
    absl::StatusOr<HttpGetResult> reply =
        HttpGet("127.0.0.1", port, path, absl::Seconds(10), headers);
    EXPECT_TRUE(reply.ok()) << reply.status();
    return reply.ok() ? *reply : HttpGetResult();
  };
  HttpGetResult none = get("/metrics", "");
  EXPECT_EQ(none.status, 401);
  EXPECT_EQ(none.headers["www-authenticate"], "Bearer realm=\"psrv\"");
  EXPECT_EQ(get("/metrics", "Bearer 0123456789abcdef-htt").status, 401);
  EXPECT_EQ(get("/metrics", "Basic 0123456789abcdef-http").status, 401);
  // An unknown path without the token is 401 too: the 404 would list the paths served.
  EXPECT_EQ(get("/secret", "").status, 401);
  EXPECT_EQ(get("/metrics", "Bearer 0123456789abcdef-http").status, 200);
  EXPECT_EQ(get("/healthz", "").status, 200);
}

}  // namespace
}  // namespace psrv
