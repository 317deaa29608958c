// Loopback TCP throughput as measured by iperf3 (one stream), the reference the transport benchmark
// compares its gRPC numbers with: an `iperf3 -s -1` server and an `iperf3 -c ... -J` client are run
// as child processes on 127.0.0.1 and the client's JSON report is parsed.
#ifndef PSRV_BENCH_IPERF3_LOOPBACK_H_
#define PSRV_BENCH_IPERF3_LOOPBACK_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace psrv {

struct Iperf3Options {
  std::string binary;                          // Path to iperf3; empty: looked up in $PATH.
  std::string block_size = "1M";               // iperf3 -l.
  absl::Duration duration = absl::Seconds(3);  // iperf3 -t.
  std::string scratch_dir = "/tmp";            // For the children's output files.
};

// Absolute path of `name` found in $PATH, or NOT_FOUND.
absl::StatusOr<std::string> FindInPath(const std::string& name);

// A free TCP port on 127.0.0.1 (bound once and released, so a race with another process is possible
// but unlikely).
absl::StatusOr<int> PickFreePort();

// Runs one iperf3 measurement and returns the receiver's rate in GB/s (1e9 bytes per second).
// NOT_FOUND if iperf3 is not installed; UNAVAILABLE or INTERNAL if it fails (with its output).
absl::StatusOr<double> MeasureIperf3Loopback(const Iperf3Options& options);

}  // namespace psrv

#endif  // PSRV_BENCH_IPERF3_LOOPBACK_H_
