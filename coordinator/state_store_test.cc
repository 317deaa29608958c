#include "coordinator/state_store.h"

#include <sqlite3.h>

#include <cstdlib>
#include <fstream>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace psrv {
namespace {

using ::testing::HasSubstr;

class StateStoreTest : public ::testing::Test {
 protected:
  StateStoreTest() {
    const char* tmp = std::getenv("TEST_TMPDIR");
    std::string templ = std::string(tmp != nullptr ? tmp : "/tmp") + "/state_store_XXXXXX";
    dir_ = mkdtemp(templ.data());
    path_ = dir_ + "/coordinator.db";
  }

  std::unique_ptr<StateStore> Open() {
    absl::StatusOr<std::unique_ptr<StateStore>> store = StateStore::Open(path_);
    EXPECT_TRUE(store.ok()) << store.status();
    return store.ok() ? std::move(*store) : nullptr;
  }

  static JobRecord Job(const std::string& id, JobState state) {
    JobRecord job;
    job.mutable_status()->set_job_id(id);
    job.mutable_status()->set_state(state);
    job.mutable_status()->mutable_spec()->set_num_workers(2);
    job.add_workers("worker-3");
    job.add_workers("worker-4");
    job.add_done(true);
    job.add_done(false);
    job.set_last_checkpoint_step(60);
    return job;
  }

  static NodeRecord Node(const std::string& id, NodeRole role) {
    NodeRecord node;
    node.mutable_info()->set_node_id(id);
    node.mutable_info()->set_role(role);
    node.mutable_info()->set_address("h:1");
    return node;
  }

  std::string dir_, path_;
};

TEST_F(StateStoreTest, RoundTripAndReopen) {
  {
    std::unique_ptr<StateStore> store = Open();
    ASSERT_NE(store, nullptr);
    absl::StatusOr<StateStore::Contents> empty = store->Load();
    ASSERT_TRUE(empty.ok()) << empty.status();
    EXPECT_TRUE(empty->jobs.empty());
    EXPECT_TRUE(empty->nodes.empty());
    EXPECT_TRUE(empty->counters.empty());

    StateStore::Batch batch;
    batch.PutJob("job-2", 2, Job("job-2", PENDING));
    batch.PutJob("job-1", 1, Job("job-1", RUNNING));
    batch.PutNode(Node("server-1", SERVER));
    batch.PutNode(Node("worker-2", WORKER));
    batch.PutNode(Node("worker-3", WORKER));
    batch.DeleteNode("worker-3");
    batch.PutCounter("next_job", 3);
    batch.PutCounter("next_node", 4);
    ASSERT_TRUE(store->Write(batch).ok());
    StateStore::Batch update;  // Replaces what is there.
    update.PutJob("job-1", 1, Job("job-1", SUCCEEDED));
    update.PutCounter("next_job", 5);
    ASSERT_TRUE(store->Write(update).ok());
    EXPECT_TRUE(store->Write(StateStore::Batch()).ok());
    EXPECT_EQ(store->failed_writes(), 0u);
  }
  std::unique_ptr<StateStore> store = Open();
  ASSERT_NE(store, nullptr);
  absl::StatusOr<StateStore::Contents> contents = store->Load();
  ASSERT_TRUE(contents.ok()) << contents.status();
  ASSERT_EQ(contents->jobs.size(), 2u);
  EXPECT_EQ(contents->jobs[0].id, "job-1");  // In submission order.
  EXPECT_EQ(contents->jobs[0].sequence, 1u);
  EXPECT_EQ(contents->jobs[0].record.status().state(), SUCCEEDED);
  EXPECT_EQ(contents->jobs[1].id, "job-2");
  const JobRecord& job = contents->jobs[1].record;
  EXPECT_EQ(job.status().state(), PENDING);
  EXPECT_EQ(job.status().spec().num_workers(), 2u);
  ASSERT_EQ(job.workers_size(), 2);
  EXPECT_EQ(job.workers(1), "worker-4");
  ASSERT_EQ(job.done_size(), 2);
  EXPECT_TRUE(job.done(0));
  EXPECT_FALSE(job.done(1));
  EXPECT_EQ(job.last_checkpoint_step(), 60u);
  ASSERT_EQ(contents->nodes.size(), 2u);
  EXPECT_EQ(contents->nodes[0].info().node_id(), "server-1");
  EXPECT_EQ(contents->nodes[0].info().role(), SERVER);
  EXPECT_EQ(contents->nodes[0].info().address(), "h:1");
  EXPECT_EQ(contents->nodes[1].info().node_id(), "worker-2");
  EXPECT_EQ(contents->counters.at("next_job"), 5u);
  EXPECT_EQ(contents->counters.at("next_node"), 4u);
}

TEST_F(StateStoreTest, OneStoreAtATimePerFile) {
  std::unique_ptr<StateStore> store = Open();
  ASSERT_NE(store, nullptr);
  absl::StatusOr<std::unique_ptr<StateStore>> second = StateStore::Open(path_);
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(second.status().message()), HasSubstr(path_));
  store.reset();
  EXPECT_TRUE(StateStore::Open(path_).ok());
}

TEST_F(StateStoreTest, GarbageFileIsAnErrorNamingIt) {
  std::ofstream(path_) << std::string(8192, 'x') << "not a database\n";
  absl::StatusOr<std::unique_ptr<StateStore>> store = StateStore::Open(path_);
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(store.status().message()), HasSubstr(path_));
}

TEST_F(StateStoreTest, MissingFolderIsAnErrorNamingThePath) {
  const std::string path = dir_ + "/no/such/folder/coordinator.db";
  absl::StatusOr<std::unique_ptr<StateStore>> store = StateStore::Open(path);
  ASSERT_FALSE(store.ok());
  EXPECT_THAT(std::string(store.status().message()), HasSubstr(path));
}

TEST_F(StateStoreTest, RecordThatDoesNotParseIsDataLoss) {
  Open().reset();  // Creates the tables.
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path_.c_str(), &db), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(db, "INSERT INTO jobs VALUES ('job-1', 1, x'ffffffff')", nullptr,
                         nullptr, nullptr),
            SQLITE_OK);
  sqlite3_close(db);
  std::unique_ptr<StateStore> store = Open();
  ASSERT_NE(store, nullptr);
  absl::StatusOr<StateStore::Contents> contents = store->Load();
  ASSERT_FALSE(contents.ok());
  EXPECT_EQ(contents.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(contents.status().message()), HasSubstr("job-1"));
}

TEST_F(StateStoreTest, FailedWriteChangesNothingAndIsCounted) {
  std::unique_ptr<StateStore> store = Open();
  ASSERT_NE(store, nullptr);
  store->TEST_FailWrites(absl::UnavailableError("disk gone"));
  StateStore::Batch batch;
  batch.PutCounter("next_job", 7);
  EXPECT_EQ(store->Write(batch).code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(store->failed_writes(), 1u);
  store->TEST_FailWrites(absl::OkStatus());
  EXPECT_TRUE(store->Load()->counters.empty());
  EXPECT_TRUE(store->Write(batch).ok());
  EXPECT_EQ(store->Load()->counters.at("next_job"), 7u);
}

}  // namespace
}  // namespace psrv
