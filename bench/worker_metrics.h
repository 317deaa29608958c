// The workers' Prometheus metrics of a local cluster, for the benchmarks that read them during a
// job (phase times, bytes pushed).
#ifndef PSRV_BENCH_WORKER_METRICS_H_
#define PSRV_BENCH_WORKER_METRICS_H_

#include <map>
#include <string>
#include <vector>

#include "client/local_cluster.h"
#include "common/prometheus_text.h"

namespace psrv {

// Each running worker's /metrics, parsed; workers that could not be read are left out.
std::vector<ParsedMetrics> ReadWorkerMetrics(LocalCluster* cluster);

// Mean seconds per step of each worker phase (pull, compute, push, eval) over every worker's steps
// so far (psrv_worker_phase_seconds); phases not seen yet are left out.
std::map<std::string, double> WorkerPhaseMeans(LocalCluster* cluster);

}  // namespace psrv

#endif  // PSRV_BENCH_WORKER_METRICS_H_
