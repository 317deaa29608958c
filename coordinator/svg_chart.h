// Line charts as inline SVG, drawn on the server for the status page (no JavaScript, works
// offline): axes with round-numbered ticks, a light grid, one polyline per series, a legend.
#ifndef PSRV_COORDINATOR_SVG_CHART_H_
#define PSRV_COORDINATOR_SVG_CHART_H_

#include <string>
#include <utility>
#include <vector>

namespace psrv {

struct ChartSeries {
  std::string label;
  std::string color;                               // CSS color, e.g. "#1f77b4".
  std::vector<std::pair<double, double>> points;   // (x, y), in x order.
  bool markers = false;                            // Dots at the points (sparse series).
};

struct ChartOptions {
  std::string title;
  std::string x_label;
  std::string y_label;
  int width = 520;
  int height = 240;
  bool y_from_zero = false;  // The y axis starts at 0 (throughputs, counts).
};

// An <svg> element (with role="img" and a <title>). Non-finite points are skipped; with no points
// at all the chart says "no data yet".
std::string SvgLineChart(const std::vector<ChartSeries>& series, const ChartOptions& options);

// Round tick values covering [lo, hi]: steps of 1, 2 or 5 times a power of ten, at most
// `max_ticks` of them (at least 2 when lo < hi).
std::vector<double> NiceTicks(double lo, double hi, int max_ticks);

// Labels for ticks `step` apart, with as many decimals as the step needs (so neighbours differ)
// and k/M suffixes from 10 000 on: "0", "2.5", "1500", "12k", "40.05k", "1.5M", "0.001".
std::string TickLabel(double value, double step = 0);

// Escapes &, <, >, " and ' for HTML and SVG text and attributes.
std::string HtmlEscape(const std::string& text);

}  // namespace psrv

#endif  // PSRV_COORDINATOR_SVG_CHART_H_
