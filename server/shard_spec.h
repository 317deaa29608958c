// Checking the shards a CreateShards or InstallShard request describes, and the ShardConfig each
// becomes (server/shard_store.cc, server/shard_store_replication.cc).
#ifndef PSRV_SERVER_SHARD_SPEC_H_
#define PSRV_SERVER_SHARD_SPEC_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "proto/parameter_server.pb.h"
#include "proto/types.pb.h"
#include "server/shard.h"

namespace psrv {

// "[begin, end)".
std::string RangeText(const KeyRange& r);
bool SameRange(const KeyRange& a, const KeyRange& b);
bool Overlap(const KeyRange& a, const KeyRange& b);
// The same range, consistency, workers, table and optimizer.
bool SameShard(const ShardConfig& a, const ShardConfig& b);

// The checks CreateShards and InstallShard share (the request header, then each shard):
// INVALID_ARGUMENT naming what is wrong.
absl::Status CheckShardHeader(const std::string& job_id, ConsistencyMode consistency,
                              uint32_t num_workers, const OptimizerConfig& optimizer);
absl::Status CheckShardSpec(const ShardSpec& spec);

ShardConfig MakeConfig(const std::string& job_id, ConsistencyMode consistency,
                       const OptimizerConfig& optimizer, uint32_t num_workers,
                       const ShardSpec& spec);

}  // namespace psrv

#endif  // PSRV_SERVER_SHARD_SPEC_H_
