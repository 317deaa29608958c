// Checking the shards a CreateShards or InstallShard request describes, and the ShardConfig each
// becomes (server/shard_store.cc, server/shard_store_replication.cc).
#ifndef PSRV_SERVER_SHARD_SPEC_H_
#define PSRV_SERVER_SHARD_SPEC_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
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

// The most workers a job's shards take (one aggregation slot each).
inline constexpr uint32_t kMaxShardWorkers = 65536;
inline constexpr uint32_t kMaxStaleness = 1000000;  // SSP's bound, in steps.
// The most elements of one table (2^36: 256 GiB of FP32 parameters).
inline constexpr uint64_t kMaxTableElements = uint64_t{1} << 36;

// The elements of `table` (the product of its shape), or INVALID_ARGUMENT if more than
// kMaxTableElements (the product is checked for overflow).
absl::StatusOr<uint64_t> CheckTableSize(const TableSpec& table);

// The checks CreateShards and InstallShard share (the request header, then each shard):
// INVALID_ARGUMENT naming what is wrong. The job id and table names follow the name rule
// (common/names.h): they name checkpoint files.
absl::Status CheckShardHeader(const std::string& job_id, ConsistencyMode consistency,
                              uint32_t num_workers, const OptimizerConfig& optimizer,
                              uint32_t staleness, uint32_t aggregate_first = 0);
absl::Status CheckShardSpec(const ShardSpec& spec);

// The most memory a shard of `config` takes, in bytes, as Shard allocates it: parameters (FP32),
// the copy an update makes while a pull reply still holds them, their BF16 copy for BF16 pulls,
// the optimizer's state (MOMENTUM one, ADAMW two FP32 arrays), and SYNC the step's sum plus, with
// more than one worker, each worker's pushes staged for their scale (gradient clipping). The
// request must have passed CheckShardHeader and CheckShardSpec.
uint64_t ShardMemoryBytes(const ShardConfig& config);

ShardConfig MakeConfig(const std::string& job_id, ConsistencyMode consistency,
                       const OptimizerConfig& optimizer, uint32_t num_workers,
                       const ShardSpec& spec, uint32_t staleness,
                       uint32_t aggregate_first = 0);

}  // namespace psrv

#endif  // PSRV_SERVER_SHARD_SPEC_H_
