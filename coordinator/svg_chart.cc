#include "coordinator/svg_chart.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace psrv {
namespace {

// Plot area margins, in pixels.
constexpr int kLeft = 58;
constexpr int kRight = 14;
constexpr int kTop = 30;
constexpr int kBottom = 38;

std::string Num(double v) { return absl::StrFormat("%.1f", v); }

}  // namespace

std::string HtmlEscape(const std::string& text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      case '\'':
        out += "&#39;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

std::vector<double> NiceTicks(double lo, double hi, int max_ticks) {
  if (!(hi > lo) || max_ticks < 2) return {lo};
  const double raw = (hi - lo) / (max_ticks - 1);
  const double magnitude = std::pow(10.0, std::floor(std::log10(raw)));
  double step = magnitude;
  for (double factor : {1.0, 2.0, 5.0, 10.0}) {
    step = factor * magnitude;
    if (std::floor(hi / step) - std::ceil(lo / step) + 1 <= max_ticks) break;
  }
  std::vector<double> ticks;
  for (double t = std::ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) {
    ticks.push_back(std::abs(t) < step * 1e-9 ? 0.0 : t);
  }
  if (ticks.size() < 2) ticks = {lo, hi};
  return ticks;
}

std::string TickLabel(double value, double step) {
  const double a = std::fabs(value);
  double scale = 1;
  const char* suffix = "";
  if (a >= 1e6) {
    scale = 1e6;
    suffix = "M";
  } else if (a >= 1e4) {
    scale = 1e3;
    suffix = "k";
  }
  // Decimals: enough for the step (in the label's unit), else for the value itself.
  const double unit_step = step > 0 ? step / scale : 0;
  int decimals;
  if (unit_step > 0) {
    decimals = std::max(0, static_cast<int>(std::ceil(-std::log10(unit_step) - 1e-9)));
  } else {
    decimals = a / scale >= 100 || a == 0 ? 0 : 3;
  }
  std::string s = absl::StrFormat("%.*f", std::min(decimals, 6), value / scale);
  if (s.find('.') != std::string::npos) {
    while (s.back() == '0') s.pop_back();
    if (s.back() == '.') s.pop_back();
  }
  if (s == "-0") s = "0";
  return s + suffix;
}

std::string SvgLineChart(const std::vector<ChartSeries>& series, const ChartOptions& options) {
  const int w = options.width, h = options.height;
  const double plot_w = w - kLeft - kRight, plot_h = h - kTop - kBottom;
  double x_lo = std::numeric_limits<double>::infinity(), x_hi = -x_lo;
  double y_lo = x_lo, y_hi = -x_lo;
  for (const ChartSeries& s : series) {
    for (const auto& [x, y] : s.points) {
      if (!std::isfinite(x) || !std::isfinite(y)) continue;
      x_lo = std::min(x_lo, x);
      x_hi = std::max(x_hi, x);
      y_lo = std::min(y_lo, y);
      y_hi = std::max(y_hi, y);
    }
  }
  std::string svg = absl::StrCat(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"chart\" role=\"img\" width=\"", w,
      "\" height=\"", h, "\" viewBox=\"0 0 ", w, " ", h, "\"><title>", HtmlEscape(options.title),
      "</title>", "<rect x=\"0\" y=\"0\" width=\"", w, "\" height=\"", h,
      "\" fill=\"#ffffff\"/>", "<text x=\"", kLeft, "\" y=\"18\" font-size=\"13\" "
      "font-weight=\"600\" fill=\"#222\">", HtmlEscape(options.title), "</text>");
  if (!std::isfinite(x_lo)) {
    absl::StrAppend(&svg, "<text x=\"", w / 2, "\" y=\"", h / 2,
                    "\" text-anchor=\"middle\" font-size=\"12\" fill=\"#888\">no data yet</text>"
                    "</svg>");
    return svg;
  }
  if (x_hi == x_lo) x_hi = x_lo + 1;
  if (y_hi == y_lo) {
    const double pad = y_lo == 0 ? 1 : std::fabs(y_lo) * 0.1;
    y_lo -= pad;
    y_hi += pad;
  } else {
    const double pad = (y_hi - y_lo) * 0.05;
    y_lo = (y_lo >= 0 && y_lo - pad < 0) ? 0 : y_lo - pad;
    y_hi += pad;
  }
  if (options.y_from_zero && y_lo > 0) y_lo = 0;
  const std::vector<double> x_ticks = NiceTicks(x_lo, x_hi, 6);
  const std::vector<double> y_ticks = NiceTicks(y_lo, y_hi, 5);
  const double x_step = x_ticks.size() > 1 ? x_ticks[1] - x_ticks[0] : 0;
  const double y_step = y_ticks.size() > 1 ? y_ticks[1] - y_ticks[0] : 0;
  // The axes span the ticks too, so that the outermost labels sit on the frame.
  x_lo = std::min(x_lo, x_ticks.front());
  x_hi = std::max(x_hi, x_ticks.back());
  y_lo = std::min(y_lo, y_ticks.front());
  y_hi = std::max(y_hi, y_ticks.back());
  auto px = [&](double x) { return kLeft + (x - x_lo) / (x_hi - x_lo) * plot_w; };
  auto py = [&](double y) { return kTop + (1 - (y - y_lo) / (y_hi - y_lo)) * plot_h; };

  absl::StrAppend(&svg, "<g font-size=\"11\" fill=\"#555\">");
  for (double t : y_ticks) {
    absl::StrAppend(&svg, "<line x1=\"", kLeft, "\" x2=\"", w - kRight, "\" y1=\"", Num(py(t)),
                    "\" y2=\"", Num(py(t)), "\" stroke=\"#e6e6e6\"/>", "<text x=\"", kLeft - 6,
                    "\" y=\"", Num(py(t) + 4), "\" text-anchor=\"end\">",
                    TickLabel(t, y_step), "</text>");
  }
  for (double t : x_ticks) {
    absl::StrAppend(&svg, "<line x1=\"", Num(px(t)), "\" x2=\"", Num(px(t)), "\" y1=\"", kTop,
                    "\" y2=\"", h - kBottom, "\" stroke=\"#f0f0f0\"/>", "<text x=\"",
                    Num(px(t)), "\" y=\"", h - kBottom + 15, "\" text-anchor=\"middle\">",
                    TickLabel(t, x_step), "</text>");
  }
  absl::StrAppend(&svg, "</g><rect x=\"", kLeft, "\" y=\"", kTop, "\" width=\"", Num(plot_w),
                  "\" height=\"", Num(plot_h), "\" fill=\"none\" stroke=\"#999\"/>");
  absl::StrAppend(&svg, "<text x=\"", Num(kLeft + plot_w / 2), "\" y=\"", h - 6,
                  "\" text-anchor=\"middle\" font-size=\"11\" fill=\"#555\">",
                  HtmlEscape(options.x_label), "</text>");
  absl::StrAppend(&svg, "<text transform=\"translate(13,", Num(kTop + plot_h / 2),
                  ") rotate(-90)\" text-anchor=\"middle\" font-size=\"11\" fill=\"#555\">",
                  HtmlEscape(options.y_label), "</text>");

  // The legend sits in the top margin, right-aligned, one entry after another.
  std::string legend;
  double legend_x = w - kRight;
  for (auto it = series.rbegin(); it != series.rend(); ++it) {
    if (it->points.empty()) continue;
    const double text_width = 6.5 * it->label.size();
    legend_x -= text_width;
    absl::StrAppend(&legend, "<text x=\"", Num(legend_x), "\" y=\"18\" font-size=\"11\" "
                    "fill=\"#333\">", HtmlEscape(it->label), "</text><line x1=\"",
                    Num(legend_x - 22), "\" x2=\"", Num(legend_x - 4), "\" y1=\"14\" y2=\"14\" "
                    "stroke=\"", HtmlEscape(it->color), "\" stroke-width=\"2\"/>");
    legend_x -= 34;
  }
  for (const ChartSeries& s : series) {
    std::string points;
    std::string dots;
    int n = 0;
    for (const auto& [x, y] : s.points) {
      if (!std::isfinite(x) || !std::isfinite(y)) continue;
      absl::StrAppend(&points, n++ > 0 ? " " : "", Num(px(x)), ",", Num(py(y)));
      if (s.markers) {
        absl::StrAppend(&dots, "<circle cx=\"", Num(px(x)), "\" cy=\"", Num(py(y)),
                        "\" r=\"2.5\" fill=\"", HtmlEscape(s.color), "\"/>");
      }
    }
    if (n == 0) continue;
    absl::StrAppend(&svg, "<polyline class=\"series\" data-label=\"", HtmlEscape(s.label),
                    "\" fill=\"none\" stroke=\"", HtmlEscape(s.color),
                    "\" stroke-width=\"1.6\" stroke-linejoin=\"round\" points=\"", points, "\"/>",
                    dots);
  }
  absl::StrAppend(&svg, legend, "</svg>");
  return svg;
}

}  // namespace psrv
