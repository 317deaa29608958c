#include "bench/sample_stats.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

namespace psrv {

double Quantile(std::vector<double> samples, double q) {
  if (samples.empty()) return 0;
  std::sort(samples.begin(), samples.end());
  q = std::clamp(q, 0.0, 1.0);
  const double position = q * static_cast<double>(samples.size() - 1);
  const size_t below = static_cast<size_t>(std::floor(position));
  const size_t above = std::min(below + 1, samples.size() - 1);
  const double fraction = position - static_cast<double>(below);
  return samples[below] + fraction * (samples[above] - samples[below]);
}

SampleSummary Summarize(const std::vector<double>& samples) {
  SampleSummary s;
  s.count = samples.size();
  if (samples.empty()) return s;
  std::vector<double> sorted = samples;
  std::sort(sorted.begin(), sorted.end());
  s.mean = std::accumulate(sorted.begin(), sorted.end(), 0.0) / static_cast<double>(sorted.size());
  s.min = sorted.front();
  s.max = sorted.back();
  s.p10 = Quantile(sorted, 0.10);
  s.p50 = Quantile(sorted, 0.50);
  s.p90 = Quantile(sorted, 0.90);
  s.p99 = Quantile(sorted, 0.99);
  return s;
}

absl::StatusOr<uint64_t> ParseByteSize(absl::string_view text) {
  std::string s = absl::AsciiStrToUpper(absl::StripAsciiWhitespace(text));
  uint64_t multiplier = 1;
  absl::string_view rest(s);
  if (absl::ConsumeSuffix(&rest, "IB")) {
    // "KiB" and friends: the unit letter must follow.
    if (rest.empty() || std::string("KMG").find(rest.back()) == std::string::npos) {
      return absl::InvalidArgumentError(absl::StrCat("bad size \"", text, "\""));
    }
  } else {
    absl::ConsumeSuffix(&rest, "B");
  }
  if (!rest.empty()) {
    switch (rest.back()) {
      case 'K': multiplier = uint64_t{1} << 10; break;
      case 'M': multiplier = uint64_t{1} << 20; break;
      case 'G': multiplier = uint64_t{1} << 30; break;
      default: break;
    }
    if (multiplier != 1) rest.remove_suffix(1);
  }
  uint64_t value = 0;
  if (!absl::SimpleAtoi(rest, &value) || value == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("bad size \"", text, "\" (want e.g. 4096, 4K, 64KiB, 16M, 1G)"));
  }
  return value * multiplier;
}

std::string FormatByteSize(uint64_t bytes) {
  if (bytes >= (uint64_t{1} << 30) && bytes % (uint64_t{1} << 30) == 0) {
    return absl::StrCat(bytes >> 30, " GiB");
  }
  if (bytes >= (uint64_t{1} << 20) && bytes % (uint64_t{1} << 20) == 0) {
    return absl::StrCat(bytes >> 20, " MiB");
  }
  if (bytes >= (uint64_t{1} << 10) && bytes % (uint64_t{1} << 10) == 0) {
    return absl::StrCat(bytes >> 10, " KiB");
  }
  return absl::StrCat(bytes, " B");
}

}  // namespace psrv
