// The metrics registry: values, label sets, the text format (parsed back strictly), collectors and
// concurrent updates.
#include "common/metrics.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <thread>
#include <vector>

#include "common/prometheus_text.h"

namespace psrv {
namespace {

using ::testing::HasSubstr;

ParsedMetrics Parse(const std::string& text) {
  absl::StatusOr<ParsedMetrics> parsed = ParsePrometheusText(text);
  EXPECT_TRUE(parsed.ok()) << parsed.status() << "\n" << text;
  return parsed.ok() ? *parsed : ParsedMetrics();
}

TEST(MetricsTest, CounterGaugeHistogramRenderExactly) {
  MetricsRegistry registry;
  CounterFamily* pushes =
      registry.AddCounter("psrv_test_pushes_total", "Pushes accepted.", {"job", "table"});
  pushes->Get({"job-1", "wte"})->Increment();
  pushes->Get({"job-1", "wte"})->Increment(2);
  pushes->Get({"job-1", "lnf"})->Increment(0.5);
  pushes->Get({"job-1", "lnf"})->Increment(-7);  // Ignored: counters only go up.
  registry.AddGauge("psrv_test_loss", "Latest loss.")->Get()->Set(2.25);
  HistogramFamily* latency =
      registry.AddHistogram("psrv_test_seconds", "Latency.", {"method"}, {0.1, 1});
  latency->Get({"Push"})->Observe(0.05);
  latency->Get({"Push"})->Observe(0.1);  // On a bound: counted in that bucket.
  latency->Get({"Push"})->Observe(3);

  EXPECT_EQ(registry.Render(),
            "# HELP psrv_test_pushes_total Pushes accepted.\n"
            "# TYPE psrv_test_pushes_total counter\n"
            "psrv_test_pushes_total{job=\"job-1\",table=\"lnf\"} 0.5\n"
            "psrv_test_pushes_total{job=\"job-1\",table=\"wte\"} 3\n"
            "# HELP psrv_test_loss Latest loss.\n"
            "# TYPE psrv_test_loss gauge\n"
            "psrv_test_loss 2.25\n"
            "# HELP psrv_test_seconds Latency.\n"
            "# TYPE psrv_test_seconds histogram\n"
            "psrv_test_seconds_bucket{method=\"Push\",le=\"0.1\"} 2\n"
            "psrv_test_seconds_bucket{method=\"Push\",le=\"1\"} 2\n"
            "psrv_test_seconds_bucket{method=\"Push\",le=\"+Inf\"} 3\n"
            "psrv_test_seconds_sum{method=\"Push\"} 3.15\n"
            "psrv_test_seconds_count{method=\"Push\"} 3\n");
  const ParsedMetrics parsed = Parse(registry.Render());
  EXPECT_EQ(parsed.types.at("psrv_test_seconds"), "histogram");
  EXPECT_EQ(parsed.help.at("psrv_test_loss"), "Latest loss.");
  EXPECT_EQ(parsed.Value("psrv_test_pushes_total", {{"table", "wte"}}), 3);
  EXPECT_EQ(parsed.Sum("psrv_test_pushes_total"), 3.5);
}

TEST(MetricsTest, LabelValuesAndHelpAreEscaped) {
  MetricsRegistry registry;
  registry.AddGauge("psrv_test_info", "Line one\nback\\slash", {"text"})
      ->Get({"say \"hi\"\\\nbye"})
      ->Set(1);
  const std::string text = registry.Render();
  EXPECT_THAT(text, HasSubstr("# HELP psrv_test_info Line one\\nback\\\\slash\n"));
  EXPECT_THAT(text, HasSubstr("psrv_test_info{text=\"say \\\"hi\\\"\\\\\\nbye\"} 1\n"));
  const ParsedMetrics parsed = Parse(text);
  ASSERT_EQ(parsed.samples.size(), 1u);
  EXPECT_EQ(parsed.samples[0].labels.at("text"), "say \"hi\"\\\nbye");
  EXPECT_EQ(parsed.help.at("psrv_test_info"), "Line one\nback\\slash");
}

TEST(MetricsTest, SameNameGivesTheSameFamilyAndRemoveForgets) {
  MetricsRegistry registry;
  GaugeFamily* a = registry.AddGauge("psrv_test_step", "Step.", {"job"});
  GaugeFamily* b = registry.AddGauge("psrv_test_step", "Other help.", {"job"});
  EXPECT_EQ(a, b);
  a->Get({"job-1"})->Set(5);
  a->Get({"job-2"})->Set(6);
  a->Remove({"job-1"});
  const ParsedMetrics parsed = Parse(registry.Render());
  EXPECT_EQ(parsed.Find("psrv_test_step").size(), 1u);
  EXPECT_EQ(parsed.Value("psrv_test_step", {{"job", "job-2"}}), 6);
  EXPECT_EQ(parsed.help.at("psrv_test_step"), "Step.");
}

TEST(MetricsTest, MissingLabelValuesArePadded) {
  MetricsRegistry registry;
  registry.AddGauge("psrv_test_pad", "Padded.", {"a", "b"})->Get({"x"})->Set(1);
  EXPECT_THAT(registry.Render(), HasSubstr("psrv_test_pad{a=\"x\",b=\"\"} 1\n"));
}

TEST(MetricsTest, CollectorsRunAtEveryScrape) {
  MetricsRegistry registry;
  int scrapes = 0;
  registry.AddCollector([&](CollectedMetrics* out) {
    ++scrapes;
    CollectedMetrics::Family* pulls =
        out->AddCounter("psrv_test_pulls_total", "Pulls.", {"shard"});
    pulls->Add({"b"}, 20);
    pulls->Add({"a"}, 10 * scrapes);
    out->AddGauge("psrv_test_empty", "No samples yet.");
  });
  Parse(registry.Render());
  const std::string text = registry.Render();
  EXPECT_EQ(scrapes, 2);
  // Sorted by label values; a family without samples still declares itself.
  EXPECT_THAT(text, HasSubstr("psrv_test_pulls_total{shard=\"a\"} 20\n"
                              "psrv_test_pulls_total{shard=\"b\"} 20\n"));
  EXPECT_THAT(text, HasSubstr("# TYPE psrv_test_empty gauge\n"));
  const ParsedMetrics parsed = Parse(text);
  EXPECT_EQ(parsed.types.at("psrv_test_pulls_total"), "counter");
}

TEST(MetricsTest, ConcurrentUpdatesAreAllCounted) {
  MetricsRegistry registry;
  CounterFamily* counter = registry.AddCounter("psrv_test_events_total", "Events.", {"thread"});
  HistogramFamily* histogram =
      registry.AddHistogram("psrv_test_values", "Values.", {}, {1, 2, 3});
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 10000; ++i) {
        counter->Get({t % 2 == 0 ? "even" : "odd"})->Increment();
        histogram->Get()->Observe(i % 4);
        if (i % 1000 == 0) registry.Render();  // Scrapes while others write.
      }
    });
  }
  for (auto& thread : threads) thread.join();
  const ParsedMetrics parsed = Parse(registry.Render());
  EXPECT_EQ(parsed.Value("psrv_test_events_total", {{"thread", "even"}}), 20000);
  EXPECT_EQ(parsed.Value("psrv_test_events_total", {{"thread", "odd"}}), 20000);
  EXPECT_EQ(parsed.Value("psrv_test_values_count"), 40000);
  EXPECT_EQ(parsed.Value("psrv_test_values_bucket", {{"le", "1"}}), 20000);  // 0 and 1.
  EXPECT_EQ(parsed.Value("psrv_test_values_sum"), 4 * 2500 * (0 + 1 + 2 + 3));
}

TEST(MetricsTest, ValuesAndNames) {
  EXPECT_EQ(FormatMetricValue(0), "0");
  EXPECT_EQ(FormatMetricValue(42), "42");
  EXPECT_EQ(FormatMetricValue(0.1), "0.1");
  EXPECT_EQ(FormatMetricValue(-2.5), "-2.5");
  EXPECT_EQ(FormatMetricValue(1e21), "1e+21");
  EXPECT_EQ(FormatMetricValue(HUGE_VAL), "+Inf");
  EXPECT_EQ(FormatMetricValue(-HUGE_VAL), "-Inf");
  EXPECT_EQ(FormatMetricValue(std::nan("")), "NaN");
  EXPECT_TRUE(IsValidMetricName("psrv:job_loss"));
  EXPECT_FALSE(IsValidMetricName("9lives"));
  EXPECT_FALSE(IsValidMetricName("a-b"));
  EXPECT_TRUE(IsValidLabelName("job"));
  EXPECT_FALSE(IsValidLabelName("__name__"));
  EXPECT_FALSE(IsValidLabelName("a:b"));
  EXPECT_EQ(ExponentialBuckets(1, 2, 4), (std::vector<double>{1, 2, 4, 8}));
}

TEST(MetricsDeathTest, ProgrammingErrorsStopTheProcess) {
  MetricsRegistry registry;
  EXPECT_DEATH(registry.AddCounter("psrv_bad", "A counter must end in _total."), "_total");
  EXPECT_DEATH(registry.AddGauge("bad-name", "x"), "invalid metric name");
  registry.AddGauge("psrv_test_twice", "x");
  EXPECT_DEATH(registry.AddCounter("psrv_test_twice", "x"), "");
}

TEST(PrometheusTextTest, RejectsWhatPrometheusWould) {
  EXPECT_FALSE(ParsePrometheusText("psrv_x 1\n").ok());  // No TYPE.
  EXPECT_FALSE(ParsePrometheusText("# TYPE a gauge\n# TYPE a gauge\na 1\n").ok());
  EXPECT_FALSE(ParsePrometheusText("# TYPE a gauge\na{b=\"c} 1\n").ok());
  EXPECT_FALSE(ParsePrometheusText("# TYPE a gauge\na one\n").ok());
  EXPECT_FALSE(ParsePrometheusText("# TYPE a gauge\n# TYPE b gauge\na 1\nb 1\na 2\n").ok());
  EXPECT_FALSE(ParsePrometheusText("# TYPE h histogram\nh_bucket{le=\"1\"} 2\n"
                                   "h_bucket{le=\"+Inf\"} 1\nh_count 1\n")
                   .ok());
  EXPECT_FALSE(ParsePrometheusText("# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_count 1\n")
                   .ok());
  EXPECT_FALSE(ParsePrometheusText("# TYPE a counter\na_total 1\n").ok());  // Not a's sample.
  EXPECT_TRUE(ParsePrometheusText("# a comment\n# TYPE a_total counter\na_total 1 1700000000\n")
                  .ok());
}

}  // namespace
}  // namespace psrv
