// Prometheus metrics for every process: a small registry of counters, gauges and fixed-bucket
// histograms with label sets, rendered in the text exposition format 0.0.4 (HELP and TYPE lines,
// then one sample per line). Values kept elsewhere (shard statistics, job progress) are read at
// scrape time by collectors instead of being copied into metrics as they change.
// docs/METRICS.md lists every metric the processes export.
#ifndef PSRV_COMMON_METRICS_H_
#define PSRV_COMMON_METRICS_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace psrv {

enum class MetricType { kCounter, kGauge, kHistogram };

// A value that only goes up (events, bytes, seconds spent). Thread-safe.
class Counter {
 public:
  void Increment(double amount = 1.0);  // amount >= 0; negative amounts are ignored.
  double Value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0};
};

// A value that goes up and down (a loss, a queue length, memory). Thread-safe.
class Gauge {
 public:
  void Set(double value) { value_.store(value, std::memory_order_relaxed); }
  void Add(double amount);
  double Value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0};
};

// Counts observations into fixed buckets (each counts the values <= its upper bound) and keeps
// their sum. Thread-safe; Observe is lock-free.
class Histogram {
 public:
  // `bounds`: the buckets' upper bounds, strictly increasing (+Inf is implicit).
  explicit Histogram(std::vector<double> bounds);

  void Observe(double value);

  struct Snapshot {
    std::vector<double> bounds;
    std::vector<uint64_t> cumulative;  // (bounds.size() + 1) counts <= each bound, then +Inf.
    double sum = 0;
    uint64_t count = 0;  // == cumulative.back()
  };
  Snapshot Snap() const;

 private:
  const std::vector<double> bounds_;
  std::unique_ptr<std::atomic<uint64_t>[]> counts_;  // (bounds_.size() + 1) per bucket, not cumulative.
  std::atomic<double> sum_{0};
};

// Bucket bounds: `count` values from `start`, each `factor` times the previous.
std::vector<double> ExponentialBuckets(double start, double factor, int count);
// Latencies from 50 µs to 60 s (RPCs, training steps and their phases).
const std::vector<double>& LatencyBuckets();

template <typename Metric>
class MetricFamily;

namespace metrics_internal {

// What the registry needs of a family, whatever its metric type.
class FamilyBase {
 public:
  FamilyBase(std::string name, std::string help, MetricType type,
             std::vector<std::string> label_names);
  virtual ~FamilyBase() = default;

  const std::string& name() const { return name_; }
  MetricType type() const { return type_; }
  const std::vector<std::string>& label_names() const { return label_names_; }

  // Appends the HELP and TYPE lines and every sample.
  void Render(std::string* out) const;

 protected:
  virtual void RenderSamples(std::string* out) const = 0;

  const std::string name_;
  const std::string help_;
  const MetricType type_;
  const std::vector<std::string> label_names_;
};

}  // namespace metrics_internal

// All the metrics of one name: one per set of label values, owned by the family. Thread-safe; the
// pointers returned stay valid as long as the family (that is, the registry), unless removed.
template <typename Metric>
class MetricFamily final : public metrics_internal::FamilyBase {
 public:
  MetricFamily(std::string name, std::string help, MetricType type,
               std::vector<std::string> label_names, std::function<std::unique_ptr<Metric>()> make)
      : FamilyBase(std::move(name), std::move(help), type, std::move(label_names)),
        make_(std::move(make)) {}

  // The metric for `label_values` (one per label name, in order), created at its first use.
  // Callers on hot paths keep the pointer. A wrong number of values is a programming error: the
  // values are padded with "" or cut to fit.
  Metric* Get(std::vector<std::string> label_values = {});

  // Forgets the metric of `label_values` (e.g. a job whose shards were dropped). Pointers to it
  // must no longer be used.
  void Remove(const std::vector<std::string>& label_values);

 protected:
  void RenderSamples(std::string* out) const override;

 private:
  const std::function<std::unique_ptr<Metric>()> make_;
  mutable absl::Mutex mu_;
  std::map<std::vector<std::string>, std::unique_ptr<Metric>> metrics_ ABSL_GUARDED_BY(mu_);
};

using CounterFamily = MetricFamily<Counter>;
using GaugeFamily = MetricFamily<Gauge>;
using HistogramFamily = MetricFamily<Histogram>;

// Metrics read at scrape time, filled by the collectors during one scrape: counters and gauges
// with label sets. Not thread-safe (one scrape, one thread); owns its families.
class CollectedMetrics {
 public:
  class Family {
   public:
    // One sample; `label_values` one per label name, in order.
    void Add(std::vector<std::string> label_values, double value);

   private:
    friend class CollectedMetrics;
    std::string name_, help_;
    MetricType type_ = MetricType::kGauge;
    std::vector<std::string> label_names_;
    std::vector<std::pair<std::vector<std::string>, double>> samples_;
  };

  // The returned families stay valid until this object is destroyed.
  Family* AddCounter(const std::string& name, const std::string& help,
                     std::vector<std::string> label_names = {});
  Family* AddGauge(const std::string& name, const std::string& help,
                   std::vector<std::string> label_names = {});

  void Render(std::string* out) const;

 private:
  Family* Add(const std::string& name, const std::string& help, MetricType type,
              std::vector<std::string> label_names);
  std::vector<std::unique_ptr<Family>> families_;
};

// The metrics of one process. Thread-safe. Owned by main() and passed to the libraries that
// record metrics (no global registry).
class MetricsRegistry {
 public:
  // A family of this name, created at the first call; later calls with the same name return the
  // same family (its help, labels and buckets are those of the first call). Names and label names
  // must be valid Prometheus names ([a-zA-Z_:][a-zA-Z0-9_:]*; labels without ':'); a counter's name
  // ends in "_total".
  CounterFamily* AddCounter(const std::string& name, const std::string& help,
                            std::vector<std::string> label_names = {});
  GaugeFamily* AddGauge(const std::string& name, const std::string& help,
                        std::vector<std::string> label_names = {});
  HistogramFamily* AddHistogram(const std::string& name, const std::string& help,
                                std::vector<std::string> label_names, std::vector<double> bounds);

  // Runs at every scrape (Render), on the scraping thread, and adds metrics read from elsewhere.
  // Their names must not clash with the registered families or each other.
  using Collector = std::function<void(CollectedMetrics*)>;
  void AddCollector(Collector collector);

  // Every metric in the Prometheus text format 0.0.4 (Content-Type
  // "text/plain; version=0.0.4; charset=utf-8"): registered families in registration order, then
  // the collectors' families.
  std::string Render() const;

 private:
  template <typename Metric>
  MetricFamily<Metric>* AddFamily(const std::string& name, const std::string& help,
                                  MetricType type, std::vector<std::string> label_names,
                                  std::function<std::unique_ptr<Metric>()> make);

  mutable absl::Mutex mu_;
  std::vector<std::unique_ptr<metrics_internal::FamilyBase>> families_ ABSL_GUARDED_BY(mu_);
  std::vector<Collector> collectors_ ABSL_GUARDED_BY(mu_);
};

inline constexpr char kMetricsContentType[] = "text/plain; version=0.0.4; charset=utf-8";

// True for valid metric names ([a-zA-Z_:][a-zA-Z0-9_:]*) and label names ([a-zA-Z_][a-zA-Z0-9_]*).
bool IsValidMetricName(const std::string& name);
bool IsValidLabelName(const std::string& name);

// A sample value as the text format writes it: shortest round-trip decimal, "+Inf", "-Inf", "NaN".
std::string FormatMetricValue(double value);

// Escapes a label value (backslash, double quote, newline) for the text format.
std::string EscapeLabelValue(const std::string& value);

}  // namespace psrv

#endif  // PSRV_COMMON_METRICS_H_
