// The metrics registry and the Prometheus text format.
#include "common/metrics.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <utility>

#include <glog/logging.h>

#include "absl/strings/str_cat.h"

namespace psrv {
namespace {

void AtomicAdd(std::atomic<double>* target, double amount) {
  double current = target->load(std::memory_order_relaxed);
  while (!target->compare_exchange_weak(current, current + amount, std::memory_order_relaxed)) {
  }
}

const char* TypeName(MetricType type) {
  switch (type) {
    case MetricType::kCounter:
      return "counter";
    case MetricType::kGauge:
      return "gauge";
    case MetricType::kHistogram:
      return "histogram";
  }
  return "untyped";
}

std::string EscapeHelp(const std::string& help) {
  std::string out;
  for (char c : help) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

// `{a="x",b="y"}` (with `extra` appended, e.g. le="0.5"), or "" without labels.
std::string LabelText(const std::vector<std::string>& names, const std::vector<std::string>& values,
                      const std::pair<std::string, std::string>* extra = nullptr) {
  if (names.empty() && extra == nullptr) return "";
  std::string out = "{";
  for (size_t i = 0; i < names.size(); ++i) {
    if (i > 0) out += ",";
    absl::StrAppend(&out, names[i], "=\"", EscapeLabelValue(i < values.size() ? values[i] : ""),
                    "\"");
  }
  if (extra != nullptr) {
    if (!names.empty()) out += ",";
    absl::StrAppend(&out, extra->first, "=\"", EscapeLabelValue(extra->second), "\"");
  }
  out += "}";
  return out;
}

void AppendSample(std::string* out, const std::string& name, const std::string& labels,
                  double value) {
  absl::StrAppend(out, name, labels, " ", FormatMetricValue(value), "\n");
}

void AppendHeader(std::string* out, const std::string& name, const std::string& help,
                  MetricType type) {
  absl::StrAppend(out, "# HELP ", name, " ", EscapeHelp(help), "\n");
  absl::StrAppend(out, "# TYPE ", name, " ", TypeName(type), "\n");
}

std::vector<std::string> Fit(std::vector<std::string> values, size_t size) {
  values.resize(size);
  return values;
}

void CheckNames(const std::string& name, MetricType type,
                const std::vector<std::string>& label_names) {
  CHECK(IsValidMetricName(name)) << "invalid metric name \"" << name << "\"";
  if (type == MetricType::kCounter) {
    CHECK(name.size() > 6 && name.compare(name.size() - 6, 6, "_total") == 0)
        << "counter " << name << " must end in _total";
  }
  for (const std::string& label : label_names) {
    CHECK(IsValidLabelName(label) && label != "le") << "invalid label name \"" << label << "\"";
  }
}

}  // namespace

void Counter::Increment(double amount) {
  if (!(amount > 0)) return;
  AtomicAdd(&value_, amount);
}

void Gauge::Add(double amount) { AtomicAdd(&value_, amount); }

Histogram::Histogram(std::vector<double> bounds)
    : bounds_(std::move(bounds)), counts_(new std::atomic<uint64_t>[bounds_.size() + 1]) {
  for (size_t i = 1; i < bounds_.size(); ++i) {
    CHECK_LT(bounds_[i - 1], bounds_[i]) << "histogram bounds must increase";
  }
  for (size_t i = 0; i <= bounds_.size(); ++i) counts_[i].store(0, std::memory_order_relaxed);
}

void Histogram::Observe(double value) {
  // The first bucket whose bound is >= value (NaN lands in +Inf).
  const size_t bucket =
      std::lower_bound(bounds_.begin(), bounds_.end(), value) - bounds_.begin();
  counts_[bucket].fetch_add(1, std::memory_order_relaxed);
  AtomicAdd(&sum_, value);
}

Histogram::Snapshot Histogram::Snap() const {
  Snapshot snapshot;
  snapshot.bounds = bounds_;
  snapshot.cumulative.resize(bounds_.size() + 1);
  uint64_t total = 0;
  for (size_t i = 0; i <= bounds_.size(); ++i) {
    total += counts_[i].load(std::memory_order_relaxed);
    snapshot.cumulative[i] = total;
  }
  snapshot.count = total;
  snapshot.sum = sum_.load(std::memory_order_relaxed);
  return snapshot;
}

std::vector<double> ExponentialBuckets(double start, double factor, int count) {
  std::vector<double> bounds;
  double bound = start;
  for (int i = 0; i < count; ++i, bound *= factor) bounds.push_back(bound);
  return bounds;
}

const std::vector<double>& LatencyBuckets() {
  static const std::vector<double>* const kBuckets = new std::vector<double>{
      0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
      0.05,    0.1,    0.25,    0.5,    1,     2.5,    5,     10,   30,    60};
  return *kBuckets;
}

namespace metrics_internal {

FamilyBase::FamilyBase(std::string name, std::string help, MetricType type,
                       std::vector<std::string> label_names)
    : name_(std::move(name)),
      help_(std::move(help)),
      type_(type),
      label_names_(std::move(label_names)) {}

void FamilyBase::Render(std::string* out) const {
  AppendHeader(out, name_, help_, type_);
  RenderSamples(out);
}

}  // namespace metrics_internal

template <typename Metric>
Metric* MetricFamily<Metric>::Get(std::vector<std::string> label_values) {
  label_values = Fit(std::move(label_values), label_names_.size());
  absl::MutexLock lock(&mu_);
  std::unique_ptr<Metric>& metric = metrics_[label_values];
  if (metric == nullptr) metric = make_();
  return metric.get();
}

template <typename Metric>
void MetricFamily<Metric>::Remove(const std::vector<std::string>& label_values) {
  absl::MutexLock lock(&mu_);
  metrics_.erase(Fit(label_values, label_names_.size()));
}

template <>
void MetricFamily<Counter>::RenderSamples(std::string* out) const {
  absl::MutexLock lock(&mu_);
  for (const auto& [values, metric] : metrics_) {
    AppendSample(out, name_, LabelText(label_names_, values), metric->Value());
  }
}

template <>
void MetricFamily<Gauge>::RenderSamples(std::string* out) const {
  absl::MutexLock lock(&mu_);
  for (const auto& [values, metric] : metrics_) {
    AppendSample(out, name_, LabelText(label_names_, values), metric->Value());
  }
}

template <>
void MetricFamily<Histogram>::RenderSamples(std::string* out) const {
  absl::MutexLock lock(&mu_);
  for (const auto& [values, metric] : metrics_) {
    const Histogram::Snapshot snap = metric->Snap();
    for (size_t i = 0; i <= snap.bounds.size(); ++i) {
      const std::pair<std::string, std::string> le = {
          "le", i < snap.bounds.size() ? FormatMetricValue(snap.bounds[i]) : "+Inf"};
      AppendSample(out, name_ + "_bucket", LabelText(label_names_, values, &le),
                   static_cast<double>(snap.cumulative[i]));
    }
    const std::string labels = LabelText(label_names_, values);
    AppendSample(out, name_ + "_sum", labels, snap.sum);
    AppendSample(out, name_ + "_count", labels, static_cast<double>(snap.count));
  }
}

template class MetricFamily<Counter>;
template class MetricFamily<Gauge>;
template class MetricFamily<Histogram>;

void CollectedMetrics::Family::Add(std::vector<std::string> label_values, double value) {
  samples_.emplace_back(Fit(std::move(label_values), label_names_.size()), value);
}

CollectedMetrics::Family* CollectedMetrics::Add(const std::string& name, const std::string& help,
                                                MetricType type,
                                                std::vector<std::string> label_names) {
  CheckNames(name, type, label_names);
  auto family = std::make_unique<Family>();
  family->name_ = name;
  family->help_ = help;
  family->type_ = type;
  family->label_names_ = std::move(label_names);
  families_.push_back(std::move(family));
  return families_.back().get();
}

CollectedMetrics::Family* CollectedMetrics::AddCounter(const std::string& name,
                                                       const std::string& help,
                                                       std::vector<std::string> label_names) {
  return Add(name, help, MetricType::kCounter, std::move(label_names));
}

CollectedMetrics::Family* CollectedMetrics::AddGauge(const std::string& name,
                                                     const std::string& help,
                                                     std::vector<std::string> label_names) {
  return Add(name, help, MetricType::kGauge, std::move(label_names));
}

void CollectedMetrics::Render(std::string* out) const {
  for (const auto& family : families_) {
    AppendHeader(out, family->name_, family->help_, family->type_);
    std::vector<std::pair<std::vector<std::string>, double>> samples = family->samples_;
    std::stable_sort(samples.begin(), samples.end(),
                     [](const auto& a, const auto& b) { return a.first < b.first; });
    for (const auto& [values, value] : samples) {
      AppendSample(out, family->name_, LabelText(family->label_names_, values), value);
    }
  }
}

template <typename Metric>
MetricFamily<Metric>* MetricsRegistry::AddFamily(const std::string& name, const std::string& help,
                                                 MetricType type,
                                                 std::vector<std::string> label_names,
                                                 std::function<std::unique_ptr<Metric>()> make) {
  CheckNames(name, type, label_names);
  absl::MutexLock lock(&mu_);
  for (const auto& family : families_) {
    if (family->name() != name) continue;
    auto* same = dynamic_cast<MetricFamily<Metric>*>(family.get());
    CHECK(same != nullptr && family->type() == type)
        << "metric " << name << " registered twice with different types";
    return same;
  }
  families_.push_back(std::make_unique<MetricFamily<Metric>>(name, help, type,
                                                             std::move(label_names),
                                                             std::move(make)));
  return static_cast<MetricFamily<Metric>*>(families_.back().get());
}

CounterFamily* MetricsRegistry::AddCounter(const std::string& name, const std::string& help,
                                           std::vector<std::string> label_names) {
  return AddFamily<Counter>(name, help, MetricType::kCounter, std::move(label_names),
                            [] { return std::make_unique<Counter>(); });
}

GaugeFamily* MetricsRegistry::AddGauge(const std::string& name, const std::string& help,
                                       std::vector<std::string> label_names) {
  return AddFamily<Gauge>(name, help, MetricType::kGauge, std::move(label_names),
                          [] { return std::make_unique<Gauge>(); });
}

HistogramFamily* MetricsRegistry::AddHistogram(const std::string& name, const std::string& help,
                                               std::vector<std::string> label_names,
                                               std::vector<double> bounds) {
  return AddFamily<Histogram>(name, help, MetricType::kHistogram, std::move(label_names),
                              [bounds] { return std::make_unique<Histogram>(bounds); });
}

void MetricsRegistry::AddCollector(Collector collector) {
  absl::MutexLock lock(&mu_);
  collectors_.push_back(std::move(collector));
}

std::string MetricsRegistry::Render() const {
  std::vector<const metrics_internal::FamilyBase*> families;
  std::vector<Collector> collectors;
  {
    absl::MutexLock lock(&mu_);
    for (const auto& family : families_) families.push_back(family.get());
    collectors = collectors_;
  }
  std::string out;
  for (const auto* family : families) family->Render(&out);
  // Outside the registry's lock: a collector may take its own locks (and register metrics).
  CollectedMetrics collected;
  for (const Collector& collector : collectors) collector(&collected);
  collected.Render(&out);
  return out;
}

bool IsValidMetricName(const std::string& name) {
  if (name.empty()) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':' ||
                    (i > 0 && c >= '0' && c <= '9');
    if (!ok) return false;
  }
  return true;
}

bool IsValidLabelName(const std::string& name) {
  return IsValidMetricName(name) && name.find(':') == std::string::npos &&
         name.compare(0, 2, "__") != 0;
}

std::string FormatMetricValue(double value) {
  if (std::isnan(value)) return "NaN";
  if (std::isinf(value)) return value > 0 ? "+Inf" : "-Inf";
  char buffer[32];
  const std::to_chars_result result = std::to_chars(buffer, buffer + sizeof(buffer), value);
  return std::string(buffer, result.ptr);
}

std::string EscapeLabelValue(const std::string& value) {
  std::string out;
  out.reserve(value.size());
  for (char c : value) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '"') {
      out += "\\\"";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

}  // namespace psrv
