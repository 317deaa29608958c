#include "coordinator/svg_chart.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>

namespace psrv {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;

TEST(SvgChartTest, NiceTicks) {
  EXPECT_THAT(NiceTicks(0, 1000, 6), ElementsAre(0, 200, 400, 600, 800, 1000));
  EXPECT_THAT(NiceTicks(1.83, 5.6, 5), ElementsAre(2, 3, 4, 5));
  EXPECT_THAT(NiceTicks(0, 0.3, 4), ElementsAre(0, 0.1, 0.2, 0.30000000000000004));
  EXPECT_THAT(NiceTicks(3, 3, 5), ElementsAre(3));
  for (double hi : {7.0, 13.0, 99.0, 1234.0, 25000.0}) {
    const std::vector<double> ticks = NiceTicks(0, hi, 6);
    EXPECT_LE(ticks.size(), 6u) << hi;
    EXPECT_GE(ticks.size(), 2u) << hi;
  }
}

TEST(SvgChartTest, TickLabels) {
  EXPECT_EQ(TickLabel(0), "0");
  EXPECT_EQ(TickLabel(2.5), "2.5");
  EXPECT_EQ(TickLabel(1500), "1500");
  EXPECT_EQ(TickLabel(12000), "12k");
  EXPECT_EQ(TickLabel(1500000), "1.5M");
  EXPECT_EQ(TickLabel(0.001), "0.001");
  EXPECT_EQ(TickLabel(0.30000000000000004), "0.3");
  // Neighbouring ticks keep distinct labels.
  EXPECT_EQ(TickLabel(40050, 50), "40.05k");
  EXPECT_EQ(TickLabel(40100, 50), "40.1k");
  EXPECT_EQ(TickLabel(2.5, 0.5), "2.5");
  EXPECT_EQ(TickLabel(0.15, 0.05), "0.15");
  EXPECT_EQ(TickLabel(1000, 200), "1000");
  EXPECT_EQ(TickLabel(5e-17, 0.1), "0");
}

TEST(SvgChartTest, DrawsEverySeriesInsideThePlot) {
  ChartSeries train{"train", "#1f77b4", {{10, 5.5}, {20, 4.0}, {30, 3.1}, {40, NAN}}, false};
  ChartSeries val{"val <x>", "#d62728", {{20, 4.2}, {40, 3.0}}, true};
  ChartOptions options;
  options.title = "loss & co";
  options.x_label = "step";
  options.y_label = "nats";
  const std::string svg = SvgLineChart({train, val}, options);
  EXPECT_EQ(svg.rfind("<svg xmlns=\"http://www.w3.org/2000/svg\"", 0), 0u);
  EXPECT_THAT(svg, HasSubstr("<title>loss &amp; co</title>"));
  EXPECT_THAT(svg, HasSubstr("data-label=\"train\""));
  EXPECT_THAT(svg, HasSubstr("val &lt;x&gt;"));
  EXPECT_THAT(svg, HasSubstr("<circle"));
  EXPECT_THAT(svg, Not(HasSubstr("nan")));
  EXPECT_EQ(svg.substr(svg.size() - 6), "</svg>");
  // The train polyline has 3 points (the NaN is skipped), all inside the 520x240 frame.
  const size_t at = svg.find("points=\"", svg.find("data-label=\"train\"")) + 8;
  const std::string points = svg.substr(at, svg.find('"', at) - at);
  int count = 0;
  for (size_t p = 0; p != std::string::npos; p = points.find(' ', p + 1)) {
    const size_t start = p == 0 ? 0 : p + 1;
    const double x = std::stod(points.substr(start));
    const double y = std::stod(points.substr(points.find(',', start) + 1));
    EXPECT_GE(x, 58);
    EXPECT_LE(x, 520 - 14);
    EXPECT_GE(y, 30);
    EXPECT_LE(y, 240 - 38);
    ++count;
  }
  EXPECT_EQ(count, 3);
}

TEST(SvgChartTest, EmptyChartSaysSo) {
  const std::string svg = SvgLineChart({{"train", "#000", {}, false}}, ChartOptions());
  EXPECT_THAT(svg, HasSubstr("no data yet"));
  EXPECT_THAT(svg, Not(HasSubstr("<polyline")));
  // One point: a flat, visible line.
  const std::string one = SvgLineChart({{"t", "#000", {{5, 2.0}}, false}}, ChartOptions());
  EXPECT_THAT(one, HasSubstr("<polyline"));
}

TEST(SvgChartTest, HtmlEscape) {
  EXPECT_EQ(HtmlEscape("<a href=\"x\">Tom & 'Jerry'</a>"),
            "&lt;a href=&quot;x&quot;&gt;Tom &amp; &#39;Jerry&#39;&lt;/a&gt;");
}

}  // namespace
}  // namespace psrv
