// ShardStore's resource limits and input validation: names, sizes, memory, checkpoint paths.
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>

#include "absl/synchronization/notification.h"

#include "gtest/gtest.h"
#include "server/shard_spec.h"
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

// 100 x 100 SGD SYNC, one worker: values, their update copy, BF16 copy and the step's sum.
constexpr uint64_t kSmallShardBytes = 100 * 100 * (4 + 4 + 2 + 4);

TEST(ShardStoreLimitsTest, ShardMemoryCountsWhatAShardAllocates) {
  ShardConfig config;
  config.range.set_end(1000);
  config.consistency = ASYNC;
  config.optimizer.set_kind(SGD);
  EXPECT_EQ(ShardMemoryBytes(config), 1000u * (4 + 4 + 2));
  config.optimizer.set_kind(ADAMW);
  EXPECT_EQ(ShardMemoryBytes(config), 1000u * (4 + 4 + 2 + 8));
  config.consistency = SYNC;
  config.num_workers = 3;  // The sum, and each worker's staged pushes.
  EXPECT_EQ(ShardMemoryBytes(config), 1000u * (4 + 4 + 2 + 8 + 4 + 3 * 4));
}

// Before: no limit; a server took every job it was sent until allocation failed.
TEST(ShardStoreLimitsTest, CreateShardsBeyondTheMemoryLimitIsRefusedAndAllocatesNothing) {
  ShardStore::Options options;
  options.max_memory_bytes = 2 * kSmallShardBytes + 100;
  ShardStore store(options);
  ASSERT_TRUE(store.CreateShards(OneShard("a", "w", 100, 100)).ok());
  ASSERT_TRUE(store.CreateShards(OneShard("a", "w", 100, 100)).ok());  // Held: nothing more.
  ASSERT_TRUE(store.CreateShards(OneShard("b", "w", 100, 100)).ok());
  EXPECT_EQ(store.memory_bytes(), 2 * kSmallShardBytes);
  absl::Status refused = store.CreateShards(OneShard("c", "w", 100, 100));
  EXPECT_EQ(refused.code(), absl::StatusCode::kResourceExhausted) << refused;
  for (const std::string& size : {std::to_string(kSmallShardBytes),
                                  std::to_string(2 * kSmallShardBytes),
                                  std::to_string(options.max_memory_bytes)}) {
    EXPECT_NE(refused.message().find(size), std::string::npos) << refused;
  }
  EXPECT_EQ(store.memory_bytes(), 2 * kSmallShardBytes);
  EXPECT_EQ(store.Status("c").shards_size(), 0);
  // A dropped job's memory is free again.
  ASSERT_TRUE(store.DropJob("a").ok());
  EXPECT_EQ(store.memory_bytes(), kSmallShardBytes);
  EXPECT_TRUE(store.CreateShards(OneShard("c", "w", 100, 100)).ok());
}

// A request refused for another reason after the memory check gives its reservation back.
TEST(ShardStoreLimitsTest, AFailedCreateGivesItsMemoryBack) {
  ShardStore::Options options;
  options.checkpoint_root = "/nonexistent-root";
  ShardStore store(options);
  CreateShardsRequest request = OneShard("a", "w", 100, 100);
  request.set_init_from_safetensors("/etc/model.safetensors");
  EXPECT_EQ(store.CreateShards(request).code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(store.memory_bytes(), 0u);
}

class ShardStoreCheckpointRootTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = ::testing::TempDir() + "/ckpt_root";
    std::filesystem::create_directories(root_);
    std::filesystem::create_directories(::testing::TempDir() + "/elsewhere");
    std::error_code ignored;
    std::filesystem::create_directory_symlink(::testing::TempDir() + "/elsewhere",
                                              root_ + "/link", ignored);
    ShardStore::Options options;
    options.checkpoint_root = root_;
    store_ = std::make_unique<ShardStore>(options);
    ASSERT_TRUE(store_->CreateShards(OneShard("job", "w", 10, 10)).ok());
  }

  absl::StatusOr<SaveCheckpointResponse> Save(const std::string& directory) {
    SaveCheckpointRequest save;
    save.set_job_id("job");
    save.set_directory(directory);
    absl::Notification answered;
    absl::StatusOr<SaveCheckpointResponse> result;
    store_->SaveCheckpoint(save, [&](absl::StatusOr<SaveCheckpointResponse> r) {
      result = std::move(r);
      answered.Notify();
    });
    answered.WaitForNotification();
    return result;
  }

  std::string root_;
  std::unique_ptr<ShardStore> store_;
};

// Before: any directory, relative or anywhere, was written to.
TEST_F(ShardStoreCheckpointRootTest, SaveCheckpointStaysUnderTheRoot) {
  absl::StatusOr<SaveCheckpointResponse> saved = Save(root_ + "/checkpoints");
  ASSERT_TRUE(saved.ok()) << saved.status();
  ASSERT_EQ(saved->files_size(), 1);
  EXPECT_TRUE(std::filesystem::exists(saved->files(0).path()));
  EXPECT_EQ(Save("checkpoints").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Save(root_ + "/../elsewhere").status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(Save(root_ + "/link/x").status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(Save("/tmp").status().code(), absl::StatusCode::kPermissionDenied);

  // Restoring reads only files under the root too.
  ShardStore::Options options;
  options.checkpoint_root = root_ + "/checkpoints/job";
  ShardStore other(options);
  CreateShardsRequest restore = OneShard("job", "w", 10, 10);
  *restore.add_restore_from() = saved->files(0);
  EXPECT_TRUE(other.CreateShards(restore).ok());
  ShardStore::Options narrow;
  narrow.checkpoint_root = root_ + "/other";
  ShardStore refused(narrow);
  EXPECT_EQ(refused.CreateShards(restore).code(), absl::StatusCode::kPermissionDenied);
  restore.mutable_restore_from(0)->set_path("relative/file.ckpt");
  EXPECT_EQ(refused.CreateShards(restore).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(refused.memory_bytes(), 0u);
}

}  // namespace
}  // namespace psrv
