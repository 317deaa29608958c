// StartMonitoring: /metrics parses and has the process metrics, /healthz, extra pages, the port
// file, and what happens when the port is taken.
#include "common/monitoring.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <fstream>
#include <string>

#include "common/http_client.h"
#include "common/prometheus_text.h"

namespace psrv {
namespace {

using ::testing::HasSubstr;

TEST(MonitoringTest, ServesMetricsHealthAndPages) {
  MetricsRegistry registry;
  registry.AddCounter("psrv_test_things_total", "Things.")->Get()->Increment(3);
  MonitoringOptions options;
  options.host = "127.0.0.1";
  options.port = 0;
  options.port_file = ::testing::TempDir() + "/metrics.port";
  options.pages["/"] = [](const HttpRequest&) {
    return HttpResponse{200, "text/html", "<h1>status</h1>"};
  };
  absl::StatusOr<std::unique_ptr<HttpServer>> server = StartMonitoring(options, &registry);
  ASSERT_TRUE(server.ok()) << server.status();
  ASSERT_NE(*server, nullptr);
  const int port = (*server)->port();
  std::string written;
  std::ifstream(options.port_file) >> written;
  EXPECT_EQ(written, std::to_string(port));

  absl::StatusOr<HttpGetResult> metrics = HttpGet("127.0.0.1", port, "/metrics");
  ASSERT_TRUE(metrics.ok()) << metrics.status();
  EXPECT_EQ(metrics->status, 200);
  EXPECT_EQ(metrics->headers["content-type"], "text/plain; version=0.0.4; charset=utf-8");
  absl::StatusOr<ParsedMetrics> parsed = ParsePrometheusText(metrics->body);
  ASSERT_TRUE(parsed.ok()) << parsed.status() << "\n" << metrics->body;
  EXPECT_EQ(parsed->Value("psrv_test_things_total"), 3);
  EXPECT_GT(parsed->Value("process_resident_memory_bytes").value_or(0), 1 << 20);
  EXPECT_GT(parsed->Value("process_virtual_memory_bytes").value_or(0), 1 << 20);
  EXPECT_GE(parsed->Value("process_threads").value_or(0), 2);
  EXPECT_GT(parsed->Value("process_open_fds").value_or(0), 2);
  EXPECT_GE(parsed->Value("process_cpu_seconds_total").value_or(-1), 0);
  const double start = parsed->Value("process_start_time_seconds").value_or(0);
  const double now = absl::ToUnixSeconds(absl::Now());
  EXPECT_GT(start, now - 3600);
  EXPECT_LE(start, now + 2);

  absl::StatusOr<HttpGetResult> health = HttpGet("127.0.0.1", port, "/healthz");
  ASSERT_TRUE(health.ok());
  EXPECT_EQ(health->status, 200);
  EXPECT_EQ(health->body, "ok\n");
  absl::StatusOr<HttpGetResult> page = HttpGet("127.0.0.1", port, "/");
  ASSERT_TRUE(page.ok());
  EXPECT_EQ(page->body, "<h1>status</h1>");
}

TEST(MonitoringTest, TakenDefaultPortOnlyWarnsButARequestedOneFails) {
  MetricsRegistry registry;
  MonitoringOptions first;
  first.host = "127.0.0.1";
  first.port = 0;
  absl::StatusOr<std::unique_ptr<HttpServer>> taken = StartMonitoring(first, &registry);
  ASSERT_TRUE(taken.ok());
  const int port = (*taken)->port();

  MetricsRegistry other;
  MonitoringOptions by_default;
  by_default.host = "127.0.0.1";
  by_default.default_port = port;
  absl::StatusOr<std::unique_ptr<HttpServer>> none = StartMonitoring(by_default, &other);
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_EQ(*none, nullptr);

  MonitoringOptions requested = by_default;
  requested.port = port;
  absl::StatusOr<std::unique_ptr<HttpServer>> failed = StartMonitoring(requested, &other);
  EXPECT_EQ(failed.status().code(), absl::StatusCode::kUnavailable);

  MonitoringOptions disabled = by_default;
  disabled.port = -1;
  absl::StatusOr<std::unique_ptr<HttpServer>> off = StartMonitoring(disabled, &other);
  ASSERT_TRUE(off.ok());
  EXPECT_EQ(*off, nullptr);
}

}  // namespace
}  // namespace psrv
