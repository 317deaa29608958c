// ASYNC pushes a shard applied lately, by id, so that a resend (after a fail-over, or an answer
// lost on the way) is answered without being applied a second time.
#ifndef PSRV_SERVER_RECENT_PUSHES_H_
#define PSRV_SERVER_RECENT_PUSHES_H_

#include <cstddef>
#include <cstdint>
#include <deque>
#include <vector>

#include "absl/container/flat_hash_set.h"

namespace psrv {

// Thread-compatible. Remembers the last `capacity` keys added (the oldest are forgotten first).
class RecentPushes {
 public:
  // 2^14 pushes: minutes of a job's pushes to one shard, far beyond any resend.
  explicit RecentPushes(size_t capacity = size_t{1} << 14) : capacity_(capacity) {}

  // One key per (PushRequest.push_id, first key of the range): a step's gradient may reach a
  // shard in several pushes, one per range, under one id. 0: a push without an id.
  static uint64_t Key(uint64_t push_id, uint64_t range_begin) {
    if (push_id == 0) return 0;
    const uint64_t key = push_id ^ (range_begin * 0x9e3779b97f4a7c15ULL);
    return key == 0 ? 1 : key;
  }

  bool Contains(uint64_t key) const { return key != 0 && keys_.contains(key); }

  // The keys remembered, oldest first.
  std::vector<uint64_t> keys() const { return std::vector<uint64_t>(order_.begin(), order_.end()); }

  // Adds `key` (0: nothing).
  void Add(uint64_t key) {
    if (key == 0 || !keys_.insert(key).second) return;
    order_.push_back(key);
    if (order_.size() > capacity_) {
      keys_.erase(order_.front());
      order_.pop_front();
    }
  }

 private:
  const size_t capacity_;
  absl::flat_hash_set<uint64_t> keys_;
  std::deque<uint64_t> order_;
};

}  // namespace psrv

#endif  // PSRV_SERVER_RECENT_PUSHES_H_
