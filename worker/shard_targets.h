// The RPCs of one pull or push of a worker's whole parameter buffer: one per shard of the job's
// shard map, big shards cut into chunks spread over a few connections per server (one connection
// is latency-bound: bench/README.md). Shared by ParameterClient and ResilientClient.
#ifndef PSRV_WORKER_SHARD_TARGETS_H_
#define PSRV_WORKER_SHARD_TARGETS_H_

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "proto/types.pb.h"

namespace psrv {

struct TargetOptions {
  int connections_per_server = 2;
  size_t max_chunk_bytes = 4 << 20;    // Shards larger than this travel in several chunks.
  size_t min_split_bytes = 256 << 10;  // Shards at least twice this use every connection.
};

// One RPC: a chunk of one shard.
struct ShardTarget {
  std::string table;
  KeyRange range;        // Keys of the table.
  uint64_t flat_offset;  // Where range.begin() of the table sits in the flat buffer.
  std::string address;   // The server holding the shard.
  int connection;        // Which of the server's connections carries it.

  uint64_t count() const { return range.end() - range.begin(); }
};

struct TargetPlan {
  size_t num_parameters = 0;                      // Keys of every table, in shard-map order.
  std::map<std::string, uint64_t> table_offsets;  // Table -> its offset in the flat buffer.
  std::vector<ShardTarget> targets;               // Ascending flat offsets, covering the buffer.
};

// INVALID_ARGUMENT unless every table of `map` is covered exactly by its shards.
absl::StatusOr<TargetPlan> PlanTargets(const ShardMap& map, const TargetOptions& options);

}  // namespace psrv

#endif  // PSRV_WORKER_SHARD_TARGETS_H_
