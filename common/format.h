// Text formatting shared by psctl and the coordinator's status page: human-readable sizes, counts
// and durations, the training progress bar, and aligned tables. Pure functions of their inputs (no
// clock, no terminal), so they are unit-tested.
#ifndef PSRV_COMMON_FORMAT_H_
#define PSRV_COMMON_FORMAT_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace psrv {

// 1536 -> "1.5 KiB"; below 1 KiB exact bytes ("512 B"); binary units up to TiB.
std::string HumanBytes(uint64_t bytes);

// 45123.4 -> "45.1k", 1.2e6 -> "1.2M", 812 -> "812", 3.14 -> "3.1".
std::string HumanCount(double n);

// Clock-style: 32s -> "0:32", 754s -> "12:34", 3723s -> "1:02:03". Negative counts as zero.
std::string FormatClock(absl::Duration d);

// Compact age: "0s", "45s", "2m05s", "3h07m", "2d04h". Negative counts as zero.
std::string FormatAge(absl::Duration d);

// Age of a Unix-milliseconds timestamp at `now`; "-" if the timestamp is 0 (never).
std::string FormatAgeSince(int64_t unix_ms, absl::Time now);

// A loss to three decimals; "-" when there is none yet (NaN, or `have_loss` false).
std::string FormatLoss(float loss, bool have_loss = true);

// SSP and ASYNC shards, for operators (psctl shards, the status page): each rank's clock (the
// last step it pushed) with the bound and the pulls it holds back, and how stale pushes were, e.g.
// "clocks 12,10,11,12 (bound 2, 1 pull blocked); push staleness 5.2 (max 14)". Clocks are SSP's
// only (empty: left out); "" when there is nothing to say.
struct StalenessInfo {
  std::vector<uint64_t> clocks;
  uint32_t bound = 0;
  uint32_t blocked_pulls = 0;
  double mean_push_staleness = 0;
  uint64_t max_push_staleness = 0;
};
std::string StalenessText(const StalenessInfo& info);

// What the progress bar shows.
struct ProgressInfo {
  uint64_t step = 0;
  uint64_t steps = 0;  // Total; 0 if unknown.
  std::optional<float> loss;
  std::optional<float> val_loss;  // Latest validation loss; not shown when unset.
  double tokens_per_sec = 0;
  std::optional<absl::Duration> eta;
};

// "[#######.....] 120/500 24% loss 2.314 val 2.401 tok/s 45.1k eta 0:32", with `bar_width` cells
// between the brackets. Unknown values print as "-"; "val" only appears once there is one.
std::string ProgressLine(const ProgressInfo& info, int bar_width = 30);

// Replaces bytes that would upset a terminal (control characters other than newline and tab,
// invalid UTF-8) with '?'. Generated text comes from a byte-level model and can hold anything.
std::string PrintableText(absl::string_view text);

// `s` as a JSON string literal, quotes included.
std::string JsonQuote(absl::string_view s);

// A text table: a header row and rows, columns padded to their widest cell and separated by two
// spaces, with no trailing blanks. Columns marked right-aligned (numbers) pad on the left.
class Table {
 public:
  explicit Table(std::vector<std::string> headers);

  void SetRightAligned(int column);
  // Missing cells print empty; extra cells are an error of the caller and are dropped.
  void AddRow(std::vector<std::string> cells);
  // A row whose first cell is aligned like the others and whose `text` runs across all the other
  // columns without widening them (e.g. an error for one server).
  void AddSpanningRow(std::string first, std::string text);
  bool empty() const { return rows_.empty(); }

  // Every row ends with '\n'.
  std::string Render() const;

 private:
  struct Row {
    std::vector<std::string> cells;
    bool spanning = false;
  };
  std::vector<std::string> headers_;
  std::vector<bool> right_aligned_;
  std::vector<Row> rows_;
};

}  // namespace psrv

#endif  // PSRV_COMMON_FORMAT_H_
