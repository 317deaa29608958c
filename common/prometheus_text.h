// A strict reader of the Prometheus text exposition format 0.0.4, for tests: checks what a
// Prometheus server would reject (a sample before its family's TYPE line, a family declared twice,
// bad names, label syntax or values, histogram buckets that are not cumulative or disagree with
// _count) and gives the samples back for assertions.
#ifndef PSRV_COMMON_PROMETHEUS_TEXT_H_
#define PSRV_COMMON_PROMETHEUS_TEXT_H_

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace psrv {

struct MetricSample {
  std::string name;  // As written: histograms' samples end in _bucket, _sum or _count.
  std::map<std::string, std::string> labels;
  double value = 0;
};

struct ParsedMetrics {
  std::map<std::string, std::string> types;  // Family name -> "counter", "gauge", "histogram"...
  std::map<std::string, std::string> help;   // Family name -> help text (unescaped).
  std::vector<MetricSample> samples;         // In the order of the text.

  // The samples named `name` whose labels include every pair of `labels`.
  std::vector<MetricSample> Find(const std::string& name,
                                 const std::map<std::string, std::string>& labels = {}) const;
  // The sum of their values (0 if none).
  double Sum(const std::string& name, const std::map<std::string, std::string>& labels = {}) const;
  // The value of the only such sample; nullopt if there is none or more than one.
  std::optional<double> Value(const std::string& name,
                              const std::map<std::string, std::string>& labels = {}) const;
};

// INVALID_ARGUMENT naming the line and what is wrong with it.
absl::StatusOr<ParsedMetrics> ParsePrometheusText(absl::string_view text);

}  // namespace psrv

#endif  // PSRV_COMMON_PROMETHEUS_TEXT_H_
