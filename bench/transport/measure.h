// What transport_bench measures against a ServerGroup: push and pull throughput of the worker's
// ParameterClient over one whole tensor, the latency of single small operations, and iperf3's
// loopback TCP rate between them for comparison.
#ifndef PSRV_BENCH_TRANSPORT_MEASURE_H_
#define PSRV_BENCH_TRANSPORT_MEASURE_H_

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "bench/cpu_usage.h"
#include "bench/iperf3_loopback.h"
#include "bench/transport/server_group.h"

namespace psrv {
namespace transport {

struct MeasureOptions {
  double seconds = 1.5;            // Timed per direction (throughput).
  int min_iterations = 5;          // Least timed operations per direction (throughput).
  int warmup_iterations = 3;       // Untimed push+pull pairs before a throughput measurement.
  int latency_ops = 2000;          // Timed operations per direction (latency).
  uint64_t min_shard_elements = 1;  // PlanShards' min_shard_elements.
  bool split_connections = false;  // With a client split: one connection per piece (split <= 4).
  double quiet_wait_s = 10;        // Longest wait for a quiet machine; 0: never wait.
  double quiet_max_other_cores = 0.25;  // Load of other processes under which it counts as quiet.
};

// What all measurements share: the processes whose CPU time is ours, the quiet-machine wait and
// the job numbering. Not thread-safe.
struct MeasureContext {
  MeasureOptions options;
  std::vector<pid_t> server_pids;  // Of every group (idle groups still count as ours).
  int job_counter = 0;

  // Waits (bounded) for a quiet machine; returns the seconds waited.
  double WaitForQuiet() const;
};

struct DirectionStats {
  std::vector<double> gbps;  // Per operation.
  double total_seconds = 0;
  uint64_t total_bytes = 0;
};

struct ThroughputResult {
  std::string server_kind;
  uint64_t bytes = 0;
  int servers = 0;
  int shards = 0;
  int split = 1;             // Concurrent requests per shard (--client_split).
  int requests_per_op = 0;
  DirectionStats push, pull;
  CpuCores cpu;              // During the timed loop (push and pull together).
  double waited_s = 0;       // For a quiet machine before it.
  double iperf3_gbps = 0;    // Loopback TCP measured right before and after (0: none).
};

// Alternates timed pushes and pulls of the whole tensor of `bytes` until each direction has had
// `seconds` and at least `min_iterations` operations, the client cutting each shard into `split`
// concurrent requests. Checks the values pulled (ps_server only).
absl::StatusOr<ThroughputResult> MeasureThroughput(ServerGroup* group, uint64_t bytes, int split,
                                                   MeasureContext* context);

struct LatencyResult {
  std::string server_kind;
  uint64_t bytes = 0;
  int servers = 0;
  int shards = 0;
  std::vector<double> push_us, pull_us;
  CpuCores cpu;
  double waited_s = 0;
};

// `latency_ops` operations each way, one at a time, pushes and pulls alternating.
absl::StatusOr<LatencyResult> MeasureLatency(ServerGroup* group, uint64_t bytes,
                                             MeasureContext* context);

// iperf3 loopback runs between the measurements: samples()[i] is the rate measured by the i-th
// Measure() (0 where it failed). After the first failure it is not tried again. Not thread-safe.
class LoopbackSeries {
 public:
  // `enabled` false: every sample is 0 and nothing runs.
  LoopbackSeries(bool enabled, Iperf3Options options);

  // Waits for a quiet machine, runs iperf3 once and appends its rate (reported on stderr).
  void Measure(const MeasureContext& context);

  // The mean of the samples right before and after measurement i (samples i and i + 1) that
  // succeeded; 0 if neither did.
  double Around(size_t i) const;

  bool enabled() const { return enabled_; }
  const std::vector<double>& samples() const { return samples_; }
  const std::string& failure() const { return failure_; }  // Why iperf3 stopped; "" if it did not.

 private:
  bool enabled_;
  Iperf3Options options_;
  std::vector<double> samples_;
  std::string failure_;
};

}  // namespace transport
}  // namespace psrv

#endif  // PSRV_BENCH_TRANSPORT_MEASURE_H_
