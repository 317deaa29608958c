// The coordinator's Prometheus metrics, read from ClusterCoordinator at every scrape: nodes by role
// and health, jobs by state, and each job's progress (step, losses, throughput, per-worker step
// time) — see docs/METRICS.md.
#ifndef PSRV_COORDINATOR_COORDINATOR_METRICS_H_
#define PSRV_COORDINATOR_COORDINATOR_METRICS_H_

#include <functional>

#include "absl/time/clock.h"
#include "common/metrics.h"
#include "coordinator/cluster.h"

namespace psrv {

// Jobs exported one by one: every PENDING or RUNNING job and this many of the latest ended ones
// (the coordinator keeps every job; their series would grow without bound).
inline constexpr int kEndedJobsInMetrics = 10;

// `cluster` (not owned) must outlive the scrapes of `registry`. `clock` should be the cluster's.
void AddCoordinatorMetrics(ClusterCoordinator* cluster, MetricsRegistry* registry,
                           std::function<absl::Time()> clock = [] { return absl::Now(); });

}  // namespace psrv

#endif  // PSRV_COORDINATOR_COORDINATOR_METRICS_H_
