// Formatting of sizes, counts, durations, the progress bar and tables (see format.h).
#include "common/format.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/utf8.h"

namespace psrv {
namespace {

// Width on a terminal, counting UTF-8 code points (good enough for the text psctl prints).
std::size_t DisplayWidth(absl::string_view s) {
  std::size_t width = 0;
  for (unsigned char c : s) {
    if ((c & 0xC0) != 0x80) ++width;
  }
  return width;
}

void Pad(std::string* out, std::size_t n) { out->append(n, ' '); }

void RStripBlanks(std::string* line) {
  while (!line->empty() && line->back() == ' ') line->pop_back();
}

}  // namespace

std::string HumanBytes(uint64_t bytes) {
  if (bytes < 1024) return absl::StrCat(bytes, " B");
  static const char* const kUnits[] = {"KiB", "MiB", "GiB", "TiB", "PiB"};
  double value = static_cast<double>(bytes) / 1024.0;
  int unit = 0;
  while (value >= 1024.0 && unit < 4) {
    value /= 1024.0;
    ++unit;
  }
  // 1023.97 KiB would round to "1024.0 KiB"; show it in the next unit instead.
  if (value >= 1023.95 && unit < 4) {
    value /= 1024.0;
    ++unit;
  }
  return absl::StrFormat("%.1f %s", value, kUnits[unit]);
}

std::string HumanCount(double n) {
  if (!std::isfinite(n)) return "-";
  const double a = std::fabs(n);
  if (a < 10) return absl::StrFormat("%.1f", n);
  if (a < 999.5) return absl::StrFormat("%.0f", n);
  if (a < 999.95e3) return absl::StrFormat("%.1fk", n / 1e3);
  if (a < 999.95e6) return absl::StrFormat("%.1fM", n / 1e6);
  return absl::StrFormat("%.1fG", n / 1e9);
}

std::string FormatClock(absl::Duration d) {
  int64_t s = std::max<int64_t>(0, absl::ToInt64Seconds(d));
  const int64_t h = s / 3600;
  const int64_t m = (s / 60) % 60;
  s %= 60;
  if (h > 0) return absl::StrFormat("%d:%02d:%02d", h, m, s);
  return absl::StrFormat("%d:%02d", m, s);
}

std::string FormatAge(absl::Duration d) {
  const int64_t s = std::max<int64_t>(0, absl::ToInt64Seconds(d));
  if (s < 60) return absl::StrCat(s, "s");
  if (s < 3600) return absl::StrFormat("%dm%02ds", s / 60, s % 60);
  if (s < 86400) return absl::StrFormat("%dh%02dm", s / 3600, (s / 60) % 60);
  return absl::StrFormat("%dd%02dh", s / 86400, (s / 3600) % 24);
}

std::string FormatAgeSince(int64_t unix_ms, absl::Time now) {
  if (unix_ms == 0) return "-";
  return FormatAge(now - absl::FromUnixMillis(unix_ms));
}

std::string FormatLoss(float loss, bool have_loss) {
  if (!have_loss || std::isnan(loss)) return "-";
  return absl::StrFormat("%.3f", loss);
}

std::string StalenessText(const StalenessInfo& info) {
  std::string text;
  if (!info.clocks.empty()) {
    absl::StrAppend(&text, "clocks ", absl::StrJoin(info.clocks, ","), " (bound ", info.bound);
    if (info.blocked_pulls > 0) {
      absl::StrAppend(&text, ", ", info.blocked_pulls, info.blocked_pulls == 1 ? " pull" : " pulls",
                      " blocked");
    }
    absl::StrAppend(&text, ")");
  }
  if (info.mean_push_staleness > 0 || info.max_push_staleness > 0) {
    absl::StrAppend(&text, text.empty() ? "" : "; ", "push staleness ",
                    absl::StrFormat("%.1f", info.mean_push_staleness), " (max ",
                    info.max_push_staleness, ")");
  }
  return text;
}

std::string ProgressLine(const ProgressInfo& info, int bar_width) {
  bar_width = std::max(1, bar_width);
  double fraction = 0;
  if (info.steps > 0) {
    fraction = std::min(1.0, static_cast<double>(info.step) / static_cast<double>(info.steps));
  }
  const int filled = static_cast<int>(std::floor(fraction * bar_width));
  std::string line = "[";
  line.append(filled, '#');
  line.append(bar_width - filled, '.');
  line += "] ";
  if (info.steps > 0) {
    absl::StrAppend(&line, info.step, "/", info.steps, " ",
                    static_cast<int>(std::floor(fraction * 100)), "%");
  } else {
    absl::StrAppend(&line, info.step, "/? -%");
  }
  absl::StrAppend(&line, " loss ", info.loss ? FormatLoss(*info.loss) : "-");
  if (info.val_loss) absl::StrAppend(&line, " val ", FormatLoss(*info.val_loss));
  absl::StrAppend(&line, " tok/s ",
                  info.tokens_per_sec > 0 ? HumanCount(info.tokens_per_sec) : "-");
  absl::StrAppend(&line, " eta ", info.eta ? FormatClock(*info.eta) : "-");
  return line;
}

std::string PrintableText(absl::string_view text) {
  // Valid multi-byte UTF-8 sequences hold no byte below 0x80: only ASCII can be a control character.
  std::string out = ToValidUtf8(text);
  for (char& c : out) {
    const unsigned char u = static_cast<unsigned char>(c);
    if ((u < 0x20 && c != '\n' && c != '\t') || u == 0x7f) c = '?';
  }
  return out;
}

std::string JsonQuote(absl::string_view s) {
  return nlohmann::json(std::string(s))
      .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

Table::Table(std::vector<std::string> headers)
    : headers_(std::move(headers)), right_aligned_(headers_.size(), false) {}

void Table::SetRightAligned(int column) {
  if (column >= 0 && column < static_cast<int>(right_aligned_.size())) {
    right_aligned_[column] = true;
  }
}

void Table::AddRow(std::vector<std::string> cells) {
  cells.resize(headers_.size());
  rows_.push_back(Row{std::move(cells), false});
}

void Table::AddSpanningRow(std::string first, std::string text) {
  rows_.push_back(Row{{std::move(first), std::move(text)}, true});
}

std::string Table::Render() const {
  std::vector<std::size_t> widths(headers_.size());
  for (std::size_t c = 0; c < headers_.size(); ++c) widths[c] = DisplayWidth(headers_[c]);
  for (const Row& row : rows_) {
    const std::size_t n = row.spanning ? 1 : row.cells.size();
    for (std::size_t c = 0; c < n && c < widths.size(); ++c) {
      widths[c] = std::max(widths[c], DisplayWidth(row.cells[c]));
    }
  }
  auto render_cells = [&](const std::vector<std::string>& cells, bool spanning) {
    std::string line;
    for (std::size_t c = 0; c < cells.size(); ++c) {
      if (c > 0) line += "  ";
      if (spanning && c == 1) {
        line += cells[c];
        break;
      }
      const std::size_t pad = widths[c] - std::min(widths[c], DisplayWidth(cells[c]));
      if (right_aligned_[c]) Pad(&line, pad);
      line += cells[c];
      if (!right_aligned_[c]) Pad(&line, pad);
    }
    RStripBlanks(&line);
    return line + "\n";
  };
  std::string out = render_cells(headers_, false);
  for (const Row& row : rows_) out += render_cells(row.cells, row.spanning);
  return out;
}

}  // namespace psrv
