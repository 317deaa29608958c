// ShardStore's resource limits and input validation: names, sizes, memory, checkpoint paths.
#include <cstdint>
#include <string>

#include "gtest/gtest.h"
#include "server/shard_store.h"

namespace psrv {
namespace {

// One SGD shard holding all of table `table` (shape `rows` x `cols`) for job `job_id`.
CreateShardsRequest OneShard(const std::string& job_id, const std::string& table, uint64_t rows,
                             uint64_t cols, uint32_t num_workers = 1) {
  CreateShardsRequest request;
  request.set_job_id(job_id);
  request.set_consistency(SYNC);
  request.set_num_workers(num_workers);
  request.mutable_optimizer()->set_kind(SGD);
  request.mutable_optimizer()->set_learning_rate(0.1f);
  ShardSpec* shard = request.add_shards();
  shard->mutable_table()->set_name(table);
  shard->mutable_table()->add_shape(rows);
  shard->mutable_table()->add_shape(cols);
  shard->mutable_range()->set_end(rows * cols);
  return request;
}

void ExpectInvalid(const absl::Status& status, const std::string& substring) {
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_NE(status.message().find(substring), std::string::npos) << status;
}

// Before: 4e9 workers reached the aggregator's per-worker vectors (std::length_error, which
// escaped the gRPC handler as UNIMPLEMENTED with no message).
TEST(ShardStoreLimitsTest, NumWorkersIsBounded) {
  ShardStore store;
  ExpectInvalid(store.CreateShards(OneShard("job", "w", 2, 2, 4000000000u)),
                "num_workers must be 1..65536");
  ExpectInvalid(store.CreateShards(OneShard("job", "w", 2, 2, 65537)), "num_workers");
  EXPECT_TRUE(store.CreateShards(OneShard("job", "w", 2, 2, 65536)).ok());
}

// Before: a 2^40-element table was allocated (std::bad_alloc), and a shape whose product
// overflows 64 bits passed as a small table.
TEST(ShardStoreLimitsTest, TableSizeIsOverflowCheckedAndBounded) {
  ShardStore store;
  ExpectInvalid(store.CreateShards(OneShard("job", "w", uint64_t{1} << 20, uint64_t{1} << 20)),
                "more than 68719476736 elements");
  CreateShardsRequest overflow = OneShard("job", "w", 2, 2);
  overflow.mutable_shards(0)->mutable_table()->set_shape(0, uint64_t{1} << 63);
  overflow.mutable_shards(0)->mutable_table()->set_shape(1, 2);  // 2^64: 0 if unchecked.
  ExpectInvalid(store.CreateShards(overflow), "more than");
  EXPECT_TRUE(store.Status("").shards().empty());
}

// Job ids and table names name checkpoint files: only [A-Za-z0-9._-], 1..128 characters.
TEST(ShardStoreLimitsTest, JobIdsAndTableNamesFollowTheNameRule) {
  ShardStore store;
  ExpectInvalid(store.CreateShards(OneShard("../../etc", "w", 2, 2)), "job_id");
  ExpectInvalid(store.CreateShards(OneShard("job", "a/b", 2, 2)), "table name");
  ExpectInvalid(store.CreateShards(OneShard(std::string(129, 'j'), "w", 2, 2)), "job_id");
  ExpectInvalid(store.DropJob("job/.."), "job_id");
  SaveCheckpointRequest save;
  save.set_job_id("..");
  save.set_directory("/tmp");
  absl::Status saved;
  store.SaveCheckpoint(save, [&](absl::StatusOr<SaveCheckpointResponse> r) { saved = r.status(); });
  ExpectInvalid(saved, "job_id");
  InstallShardRequest install;
  install.set_job_id("job id");
  install.set_consistency(SYNC);
  install.set_num_workers(1);
  *install.mutable_optimizer() = OneShard("job", "w", 2, 2).optimizer();
  ExpectInvalid(store.InstallShard(install, nullptr, 0).status(), "job_id");
}

}  // namespace
}  // namespace psrv
