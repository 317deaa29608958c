#include "common/event_rate.h"

#include <algorithm>
#include <cmath>

namespace psrv {
namespace {

int64_t Second(absl::Time t) { return absl::ToUnixSeconds(t); }

}  // namespace

EventRate::EventRate(absl::Time start, int window_seconds)
    : start_(start), window_(std::max(1, window_seconds)), buckets_(window_) {}

void EventRate::Add(absl::Time now, double amount) {
  const int64_t second = Second(now);
  Bucket& bucket = buckets_[((second % window_) + window_) % window_];
  if (bucket.second != second) {
    bucket.second = second;
    bucket.amount = 0;
  }
  bucket.amount += amount;
}

double EventRate::PerSecond(absl::Time now) const {
  const int64_t second = Second(now);
  double sum = 0;
  for (const Bucket& bucket : buckets_) {
    if (bucket.second <= second && bucket.second > second - window_) sum += bucket.amount;
  }
  // The window: the current (partial) second and the window_ - 1 seconds before it.
  const absl::Time window_start =
      std::max(start_, absl::FromUnixSeconds(second - window_ + 1));
  const double seconds = std::max(1.0, absl::ToDoubleSeconds(now - window_start));
  return sum / seconds;
}

}  // namespace psrv
