// Events (or amounts, e.g. bytes) per second over a sliding window of the last few seconds, for
// the rates the admin API reports.
#ifndef PSRV_COMMON_EVENT_RATE_H_
#define PSRV_COMMON_EVENT_RATE_H_

#include <cstdint>
#include <vector>

#include "absl/time/time.h"

namespace psrv {

// Amounts counted in one-second buckets. Not thread-safe: the owner serialises calls. Time is
// passed in, so tests choose it.
class EventRate {
 public:
  // Counting starts at `start`; the rate covers the last `window_seconds` seconds (at least 1).
  explicit EventRate(absl::Time start, int window_seconds = 10);

  void Add(absl::Time now, double amount = 1);

  // The amounts added in the window ending at `now`, per second of the window (or of the time since
  // `start`, if shorter, and at least one second).
  double PerSecond(absl::Time now) const;

 private:
  struct Bucket {
    int64_t second = INT64_MIN;  // Unix second the amount belongs to.
    double amount = 0;
  };
  const absl::Time start_;
  const int window_;
  std::vector<Bucket> buckets_;  // (window_) by second modulo window_.
};

}  // namespace psrv

#endif  // PSRV_COMMON_EVENT_RATE_H_
