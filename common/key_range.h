// Key ranges and shard planning: each table's keys (element indices) are cut into contiguous
// ranges and spread over the servers so that every server holds about the same number of elements.
#ifndef PSRV_COMMON_KEY_RANGE_H_
#define PSRV_COMMON_KEY_RANGE_H_

#include <cstdint>
#include <string>
#include <vector>

#include "proto/types.pb.h"

namespace psrv {

inline uint64_t RangeSize(const KeyRange& r) { return r.end() > r.begin() ? r.end() - r.begin() : 0; }

// True if `inner` lies inside `outer`.
inline bool RangeContains(const KeyRange& outer, const KeyRange& inner) {
  return outer.begin() <= inner.begin() && inner.end() <= outer.end() && inner.begin() < inner.end();
}

inline KeyRange MakeRange(uint64_t begin, uint64_t end) {
  KeyRange r;
  r.set_begin(begin);
  r.set_end(end);
  return r;
}

struct ServerSlot {
  std::string id;
  std::string address;
};

// Assigns every key of every table to exactly one server. A table stacking one slice per layer
// (TableSpec.layers > 1) whose slices have at least `min_layer_elements` keys is cut into one
// shard per layer, each on the server holding the fewest elements so far: a layer's update is
// then applied as soon as its gradients are in. Another table with at least `min_shard_elements`
// keys per server is cut into one contiguous range per server (sizes differ by at most one, or
// by one row for a sparse table, TableSpec.sparse_row_width, which is cut at row boundaries); a
// smaller one goes whole to the server holding the fewest elements so far. The result lists
// shards table by table, ranges in ascending order. `servers` must not be empty.
std::vector<ShardAssignment> PlanShards(const std::vector<TableSpec>& tables,
                                        const std::vector<ServerSlot>& servers,
                                        uint64_t min_shard_elements = 4096,
                                        uint64_t min_layer_elements = 16384);

}  // namespace psrv

#endif  // PSRV_COMMON_KEY_RANGE_H_
