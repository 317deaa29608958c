// Job "job" as the worker's tests set it up: tables initialised N(0, 1), a shard map placing their
// key ranges on servers, and the CreateShards request for one server's shards (SYNC, SGD, one
// worker), so that a test can compute the parameters it expects.
#ifndef PSRV_WORKER_TESTING_TEST_JOB_H_
#define PSRV_WORKER_TESTING_TEST_JOB_H_

#include <cstdint>
#include <string>
#include <vector>

#include "common/key_range.h"
#include "proto/parameter_server.pb.h"
#include "proto/types.pb.h"

namespace psrv {

// A table of `shape`, initialised N(0, 1) from `seed`.
inline TableSpec NormalTable(const std::string& name, const std::vector<uint64_t>& shape,
                             uint64_t seed) {
  TableSpec table;
  table.set_name(name);
  for (uint64_t d : shape) table.add_shape(d);
  table.mutable_init()->set_kind(InitSpec::NORMAL);
  table.mutable_init()->set_scale(1.0f);
  table.mutable_init()->set_seed(seed);
  return table;
}

// Keys [begin, end) of `table`, held by the server at `address`.
inline ShardAssignment ShardOn(const std::string& table, uint64_t begin, uint64_t end,
                               const std::string& address) {
  ShardAssignment shard;
  shard.set_table(table);
  *shard.mutable_range() = MakeRange(begin, end);
  shard.set_server_address(address);
  return shard;
}

// The shard map of job "job" (epoch 0): `tables` in this order (the worker's flat buffer's),
// `shards` as given.
inline ShardMap TestShardMap(const std::vector<TableSpec>& tables,
                             const std::vector<ShardAssignment>& shards) {
  ShardMap map;
  map.set_job_id("job");
  for (const TableSpec& table : tables) *map.add_tables() = table;
  for (const ShardAssignment& shard : shards) *map.add_shards() = shard;
  return map;
}

// Creates the shards `map` places at `address`: SYNC, SGD at `learning_rate` (constant), one
// worker.
inline CreateShardsRequest CreateSgdShards(const ShardMap& map, const std::string& address,
                                           float learning_rate) {
  CreateShardsRequest request;
  request.set_job_id(map.job_id());
  request.set_consistency(SYNC);
  request.mutable_optimizer()->set_kind(SGD);
  request.mutable_optimizer()->set_learning_rate(learning_rate);
  request.set_num_workers(1);
  for (const ShardAssignment& shard : map.shards()) {
    if (shard.server_address() != address) continue;
    ShardSpec* spec = request.add_shards();
    for (const TableSpec& table : map.tables()) {
      if (table.name() == shard.table()) *spec->mutable_table() = table;
    }
    *spec->mutable_range() = shard.range();
  }
  return request;
}

}  // namespace psrv

#endif  // PSRV_WORKER_TESTING_TEST_JOB_H_
