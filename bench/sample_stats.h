// Summaries of benchmark samples (percentiles of per-iteration rates and latencies) and the parsing
// of human-readable byte sizes ("4K", "16M") used by the benchmark's flags.
#ifndef PSRV_BENCH_SAMPLE_STATS_H_
#define PSRV_BENCH_SAMPLE_STATS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace psrv {

// The q-quantile (q in [0, 1]) of `samples` with linear interpolation between order statistics
// (numpy's default). 0 for no samples. Takes a copy: the caller's order is kept.
double Quantile(std::vector<double> samples, double q);

struct SampleSummary {
  size_t count = 0;
  double mean = 0;
  double min = 0;
  double p10 = 0;
  double p50 = 0;
  double p90 = 0;
  double p99 = 0;
  double max = 0;
};

SampleSummary Summarize(const std::vector<double>& samples);

// "4096", "4K", "4KiB", "64M", "1G" (K, M, G are powers of 1024; case-insensitive) -> bytes.
// INVALID_ARGUMENT for anything else or zero.
absl::StatusOr<uint64_t> ParseByteSize(absl::string_view text);

// 4096 -> "4 KiB", 16777216 -> "16 MiB", 1000 -> "1000 B".
std::string FormatByteSize(uint64_t bytes);

}  // namespace psrv

#endif  // PSRV_BENCH_SAMPLE_STATS_H_
