#include "bench/worker_metrics.h"

#include <string>
#include <utility>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/http_client.h"

namespace psrv {

std::vector<ParsedMetrics> ReadWorkerMetrics(LocalCluster* cluster) {
  std::vector<ParsedMetrics> workers;
  absl::StatusOr<std::vector<std::pair<std::string, int>>> ports =
      cluster->MetricsPorts(absl::Seconds(5));
  if (!ports.ok()) return workers;
  for (const auto& [name, port] : *ports) {
    if (name.rfind("worker", 0) != 0) continue;
    absl::StatusOr<HttpGetResult> page = HttpGet("127.0.0.1", port, "/metrics", absl::Seconds(5));
    if (!page.ok()) continue;
    absl::StatusOr<ParsedMetrics> metrics = ParsePrometheusText(page->body);
    if (metrics.ok()) workers.push_back(std::move(*metrics));
  }
  return workers;
}

std::map<std::string, double> WorkerPhaseMeans(LocalCluster* cluster) {
  std::map<std::string, double> sums, counts, means;
  for (const ParsedMetrics& metrics : ReadWorkerMetrics(cluster)) {
    for (const char* phase : {"pull", "compute", "push", "eval"}) {
      sums[phase] += metrics.Sum("psrv_worker_phase_seconds_sum", {{"phase", phase}});
      counts[phase] += metrics.Sum("psrv_worker_phase_seconds_count", {{"phase", phase}});
    }
  }
  for (const auto& [phase, count] : counts) {
    if (count > 0) means[phase] = sums[phase] / count;
  }
  return means;
}

}  // namespace psrv
