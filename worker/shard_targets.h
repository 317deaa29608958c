// The RPCs of one pull or push of a worker's whole parameter buffer: one per shard of the job's
// shard map, big shards cut into chunks spread over a few connections per server (one connection
// is latency-bound: bench/README.md). Shared by ParameterClient and ResilientClient.
#ifndef PSRV_WORKER_SHARD_TARGETS_H_
#define PSRV_WORKER_SHARD_TARGETS_H_

#include <cstddef>
#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "proto/types.pb.h"

namespace psrv {

struct TargetOptions {
  // A pipeline stage's part of the model (worker/pipeline/); empty: every key of every table.
  // Per table, the one range of keys the stage holds (tables not listed are not its): the flat
  // buffer then holds those ranges only, table by table in shard-map order, and no shard may
  // straddle a range's ends (pipeline jobs shard stacked tables per layer).
  std::map<std::string, KeyRange> part;
  // Tables pulled but not pushed (the last stage's copy of the tied token embedding, whose
  // gradient the first stage pushes).
  std::set<std::string> pull_only;
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
  bool pull_only = false;  // TargetOptions::pull_only.
  // > 0: the range is whole rows of a sparse table (TableSpec.sparse_row_width) of this many keys:
  // its pushes may be row-sparse (PushRequest.rows).
  uint32_t row_width = 0;

  uint64_t count() const { return range.end() - range.begin(); }
};

struct TargetPlan {
  size_t num_parameters = 0;  // Keys of every table (of the part), in shard-map order.
  // Table -> the offset of its key 0 in the flat buffer (without a part; with one, where its
  // part's first key is).
  std::map<std::string, uint64_t> table_offsets;
  std::vector<ShardTarget> targets;               // Ascending flat offsets, covering the buffer.
};

// INVALID_ARGUMENT unless every table of `map` (every range of options.part) is covered exactly by
// its shards.
absl::StatusOr<TargetPlan> PlanTargets(const ShardMap& map, const TargetOptions& options);

}  // namespace psrv

#endif  // PSRV_WORKER_SHARD_TARGETS_H_
