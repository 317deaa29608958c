// The strict Prometheus text-format reader used by the tests.
#include "common/prometheus_text.h"

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <set>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace psrv {
namespace {

bool NameChar(char c, bool first) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':' ||
         (!first && c >= '0' && c <= '9');
}

// Reads a metric or label name at the start of `*s`.
std::string TakeName(absl::string_view* s) {
  size_t n = 0;
  while (n < s->size() && NameChar((*s)[n], n == 0)) ++n;
  std::string name(s->substr(0, n));
  s->remove_prefix(n);
  return name;
}

std::optional<double> ParseValue(absl::string_view text) {
  if (text == "NaN") return std::nan("");
  if (text == "+Inf" || text == "Inf") return HUGE_VAL;
  if (text == "-Inf") return -HUGE_VAL;
  if (text.empty()) return std::nullopt;
  std::string copy(text);
  char* end = nullptr;
  const double value = std::strtod(copy.c_str(), &end);
  if (end != copy.c_str() + copy.size()) return std::nullopt;
  return value;
}

absl::Status LineError(int line, absl::string_view text, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("line ", line, " (", text, "): ", what));
}

// Labels in braces at the start of `*s` (which starts with '{').
absl::StatusOr<std::map<std::string, std::string>> TakeLabels(absl::string_view* s) {
  std::map<std::string, std::string> labels;
  s->remove_prefix(1);
  while (true) {
    if (absl::ConsumePrefix(s, "}")) return labels;
    const std::string name = TakeName(s);
    if (name.empty() || name.find(':') != std::string::npos) {
      return absl::InvalidArgumentError("bad label name");
    }
    if (!absl::ConsumePrefix(s, "=\"")) return absl::InvalidArgumentError("expected =\"");
    std::string value;
    while (true) {
      if (s->empty()) return absl::InvalidArgumentError("unterminated label value");
      const char c = s->front();
      s->remove_prefix(1);
      if (c == '"') break;
      if (c == '\n') return absl::InvalidArgumentError("newline in a label value");
      if (c == '\\') {
        if (s->empty()) return absl::InvalidArgumentError("dangling backslash");
        const char e = s->front();
        s->remove_prefix(1);
        if (e == 'n') {
          value += '\n';
        } else if (e == '\\' || e == '"') {
          value += e;
        } else {
          return absl::InvalidArgumentError(absl::StrCat("bad escape \\", std::string(1, e)));
        }
        continue;
      }
      value += c;
    }
    if (!labels.emplace(name, value).second) {
      return absl::InvalidArgumentError(absl::StrCat("label ", name, " repeated"));
    }
    if (absl::ConsumePrefix(s, ",")) continue;
    if (s->empty() || s->front() != '}') return absl::InvalidArgumentError("expected , or }");
  }
}

std::string UnescapeHelp(absl::string_view text) {
  std::string out;
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '\\' && i + 1 < text.size() && (text[i + 1] == 'n' || text[i + 1] == '\\')) {
      out += text[i + 1] == 'n' ? '\n' : '\\';
      ++i;
    } else {
      out += text[i];
    }
  }
  return out;
}

// The histogram samples of one label set (without le).
struct HistogramSeries {
  std::vector<std::pair<double, double>> buckets;  // (le, count) in text order.
  std::optional<double> count;
};

}  // namespace

std::vector<MetricSample> ParsedMetrics::Find(
    const std::string& name, const std::map<std::string, std::string>& labels) const {
  std::vector<MetricSample> found;
  for (const MetricSample& sample : samples) {
    if (sample.name != name) continue;
    bool match = true;
    for (const auto& [key, value] : labels) {
      auto it = sample.labels.find(key);
      if (it == sample.labels.end() || it->second != value) match = false;
    }
    if (match) found.push_back(sample);
  }
  return found;
}

double ParsedMetrics::Sum(const std::string& name,
                          const std::map<std::string, std::string>& labels) const {
  double sum = 0;
  for (const MetricSample& sample : Find(name, labels)) sum += sample.value;
  return sum;
}

std::optional<double> ParsedMetrics::Value(const std::string& name,
                                           const std::map<std::string, std::string>& labels) const {
  const std::vector<MetricSample> found = Find(name, labels);
  if (found.size() != 1) return std::nullopt;
  return found[0].value;
}

absl::StatusOr<ParsedMetrics> ParsePrometheusText(absl::string_view text) {
  static const std::set<std::string> kTypes = {"counter", "gauge", "histogram", "summary",
                                               "untyped"};
  ParsedMetrics parsed;
  std::set<std::string> families_with_samples;
  std::string current_family;
  std::map<std::pair<std::string, std::map<std::string, std::string>>, HistogramSeries> histograms;
  int number = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++number;
    if (line.empty()) continue;
    if (absl::ConsumePrefix(&line, "#")) {
      absl::string_view rest = absl::StripLeadingAsciiWhitespace(line);
      const bool is_help = absl::ConsumePrefix(&rest, "HELP ");
      const bool is_type = !is_help && absl::ConsumePrefix(&rest, "TYPE ");
      if (!is_help && !is_type) continue;  // A comment.
      const std::string name = TakeName(&rest);
      if (name.empty() || (!rest.empty() && rest.front() != ' ')) {
        return LineError(number, line, "bad metric name");
      }
      absl::ConsumePrefix(&rest, " ");
      if (is_help) {
        if (!parsed.help.emplace(name, UnescapeHelp(rest)).second) {
          return LineError(number, line, "second HELP line for this metric");
        }
      } else {
        if (kTypes.count(std::string(rest)) == 0) return LineError(number, line, "unknown type");
        if (families_with_samples.count(name) > 0) {
          return LineError(number, line, "TYPE after the metric's samples");
        }
        if (!parsed.types.emplace(name, std::string(rest)).second) {
          return LineError(number, line, "second TYPE line for this metric");
        }
      }
      continue;
    }
    absl::string_view rest = line;
    MetricSample sample;
    sample.name = TakeName(&rest);
    if (sample.name.empty()) return LineError(number, line, "bad metric name");
    if (!rest.empty() && rest.front() == '{') {
      absl::StatusOr<std::map<std::string, std::string>> labels = TakeLabels(&rest);
      if (!labels.ok()) return LineError(number, line, labels.status().message());
      sample.labels = *std::move(labels);
    }
    if (!absl::ConsumePrefix(&rest, " ")) return LineError(number, line, "expected a space");
    std::vector<absl::string_view> fields = absl::StrSplit(rest, ' ');
    if (fields.empty() || fields.size() > 2) return LineError(number, line, "expected a value");
    std::optional<double> value = ParseValue(fields[0]);
    if (!value.has_value()) return LineError(number, line, "bad value");
    sample.value = *value;

    // Which family the sample belongs to: its own name, or a histogram's.
    std::string family = sample.name;
    std::string suffix;
    if (parsed.types.count(family) == 0) {
      for (const char* s : {"_bucket", "_sum", "_count"}) {
        if (absl::EndsWith(sample.name, s)) {
          const std::string base = sample.name.substr(0, sample.name.size() - strlen(s));
          auto type = parsed.types.find(base);
          if (type != parsed.types.end() &&
              (type->second == "histogram" || type->second == "summary")) {
            family = base;
            suffix = s;
          }
        }
      }
    }
    if (parsed.types.count(family) == 0) {
      return LineError(number, line, "sample without a TYPE line before it");
    }
    if (family != current_family && families_with_samples.count(family) > 0) {
      return LineError(number, line, "the samples of a metric must be together");
    }
    current_family = family;
    families_with_samples.insert(family);
    if (parsed.types[family] == "histogram") {
      if (suffix.empty()) return LineError(number, line, "histogram sample without a suffix");
      std::map<std::string, std::string> key_labels = sample.labels;
      if (suffix == "_bucket") {
        auto le = key_labels.find("le");
        if (le == key_labels.end()) return LineError(number, line, "bucket without le");
        std::optional<double> bound = ParseValue(le->second);
        if (!bound.has_value()) return LineError(number, line, "bad le");
        key_labels.erase(le);
        histograms[{family, key_labels}].buckets.emplace_back(*bound, sample.value);
      } else if (suffix == "_count") {
        histograms[{family, key_labels}].count = sample.value;
      }
    }
    parsed.samples.push_back(std::move(sample));
  }
  for (const auto& [key, series] : histograms) {
    const std::string what = absl::StrCat("histogram ", key.first);
    if (series.buckets.empty() || !std::isinf(series.buckets.back().first)) {
      return absl::InvalidArgumentError(absl::StrCat(what, ": no +Inf bucket last"));
    }
    for (size_t i = 1; i < series.buckets.size(); ++i) {
      if (!(series.buckets[i].first > series.buckets[i - 1].first) ||
          series.buckets[i].second < series.buckets[i - 1].second) {
        return absl::InvalidArgumentError(
            absl::StrCat(what, ": buckets not increasing or not cumulative"));
      }
    }
    if (!series.count.has_value() || *series.count != series.buckets.back().second) {
      return absl::InvalidArgumentError(absl::StrCat(what, ": _count differs from +Inf bucket"));
    }
  }
  return parsed;
}

}  // namespace psrv
