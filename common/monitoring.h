// What every process serves over HTTP for operators: /metrics (Prometheus text format, from a
// MetricsRegistry, including the standard process_* metrics) and /healthz, plus pages a process
// adds (the coordinator's status page). Started by each binary's main() from its --metrics_port
// and --metrics_port_file flags.
#ifndef PSRV_COMMON_MONITORING_H_
#define PSRV_COMMON_MONITORING_H_

#include <map>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "common/http_server.h"
#include "common/metrics.h"

namespace psrv {

struct MonitoringOptions {
  std::string host = "0.0.0.0";
  // The --metrics_port flag: unset means `default_port`, which, if taken (say, by another psrv
  // process on this machine), only costs the metrics: a warning is logged and no server starts.
  // A port that was asked for must be bound. 0: any free port. Negative: no HTTP server.
  std::optional<int> port;
  int default_port = 0;
  std::string port_file;  // If set, the bound port is written there (as --port_file does).
  std::map<std::string, HttpHandler> pages;  // More paths, e.g. "/" for a status page.
  // Non-empty: every path but /healthz needs "Authorization: Bearer <bearer_token>" (HttpServer).
  std::string bearer_token;
};

// Adds the process metrics (CPU seconds, resident and virtual memory, threads, open file
// descriptors, start time) to `registry` and serves it. Returns nullptr when no server was started
// (negative port, or the default port was taken: see MonitoringOptions::port). UNAVAILABLE when a
// requested port cannot be bound; the error of WritePortFile.
absl::StatusOr<std::unique_ptr<HttpServer>> StartMonitoring(const MonitoringOptions& options,
                                                           MetricsRegistry* registry);

// The process_* metrics of Prometheus' client libraries, read from /proc/self at every scrape.
void AddProcessMetrics(MetricsRegistry* registry);

}  // namespace psrv

#endif  // PSRV_COMMON_MONITORING_H_
