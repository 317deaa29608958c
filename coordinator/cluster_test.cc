#include "coordinator/cluster.h"

#include <cstdlib>
#include <map>
#include <set>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "common/job_spec.h"
#include "common/model_layout.h"
#include "coordinator/state_store.h"
#include "google/protobuf/util/message_differencer.h"
#include "gtest/gtest.h"

namespace psrv {
namespace {

class ClusterTest : public ::testing::Test {
 protected:
  ClusterTest() {
    ClusterCoordinator::Options& options = options_;
    options.heartbeat_interval = absl::Milliseconds(100);
    options.clock = [this] { return now_; };
    // The fakes answer at once: every Tick waits for all its replies (and its effects are seen
    // when it returns). The coordinator calls them from several threads at once: they lock.
    options.reply_wait = absl::InfiniteDuration();
    options.create_shards = [this](const std::string& address, const CreateShardsRequest& r) {
      absl::MutexLock lock(&fake_mu_);
      created_[address].push_back(r);
      for (const CheckpointFile& file : r.restore_from()) {
        if (file.version() == corrupt_version_) return absl::DataLossError("CRC mismatch");
      }
      return create_status_;
    };
    options.shard_version = [this](const std::string& address,
                                   const std::string&) -> absl::StatusOr<uint64_t> {
      return address == "h:1" ? version_ - 1 : version_;
    };
    // One file per shard created on the server.
    options.save_checkpoint = [this](const std::string& address, const SaveCheckpointRequest& r)
        -> absl::StatusOr<SaveCheckpointResponse> {
      absl::MutexLock lock(&fake_mu_);
      SaveCheckpointResponse response;
      for (const ShardSpec& shard : created_[address].back().shards()) {
        if (shard.role() == BACKUP) continue;  // Only primaries are written.
        CheckpointFile* file = response.add_files();
        file->set_table(shard.table().name());
        *file->mutable_range() = shard.range();
        file->set_path(r.directory() + "/" + address + "/" + shard.table().name());
        file->set_version(r.version());
      }
      return response;
    };
    options.set_workers = [this](const std::string& address, const SetWorkersRequest& r) {
      absl::MutexLock lock(&fake_mu_);
      worker_sets_.push_back(address + " " + absl::StrJoin(r.from_step(), ",", [](std::string* out, uint64_t s) {
        absl::StrAppend(out, s == UINT64_MAX ? "never" : absl::StrCat(s));
      }));
      return absl::OkStatus();
    };
    options.promote = [this](const std::string& address, const PromoteRequest& r)
        -> absl::StatusOr<PromoteResponse> {
      absl::MutexLock lock(&fake_mu_);
      promoted_.push_back(address + " " + r.failed_address());
      if (!promote_status_.ok()) return promote_status_;
      PromoteResponse response;
      if (promoted_version_ >= 0) {
        PromotedShard* shard = response.add_shards();
        shard->set_table("embedding");
        shard->set_version(promoted_version_);
      }
      return response;
    };
    options.add_backup = [this](const std::string& address, const AddBackupRequest& r)
        -> absl::StatusOr<AddBackupResponse> {
      absl::MutexLock lock(&fake_mu_);
      backups_added_.push_back(address + " " + r.table() + " " + r.backup_address());
      return AddBackupResponse();
    };
    options.server_status = [this](const std::string& address,
                                   const std::string&) -> absl::StatusOr<ServerStatus> {
      absl::MutexLock lock(&fake_mu_);
      return server_statuses_[address];
    };
    options.drop_job = [this](const std::string& address, const std::string& job_id) {
      absl::MutexLock lock(&fake_mu_);
      dropped_.push_back(address + " " + job_id);
      return absl::OkStatus();
    };
    cluster_ = std::make_unique<ClusterCoordinator>(options);
  }

  std::string Register(NodeRole role, const std::string& address, const std::string& id = "") {
    RegisterRequest r;
    r.set_role(role);
    r.set_address(address);
    r.set_node_id(id);
    return cluster_->Register(r).value().node_id();
  }

  HeartbeatResponse Beat(const std::string& node) {
    HeartbeatRequest r;
    r.set_node_id(node);
    return cluster_->Heartbeat(r).value();
  }

  JobSpec Spec(uint32_t servers, uint32_t workers) {
    JobSpec spec;
    spec.set_num_servers(servers);
    spec.set_num_workers(workers);
    spec.mutable_data()->set_path("/tmp/corpus.txt");
    spec.mutable_training()->set_steps(10);
    spec.mutable_model()->set_kind("mlp");
    return spec;
  }

  ReportProgressResponse Report(const std::string& job, uint32_t rank, uint64_t step, float loss,
                                bool done = false, const std::string& error = "") {
    ReportProgressRequest r;
    r.set_job_id(job);
    r.set_rank(rank);
    r.set_step(step);
    r.set_loss(loss);
    r.set_done(done);
    r.set_error(error);
    const JobStatus status = cluster_->GetJob(job).value();
    r.set_attempt(status.restarts());
    if (rank < static_cast<uint32_t>(status.workers_size())) {
      r.set_node_id(status.workers(rank).worker_id());
    }
    return cluster_->ReportProgress(r).value();
  }

  ClusterCoordinator::Options options_;
  absl::Time now_ = absl::FromUnixSeconds(1000000);
  absl::Status create_status_;
  uint64_t version_ = 6;           // Of the shards on h:2 (h:1: one less).
  uint64_t corrupt_version_ = 0;   // Restoring checkpoint files of this version: DATA_LOSS.
  std::vector<std::string> dropped_;  // "address job" per DropJob.
  std::vector<std::string> worker_sets_;  // "address from_step,..." per SetWorkers.
  std::vector<std::string> promoted_;       // "backup_address failed_address" per Promote.
  int64_t promoted_version_ = -1;           // >= 0: Promote answers one shard at this version.
  absl::Status promote_status_;             // Not OK: Promote fails with it.
  absl::Mutex fake_mu_;
  std::map<std::string, ServerStatus> server_statuses_;  // Admin.GetStatus by address.
  std::vector<std::string> backups_added_;  // "primary_address table backup_address" per AddBackup.
  std::map<std::string, std::vector<CreateShardsRequest>> created_;
  std::unique_ptr<ClusterCoordinator> cluster_;
};

TEST_F(ClusterTest, JobWaitsForNodesThenRunsAndSucceeds) {
  const std::string job = cluster_->SubmitJob(Spec(2, 2)).value();
  cluster_->Tick();
  EXPECT_EQ(cluster_->GetJob(job)->state(), PENDING);
  EXPECT_EQ(cluster_->GetShardMap(job).status().code(), absl::StatusCode::kFailedPrecondition);

  const std::string s1 = Register(SERVER, "h:1"), s2 = Register(SERVER, "h:2");
  const std::string w1 = Register(WORKER, "w1"), w2 = Register(WORKER, "w2");
  cluster_->Tick();
  JobStatus status = cluster_->GetJob(job).value();
  ASSERT_EQ(status.state(), RUNNING);
  // Both servers got shards, and together they cover every table.
  EXPECT_EQ(created_.size(), 2u);
  ShardMap map = cluster_->GetShardMap(job).value();
  EXPECT_EQ(map.tables_size(), 5);
  std::map<std::string, uint64_t> covered;
  for (const auto& shard : map.shards()) covered[shard.table()] += shard.range().end() - shard.range().begin();
  EXPECT_EQ(covered["embedding"], 256u * 24u);

  // Workers receive their assignment (distinct ranks) on the next heartbeat.
  HeartbeatResponse h1 = Beat(w1), h2 = Beat(w2);
  ASSERT_TRUE(h1.has_assignment());
  ASSERT_TRUE(h2.has_assignment());
  EXPECT_NE(h1.assignment().rank(), h2.assignment().rank());
  EXPECT_EQ(h1.assignment().job_id(), job);

  Report(job, 0, 5, 3.0f);
  Report(job, 1, 4, 2.0f);
  ReportProgressRequest with_validation;
  with_validation.set_job_id(job);
  with_validation.set_node_id(cluster_->GetJob(job)->workers(0).worker_id());
  with_validation.set_step(5);
  with_validation.set_loss(3.0f);
  with_validation.set_val_loss(3.5f);
  ASSERT_TRUE(cluster_->ReportProgress(with_validation).ok());
  EXPECT_FLOAT_EQ(cluster_->GetJob(job)->val_loss(), 3.5f);
  ASSERT_EQ(cluster_->GetJob(job)->val_history_size(), 1);
  status = cluster_->GetJob(job).value();
  EXPECT_EQ(status.step(), 4u);
  EXPECT_FLOAT_EQ(status.loss(), 2.5f);
  Report(job, 0, 10, 1.0f, /*done=*/true);
  EXPECT_EQ(cluster_->GetJob(job)->state(), RUNNING);
  EXPECT_EQ(Beat(s1).ended_jobs_size(), 0);
  Report(job, 1, 10, 1.0f, /*done=*/true);
  EXPECT_EQ(cluster_->GetJob(job)->state(), SUCCEEDED);
  // Servers learn that the job they hold shards of ended.
  HeartbeatResponse server_beat = Beat(s2);
  ASSERT_EQ(server_beat.ended_jobs_size(), 1);
  EXPECT_EQ(server_beat.ended_jobs(0), job);
  // Workers are free again: no assignment.
  EXPECT_FALSE(Beat(w1).has_assignment());
}

TEST_F(ClusterTest, CheckpointJobSavesEveryServerAtOneFutureStep) {
  Register(SERVER, "h:1");
  Register(SERVER, "h:2");
  Register(WORKER, "w");
  JobSpec spec = Spec(2, 1);
  const std::string job = cluster_->SubmitJob(spec).value();
  EXPECT_EQ(cluster_->CheckpointJob(job, "/ckpt").status().code(),
            absl::StatusCode::kFailedPrecondition);  // PENDING.
  cluster_->Tick();
  ASSERT_EQ(cluster_->GetJob(job)->state(), RUNNING);
  EXPECT_EQ(cluster_->CheckpointJob(job).status().code(),
            absl::StatusCode::kFailedPrecondition);  // No directory anywhere.
  absl::StatusOr<CheckpointManifest> manifest = cluster_->CheckpointJob(job, "/ckpt");
  ASSERT_TRUE(manifest.ok()) << manifest.status();
  EXPECT_EQ(manifest->step(), 8u);  // Two past the furthest shard (6).
  // One file per shard (its primary writes it; backups are copies).
  ASSERT_EQ(manifest->files_size(), cluster_->GetJob(job)->shard_map().shards_size());
  for (const CheckpointFile& file : manifest->files()) {
    EXPECT_EQ(file.version(), 8u);
    EXPECT_FALSE(file.server_id().empty());
  }
  EXPECT_EQ(cluster_->GetJob(job)->checkpoints_size(), 1);
}

TEST_F(ClusterTest, LostServerRestartsTheJobFromItsLatestGoodCheckpoint) {
  Register(SERVER, "h:1");
  const std::string lost = Register(SERVER, "h:2");
  const std::string w = Register(WORKER, "w");
  JobSpec spec = Spec(2, 1);
  spec.set_replicas(1);  // No backups to fail over to.
  spec.mutable_checkpoint()->set_directory("/ckpt");
  const std::string job = cluster_->SubmitJob(spec).value();
  cluster_->Tick();
  ASSERT_EQ(cluster_->GetJob(job)->state(), RUNNING);
  ASSERT_EQ(cluster_->CheckpointJob(job)->step(), 8u);
  version_ = 10;
  ASSERT_EQ(cluster_->CheckpointJob(job)->step(), 12u);
  ASSERT_TRUE(Beat(w).has_assignment());
  Report(job, 0, 13, 1.5f);

  // h:2 goes silent: the job goes back to PENDING to restart from step 12, its shards are
  // dropped and its worker told to stop.
  now_ += absl::Seconds(2);
  const std::string s1 = cluster_->ListNodes().nodes(0).node_id();
  Beat(s1);
  Beat(w);
  cluster_->Tick();
  JobStatus status = cluster_->GetJob(job).value();
  EXPECT_EQ(status.state(), PENDING);
  EXPECT_EQ(status.restarts(), 1u);
  EXPECT_NE(status.message().find("checkpoint at step 12"), std::string::npos) << status.message();
  EXPECT_NE(status.message().find(lost), std::string::npos) << status.message();
  EXPECT_EQ(dropped_.size(), 2u);
  EXPECT_TRUE(Beat(w).cancel());
  EXPECT_FALSE(Beat(w).has_assignment());
  // The lost run's late reports are not the job's any more.
  ReportProgressRequest late;
  late.set_job_id(job);
  late.set_node_id(w);
  late.set_error("pull failed");
  EXPECT_TRUE(cluster_->ReportProgress(late)->cancel());
  EXPECT_EQ(cluster_->GetJob(job)->state(), PENDING);

  // A new server: the step-12 files turn out corrupt, so the job falls back to step 8.
  const std::string s3 = Register(SERVER, "h:3");
  corrupt_version_ = 12;
  created_.clear();
  dropped_.clear();
  cluster_->Tick();
  status = cluster_->GetJob(job).value();
  EXPECT_EQ(status.state(), PENDING);
  ASSERT_EQ(status.checkpoints_size(), 2);
  EXPECT_TRUE(status.checkpoints(0).bad_reason().empty());
  EXPECT_NE(status.checkpoints(1).bad_reason().find("CRC"), std::string::npos);
  cluster_->Tick();
  status = cluster_->GetJob(job).value();
  ASSERT_EQ(status.state(), RUNNING) << status.message();
  EXPECT_EQ(status.resumed_from_step(), 8u);
  EXPECT_EQ(created_.count("h:2"), 0u);
  size_t restored = 0;
  for (const auto& [address, requests] : created_) {
    for (const CheckpointFile& file : requests.back().restore_from()) {
      EXPECT_EQ(file.version(), 8u);
      ++restored;
    }
    EXPECT_EQ(requests.back().restore_from_size(), requests.back().shards_size());
  }
  EXPECT_GT(restored, 0u);
  HeartbeatResponse beat = Beat(w);
  ASSERT_TRUE(beat.has_assignment());
  EXPECT_EQ(beat.assignment().start_step(), 9u);
  EXPECT_EQ(beat.assignment().attempt(), 1u);
  // The same worker runs rank 0 again: a late error of its first run (attempt 0) does not fail
  // the second one.
  late.set_attempt(0);
  EXPECT_TRUE(cluster_->ReportProgress(late)->cancel());
  EXPECT_EQ(cluster_->GetJob(job)->state(), RUNNING);
  Report(job, 0, 10, 1.0f, /*done=*/true);
  EXPECT_EQ(cluster_->GetJob(job)->state(), SUCCEEDED);
}

TEST_F(ClusterTest, LostWorkerLeavesTheSyncSetAndANewWorkerTakesItsRankOver) {
  const std::string s = Register(SERVER, "h:1");
  const std::string w1 = Register(WORKER, "w1"), w2 = Register(WORKER, "w2");
  const std::string job = cluster_->SubmitJob(Spec(1, 2)).value();
  cluster_->Tick();
  ASSERT_EQ(cluster_->GetJob(job)->state(), RUNNING);
  const uint32_t lost_rank = Beat(w2).assignment().rank();
  const uint32_t kept_rank = Beat(w1).assignment().rank();
  Report(job, kept_rank, 5, 2.0f);
  Report(job, lost_rank, 4, 2.0f);

  // w2 goes silent: its rank is vacated, the server told to stop waiting for it.
  now_ += absl::Seconds(2);
  Beat(s);
  Beat(w1);
  cluster_->Tick();
  JobStatus status = cluster_->GetJob(job).value();
  ASSERT_EQ(status.state(), RUNNING) << status.message();
  EXPECT_NE(status.message().find(w2), std::string::npos) << status.message();
  EXPECT_TRUE(status.workers(lost_rank).vacant());
  const std::string removed = absl::StrCat("h:1 ", kept_rank == 0 ? "0,never" : "never,0");
  EXPECT_EQ(worker_sets_, std::vector<std::string>{removed});
  Report(job, kept_rank, 7, 2.0f);
  EXPECT_EQ(cluster_->GetJob(job)->step(), 7u) << "the vacant rank does not hold the step back";

  // A new worker takes the rank over two steps past the shards (h:1 is at step 5).
  const std::string w3 = Register(WORKER, "w3");
  cluster_->Tick();
  status = cluster_->GetJob(job).value();
  EXPECT_FALSE(status.workers(lost_rank).vacant());
  EXPECT_EQ(status.workers(lost_rank).worker_id(), w3);
  EXPECT_EQ(status.workers(lost_rank).start_step(), 7u);
  ASSERT_EQ(worker_sets_.size(), 2u);
  EXPECT_EQ(worker_sets_[1], absl::StrCat("h:1 ", kept_rank == 0 ? "0,7" : "7,0"));
  HeartbeatResponse beat = Beat(w3);
  ASSERT_TRUE(beat.has_assignment());
  EXPECT_EQ(beat.assignment().rank(), lost_rank);
  EXPECT_EQ(beat.assignment().start_step(), 7u);
  Report(job, kept_rank, 10, 1.0f, /*done=*/true);
  EXPECT_EQ(cluster_->GetJob(job)->state(), RUNNING);
  Report(job, lost_rank, 10, 1.0f, /*done=*/true);
  EXPECT_EQ(cluster_->GetJob(job)->state(), SUCCEEDED);
}

// A pipeline job of 2 groups x 2 stages loses a stage (REFORM_GROUP, the default): its whole
// group stops (the surviving stage is cancelled), the servers stop waiting for that group (their
// ranks are groups: 2 entries, not 4), the job goes on with the other group, and once two workers
// are idle the group is re-formed, both stages from the same step, which the servers are told.
TEST_F(ClusterTest, APipelineGroupThatLosesAStageStopsAndIsReformedByIdleWorkers) {
  const std::string s = Register(SERVER, "h:1");
  std::vector<std::string> workers;
  for (int i = 1; i <= 4; ++i) workers.push_back(Register(WORKER, absl::StrCat("w", i)));
  JobSpec spec;
  spec.set_num_servers(1);
  spec.set_num_workers(4);
  spec.mutable_data()->set_path("/tmp/corpus.txt");
  spec.mutable_training()->set_steps(10);
  spec.mutable_parallelism()->set_pipeline(2);
  spec.mutable_parallelism()->set_micro_batches(2);
  const std::string job = cluster_->SubmitJob(spec).value();
  cluster_->Tick();
  ASSERT_EQ(cluster_->GetJob(job)->state(), RUNNING) << cluster_->GetJob(job)->message();
  std::map<uint32_t, std::string> by_rank;
  for (const std::string& w : workers) by_rank[Beat(w).assignment().rank()] = w;
  ASSERT_EQ(by_rank.size(), 4u);
  // Rank 1 (group 0, stage 1) goes silent.
  now_ += absl::Seconds(2);
  Beat(s);
  for (uint32_t rank : {0u, 2u, 3u}) Beat(by_rank[rank]);
  cluster_->Tick();
  JobStatus status = cluster_->GetJob(job).value();
  ASSERT_EQ(status.state(), RUNNING) << status.message();
  EXPECT_NE(status.message().find("pipeline group 0 stops"), std::string::npos) << status.message();
  EXPECT_EQ(status.restarts(), 0u);
  EXPECT_TRUE(status.workers(0).vacant());
  EXPECT_TRUE(status.workers(1).vacant());
  EXPECT_FALSE(status.workers(2).vacant());
  EXPECT_EQ(worker_sets_, std::vector<std::string>{"h:1 never,0"});
  EXPECT_TRUE(Beat(by_rank[0]).cancel()) << "the lost stage's neighbour stops";
  // One idle worker (the cancelled stage's) is not enough for a group of two.
  cluster_->Tick();
  EXPECT_TRUE(cluster_->GetJob(job)->workers(0).vacant());
  const std::string w5 = Register(WORKER, "w5");
  cluster_->Tick();
  status = cluster_->GetJob(job).value();
  ASSERT_FALSE(status.workers(0).vacant()) << status.message();
  ASSERT_FALSE(status.workers(1).vacant());
  EXPECT_NE(status.message().find("pipeline group 0 re-formed at step 7"), std::string::npos)
      << status.message();
  EXPECT_EQ(status.workers(0).start_step(), 7u);  // Two past the shards (h:1 at step 5).
  EXPECT_EQ(status.workers(1).start_step(), 7u);
  ASSERT_EQ(worker_sets_.size(), 2u);
  EXPECT_EQ(worker_sets_[1], "h:1 7,0");
  std::set<std::string> reformed;
  for (uint32_t rank : {0u, 1u}) {
    const std::string& w = status.workers(rank).worker_id();
    reformed.insert(w);
    HeartbeatResponse beat = Beat(w);
    ASSERT_TRUE(beat.has_assignment()) << w;
    EXPECT_EQ(beat.assignment().rank(), rank);
    EXPECT_EQ(beat.assignment().start_step(), 7u);
    ASSERT_EQ(beat.assignment().stage_addresses_size(), 2);
    EXPECT_FALSE(beat.assignment().stage_addresses(0).empty());
    EXPECT_FALSE(beat.assignment().stage_addresses(1).empty());
  }
  EXPECT_EQ(reformed, (std::set<std::string>{by_rank[0], w5}));
}

// A pipeline group whose step the servers wait for too long (one of its stages hangs while its
// heartbeats go on; the servers cannot tell which): the whole group is dropped, the job goes on
// with the other group, and the group's workers stay free to re-form it.
TEST_F(ClusterTest, AStalledPipelineGroupIsDroppedAfterTheStepTimeoutAndReformed) {
  const std::string s = Register(SERVER, "h:1");
  std::vector<std::string> workers;
  for (int i = 1; i <= 4; ++i) workers.push_back(Register(WORKER, absl::StrCat("w", i)));
  JobSpec spec;
  spec.set_num_servers(1);
  spec.set_num_workers(4);
  spec.mutable_data()->set_path("/tmp/corpus.txt");
  spec.mutable_training()->set_steps(10);
  spec.mutable_training()->set_step_timeout_seconds(5);
  spec.mutable_parallelism()->set_pipeline(2);
  spec.mutable_parallelism()->set_micro_batches(2);
  const std::string job = cluster_->SubmitJob(spec).value();
  cluster_->Tick();
  ASSERT_EQ(cluster_->GetJob(job)->state(), RUNNING) << cluster_->GetJob(job)->message();
  std::map<uint32_t, std::string> by_rank;
  for (const std::string& w : workers) by_rank[Beat(w).assignment().rank()] = w;
  ASSERT_EQ(by_rank.size(), 4u);
  // The server's rank 1 is pipeline group 1 (workers' ranks 2 and 3).
  ShardStatus* waiting;
  {
    absl::MutexLock lock(&fake_mu_);
    waiting = server_statuses_["h:1"].add_shards();
    waiting->set_job_id(job);
    waiting->set_table("wte");
    waiting->set_role(PRIMARY);
    waiting->add_waiting_for_workers(1);
    waiting->set_waiting_ms(4000);
  }
  auto tick = [&] {
    now_ += absl::Milliseconds(1100);
    Beat(s);
    for (const std::string& w : workers) Beat(w);
    cluster_->Tick();
    absl::SleepFor(absl::Milliseconds(50));
    cluster_->Tick();
  };
  tick();
  EXPECT_FALSE(cluster_->GetJob(job)->workers(2).vacant());
  {
    absl::MutexLock lock(&fake_mu_);
    waiting->set_waiting_ms(6000);
  }
  tick();
  // Dropped and, its two workers being free again (told to stop, not marked hung), re-formed in
  // the same round from a common start step; the other group was not touched.
  const JobStatus status = cluster_->GetJob(job).value();
  ASSERT_EQ(status.state(), RUNNING) << status.message();
  EXPECT_NE(status.message().find("pipeline group 1 re-formed at step 7"), std::string::npos)
      << status.message();
  EXPECT_EQ(status.restarts(), 0u);
  for (uint32_t rank : {0u, 1u}) {
    EXPECT_EQ(status.workers(rank).worker_id(), by_rank[rank]);
    EXPECT_FALSE(status.workers(rank).vacant());
  }
  for (uint32_t rank : {2u, 3u}) {
    EXPECT_FALSE(status.workers(rank).vacant());
    EXPECT_EQ(status.workers(rank).start_step(), 7u);
  }
}

TEST_F(ClusterTest, AWorkerAStepWaitsForTooLongIsDroppedAndGetsNoWorkUntilItReports) {
  const std::string s = Register(SERVER, "h:1");
  const std::string w1 = Register(WORKER, "w1"), w2 = Register(WORKER, "w2");
  JobSpec spec = Spec(1, 2);
  spec.mutable_training()->set_step_timeout_seconds(5);
  const std::string job = cluster_->SubmitJob(spec).value();
  cluster_->Tick();
  ASSERT_EQ(cluster_->GetJob(job)->state(), RUNNING);
  const uint32_t hung_rank = Beat(w2).assignment().rank();
  Beat(w1);
  // The server has waited 4 s for the hung rank's push: within the timeout.
  ShardStatus* waiting;
  {
    absl::MutexLock lock(&fake_mu_);
    waiting = server_statuses_["h:1"].add_shards();
    waiting->set_job_id(job);
    waiting->set_table("embedding");
    waiting->set_role(PRIMARY);
    waiting->add_waiting_for_workers(hung_rank);
    waiting->set_waiting_ms(4000);
  }
  auto tick = [&] {
    now_ += absl::Milliseconds(1100);  // Step timeouts are checked every second.
    Beat(s);
    Beat(w1);
    Beat(w2);  // Its heartbeats go on: only its compute hangs.
    cluster_->Tick();
    absl::SleepFor(absl::Milliseconds(50));  // The status reads finish on threads of their own.
    cluster_->Tick();
  };
  tick();
  EXPECT_FALSE(cluster_->GetJob(job)->workers(hung_rank).vacant());
  {
    absl::MutexLock lock(&fake_mu_);
    waiting->set_waiting_ms(6000);
  }
  tick();
  JobStatus status = cluster_->GetJob(job).value();
  ASSERT_EQ(status.state(), RUNNING) << status.message();
  EXPECT_TRUE(status.workers(hung_rank).vacant());
  EXPECT_NE(status.message().find("step_timeout_seconds"), std::string::npos) << status.message();
  // Told to stop, and not given the rank back while it does not report.
  EXPECT_TRUE(Beat(w2).cancel());
  tick();
  EXPECT_TRUE(cluster_->GetJob(job)->workers(hung_rank).vacant());
  // It reports again (its compute came back): it may take work again.
  ReportProgressRequest report;
  report.set_job_id(job);
  report.set_node_id(w2);
  EXPECT_TRUE(cluster_->ReportProgress(report)->cancel());
  tick();
  EXPECT_EQ(cluster_->GetJob(job)->workers(hung_rank).worker_id(), w2);
}

TEST_F(ClusterTest, ReplicatedShardsFailOverToTheirBackupsAndGetNewOnes) {
  const std::string s1 = Register(SERVER, "h:1");
  const std::string s2 = Register(SERVER, "h:2");
  const std::string w = Register(WORKER, "w");
  const std::string job = cluster_->SubmitJob(Spec(2, 1)).value();  // replicas: 2 by default.
  cluster_->Tick();
  JobStatus status = cluster_->GetJob(job).value();
  ASSERT_EQ(status.state(), RUNNING);
  EXPECT_EQ(status.spec().replicas(), 2u);
  // Every shard has its backup on the other server, created there as a BACKUP.
  size_t on_h2 = 0;
  for (const ShardAssignment& shard : status.shard_map().shards()) {
    EXPECT_NE(shard.backup_address(), "");
    EXPECT_NE(shard.backup_address(), shard.server_address());
    on_h2 += shard.server_address() == "h:2";
  }
  ASSERT_GT(on_h2, 0u);
  size_t backups = 0;
  for (const auto& [address, requests] : created_) {
    for (const ShardSpec& spec : requests.back().shards()) {
      if (spec.role() == BACKUP) {
        ++backups;
        EXPECT_NE(spec.primary_address(), address);
      } else {
        EXPECT_NE(spec.backup_address(), "");
      }
    }
  }
  EXPECT_EQ(backups, static_cast<size_t>(status.shard_map().shards_size()));
  EXPECT_EQ(status.shard_map().epoch(), 0u);

  // h:2 is lost: its shards' backups on h:1 are promoted, the job goes on (no restart).
  now_ += absl::Seconds(2);
  Beat(s1);
  Beat(w);
  cluster_->Tick();
  status = cluster_->GetJob(job).value();
  ASSERT_EQ(status.state(), RUNNING) << status.message();
  EXPECT_EQ(status.restarts(), 0u);
  EXPECT_EQ(status.shard_map().epoch(), 1u);
  for (const ShardAssignment& shard : status.shard_map().shards()) {
    EXPECT_EQ(shard.server_address(), "h:1");
    EXPECT_EQ(shard.backup_address(), "");
  }
  EXPECT_EQ(promoted_, std::vector<std::string>{"h:1 h:2"});
  const JobStatus confirmed = cluster_->GetJob(job).value();
  for (const ShardAssignment& shard : confirmed.shard_map().shards()) {
    EXPECT_EQ(shard.promoted_from(), "") << "confirmed";
  }
  EXPECT_TRUE(backups_added_.empty()) << "no other server to put backups on";

  // A new server: each shard gets a backup there, one per tick, by AddBackup on its primary.
  Register(SERVER, "h:3");
  // (AddBackup runs on a thread of its own: tick until every shard has one.)
  for (int i = 0; i < 400; ++i) {
    cluster_->Tick();
    status = cluster_->GetJob(job).value();
    bool all = true;
    for (const ShardAssignment& shard : status.shard_map().shards()) {
      all = all && !shard.backup_address().empty();
    }
    if (all) break;
    absl::SleepFor(absl::Milliseconds(5));
  }
  for (const ShardAssignment& shard : status.shard_map().shards()) {
    EXPECT_EQ(shard.backup_address(), "h:3");
  }
  EXPECT_EQ(backups_added_.size(), static_cast<size_t>(status.shard_map().shards_size()));

  // h:2 was only frozen, and comes back: it is told to drop the job (fenced: it must not serve
  // its old shards next to the promoted primaries), once.
  HeartbeatResponse back = Beat(s2);
  ASSERT_EQ(back.drop_jobs_size(), 1);
  EXPECT_EQ(back.drop_jobs(0), job);
  EXPECT_EQ(Beat(s2).drop_jobs_size(), 0);
}

TEST_F(ClusterTest, PeriodicCheckpointsEveryNSecondsToo) {
  Register(SERVER, "h:1");
  const std::string w = Register(WORKER, "w");
  JobSpec spec = Spec(1, 1);
  spec.mutable_checkpoint()->set_directory("/ckpt");
  spec.mutable_checkpoint()->set_every_seconds(30);
  const std::string job = cluster_->SubmitJob(spec).value();
  cluster_->Tick();
  ASSERT_EQ(cluster_->GetJob(job)->state(), RUNNING);
  auto checkpoints = [&] {
    // Periodic checkpoints run on threads of their own: wait for them to record.
    for (int i = 0; i < 200; ++i) {
      const JobStatus status = cluster_->GetJob(job).value();
      if (status.checkpoints_size() > 0) return status.checkpoints_size();
      absl::SleepFor(absl::Milliseconds(5));
    }
    return 0;
  };
  const std::string s = cluster_->ListNodes().nodes(0).node_id();
  for (int i = 0; i < 5; ++i) {  // 25 s: not yet.
    now_ += absl::Seconds(5);
    Beat(s);
    Beat(w);
    cluster_->Tick();
  }
  absl::SleepFor(absl::Milliseconds(50));
  EXPECT_EQ(cluster_->GetJob(job)->checkpoints_size(), 0);
  now_ += absl::Seconds(5);  // 30 s.
  Beat(s);
  Beat(w);
  cluster_->Tick();
  EXPECT_EQ(checkpoints(), 1);
}

TEST_F(ClusterTest, ABackupItsPrimaryDroppedIsReplaced) {
  const std::string s1 = Register(SERVER, "h:1"), s2 = Register(SERVER, "h:2");
  const std::string w = Register(WORKER, "w");
  const std::string job = cluster_->SubmitJob(Spec(2, 1)).value();
  cluster_->Tick();
  ASSERT_EQ(cluster_->GetJob(job)->state(), RUNNING);
  const ShardAssignment first = cluster_->GetJob(job)->shard_map().shards(0);
  {
    absl::MutexLock lock(&fake_mu_);
    ShardStatus* held = server_statuses_[first.server_address()].add_shards();
    held->set_table(first.table());
    *held->mutable_range() = first.range();
    held->set_role(PRIMARY);
    held->set_backup_lost(true);  // Its backup stopped answering Replicate; it dropped it.
  }
  const std::string s3 = Register(SERVER, "h:3");
  auto added = [&] {
    absl::MutexLock lock(&fake_mu_);
    return backups_added_;
  };
  for (int i = 0; i < 400 && added().empty(); ++i) {
    now_ += absl::Milliseconds(300);
    for (const std::string& node : {s1, s2, s3, w}) Beat(node);
    cluster_->Tick();
    absl::SleepFor(absl::Milliseconds(5));
  }
  const std::vector<std::string> calls = added();
  ASSERT_EQ(calls.size(), 1u);
  EXPECT_EQ(calls[0].substr(0, first.server_address().size() + first.table().size() + 1),
            first.server_address() + " " + first.table());
}

TEST_F(ClusterTest, AStaleBackupIsNotTrustedWithTheJob) {
  const std::string s1 = Register(SERVER, "h:1");
  Register(SERVER, "h:2");
  const std::string w = Register(WORKER, "w");
  const std::string job = cluster_->SubmitJob(Spec(2, 1)).value();
  cluster_->Tick();
  ASSERT_EQ(cluster_->GetJob(job)->state(), RUNNING);
  Beat(w);
  Report(job, 0, 10, 2.0f);  // The worker pulled the parameters after step 9.
  promoted_version_ = 5;     // The backup stopped at 5: its primary had dropped it.
  now_ += absl::Seconds(2);
  Beat(s1);
  Beat(w);
  cluster_->Tick();
  const JobStatus status = cluster_->GetJob(job).value();
  EXPECT_EQ(status.state(), FAILED) << "no checkpoint to restart from";
  EXPECT_NE(status.message().find("was behind"), std::string::npos) << status.message();
}

TEST_F(ClusterTest, ANodeThatLeftGetsNoWork) {
  Register(SERVER, "h:1");
  const std::string gone = Register(WORKER, "w1");
  ASSERT_TRUE(cluster_->Leave(gone).ok());
  EXPECT_EQ(cluster_->Leave(gone).code(), absl::StatusCode::kNotFound);
  const std::string job = cluster_->SubmitJob(Spec(1, 1)).value();
  cluster_->Tick();
  EXPECT_EQ(cluster_->GetJob(job)->state(), PENDING);  // The only worker left.
  const std::string w2 = Register(WORKER, "w2");
  cluster_->Tick();
  EXPECT_EQ(cluster_->GetJob(job)->state(), RUNNING);
  EXPECT_TRUE(Beat(w2).has_assignment());
}

// A worker whose final report says it is leaving (--max_jobs reached) gets no further job, even
// before it has left: the next job waits for (or goes to) another worker.
TEST_F(ClusterTest, AWorkerLeavingAfterItsLastJobGetsNoOther) {
  Register(SERVER, "h:1");
  const std::string w1 = Register(WORKER, "w1");
  const std::string first = cluster_->SubmitJob(Spec(1, 1)).value();
  cluster_->Tick();
  ASSERT_TRUE(Beat(w1).has_assignment());
  const std::string second = cluster_->SubmitJob(Spec(1, 1)).value();
  ReportProgressRequest last;
  last.set_job_id(first);
  last.set_node_id(w1);
  last.set_step(10);
  last.set_loss(1.0f);
  last.set_done(true);
  last.set_leaving(true);
  ASSERT_TRUE(cluster_->ReportProgress(last).ok());
  EXPECT_EQ(cluster_->GetJob(first)->state(), SUCCEEDED);
  cluster_->Tick();
  EXPECT_EQ(cluster_->GetJob(second)->state(), PENDING);
  EXPECT_FALSE(Beat(w1).has_assignment());
  const std::string w2 = Register(WORKER, "w2");
  cluster_->Tick();
  EXPECT_EQ(cluster_->GetJob(second)->state(), RUNNING);
  EXPECT_TRUE(Beat(w2).has_assignment());
}

TEST_F(ClusterTest, AFinalReportCarriedByAHeartbeatEndsTheJob) {
  Register(SERVER, "h:1");
  const std::string w = Register(WORKER, "w");
  const std::string job = cluster_->SubmitJob(Spec(1, 1)).value();
  cluster_->Tick();
  ASSERT_TRUE(Beat(w).has_assignment());
  HeartbeatRequest beat;
  beat.set_node_id(w);
  ReportProgressRequest* report = beat.mutable_final_report();
  report->set_job_id(job);
  report->set_node_id("someone else");
  report->set_step(10);
  report->set_done(true);
  // A node reports only for itself.
  EXPECT_EQ(cluster_->Heartbeat(beat).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(cluster_->GetJob(job)->state(), RUNNING);
  report->set_node_id(w);
  ASSERT_TRUE(cluster_->Heartbeat(beat).ok());
  EXPECT_EQ(cluster_->GetJob(job)->state(), SUCCEEDED);
  EXPECT_EQ(cluster_->GetJob(job)->step(), 10u);
  // Sent again (its acknowledgement was lost): still acknowledged, nothing changes.
  ASSERT_TRUE(cluster_->Heartbeat(beat).ok());
  EXPECT_EQ(cluster_->GetJob(job)->state(), SUCCEEDED);
  // The worker is free for the next job.
  const std::string next = cluster_->SubmitJob(Spec(1, 1)).value();
  cluster_->Tick();
  EXPECT_EQ(cluster_->GetJob(next)->state(), RUNNING);
}

TEST_F(ClusterTest, AServerRestartedInPlaceReplacesTheOldOneAtOnce) {
  RegisterRequest first;
  first.set_role(SERVER);
  first.set_address("h:1");
  first.set_incarnation(11);
  const std::string old_id = cluster_->Register(first)->node_id();
  // The same process registering again (e.g. after a coordinator restart) is not a new one.
  first.set_node_id(old_id);
  ASSERT_TRUE(cluster_->Register(first).ok());
  RegisterRequest again = first;
  again.clear_node_id();
  again.set_incarnation(22);  // A new process at the same address.
  const std::string new_id = cluster_->Register(again)->node_id();
  ASSERT_NE(new_id, old_id);
  const ListNodesResponse nodes = cluster_->ListNodes();
  ASSERT_EQ(nodes.nodes_size(), 2);
  for (const NodeInfo& node : nodes.nodes()) {
    EXPECT_EQ(node.health(), node.node_id() == old_id ? DEAD : HEALTHY) << node.node_id();
    if (node.node_id() == new_id) EXPECT_EQ(node.incarnation(), 22u);
  }
}

TEST_F(ClusterTest, AJobThatCannotFitItsServersIsRefusedAtSubmit) {
  const JobSpec spec = Spec(2, 1);  // About 121k parameters, 2 replicas.
  JobSpec with_defaults = spec;
  ApplyJobDefaults(&with_defaults);
  const uint64_t needed = JobShardBytes(with_defaults).value();
  ASSERT_GT(needed, 2u << 20);
  // Servers whose memory is not known, or fewer servers than the job needs: not judged.
  Register(SERVER, "h:0");
  RegisterRequest small;
  small.set_role(SERVER);
  small.set_address("h:1");
  small.set_memory_bytes(1 << 20);
  ASSERT_TRUE(cluster_->Register(small).ok());
  EXPECT_TRUE(cluster_->SubmitJob(spec).ok());
  // Two servers of 1 MiB: refused, naming the sizes, and nothing is created.
  small.set_address("h:2");
  ASSERT_TRUE(cluster_->Register(small).ok());
  const size_t jobs = cluster_->ListJobs().jobs_size();
  absl::StatusOr<std::string> refused = cluster_->SubmitJob(spec);
  ASSERT_EQ(refused.status().code(), absl::StatusCode::kResourceExhausted) << refused.status();
  EXPECT_NE(refused.status().message().find(absl::StrCat(needed, " bytes")), std::string::npos)
      << refused.status();
  EXPECT_NE(refused.status().message().find(absl::StrCat(2 << 20, " bytes")), std::string::npos)
      << refused.status();
  EXPECT_EQ(cluster_->ListJobs().jobs_size(), jobs);
  // A server large enough, with one of the small ones: it fits.
  RegisterRequest large = small;
  large.set_address("h:3");
  large.set_memory_bytes(needed);
  ASSERT_TRUE(cluster_->Register(large).ok());
  EXPECT_TRUE(cluster_->SubmitJob(spec).ok());
}

TEST_F(ClusterTest, ALongJobsCurvesStayBounded) {
  Register(SERVER, "h:1");
  const std::string w = Register(WORKER, "w");
  const std::string job = cluster_->SubmitJob(Spec(1, 1)).value();
  cluster_->Tick();
  ASSERT_TRUE(Beat(w).has_assignment());
  ReportProgressRequest report;
  report.set_job_id(job);
  report.set_node_id(w);
  report.set_loss(1.0f);
  report.set_val_loss(2.0f);
  for (uint64_t step = 1; step <= 10000; ++step) {
    report.set_step(step);
    ASSERT_TRUE(cluster_->ReportProgress(report).ok());
  }
  const JobStatus status = cluster_->GetJob(job).value();
  EXPECT_LE(status.loss_history_size(), 4096);
  EXPECT_LE(status.val_history_size(), 4096);
  EXPECT_GE(status.val_history_size(), 2048);  // Thinned, not cut: the whole curve is there.
  EXPECT_EQ(status.val_history(0).step(), 1u);
  EXPECT_GT(status.val_history(status.val_history_size() - 1).step(), 9000u);
}

TEST_F(ClusterTest, WorkerErrorFailsTheJobAndCancelsTheOthers) {
  Register(SERVER, "h:1");
  const std::string w1 = Register(WORKER, "w1"), w2 = Register(WORKER, "w2");
  const std::string job = cluster_->SubmitJob(Spec(1, 2)).value();
  cluster_->Tick();
  ASSERT_EQ(cluster_->GetJob(job)->state(), RUNNING);
  Beat(w1);
  Beat(w2);
  EXPECT_TRUE(Report(job, 1, 3, 2.0f, false, "disk on fire").cancel());
  JobStatus status = cluster_->GetJob(job).value();
  EXPECT_EQ(status.state(), FAILED);
  EXPECT_NE(status.message().find("disk on fire"), std::string::npos);
  EXPECT_TRUE(Report(job, 0, 4, 2.0f).cancel());
}

TEST_F(ClusterTest, CancelStopsWorkersAndCannotCancelTwice) {
  Register(SERVER, "h:1");
  const std::string w = Register(WORKER, "w");
  const std::string job = cluster_->SubmitJob(Spec(1, 1)).value();
  cluster_->Tick();
  ASSERT_TRUE(Beat(w).has_assignment());
  ASSERT_TRUE(cluster_->CancelJob(job).ok());
  EXPECT_TRUE(Beat(w).cancel());
  EXPECT_EQ(cluster_->CancelJob(job).status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(cluster_->CancelJob("job-99").status().code(), absl::StatusCode::kNotFound);
}

TEST_F(ClusterTest, SilentWorkerFailsItsRunningJob) {
  const std::string s = Register(SERVER, "h:1");
  const std::string w = Register(WORKER, "w");
  const std::string job = cluster_->SubmitJob(Spec(1, 1)).value();
  cluster_->Tick();
  ASSERT_EQ(cluster_->GetJob(job)->state(), RUNNING);
  now_ += absl::Seconds(2);  // 20 intervals.
  Beat(s);
  cluster_->Tick();
  JobStatus status = cluster_->GetJob(job).value();
  EXPECT_EQ(status.state(), FAILED);
  EXPECT_NE(status.message().find(w), std::string::npos);
  auto nodes = cluster_->ListNodes();
  for (const auto& n : nodes.nodes()) {
    EXPECT_EQ(n.health(), n.node_id() == w ? DEAD : HEALTHY);
  }
}

TEST_F(ClusterTest, ShardCreationFailureFailsTheJob) {
  create_status_ = absl::UnavailableError("server down");
  Register(SERVER, "h:1");
  Register(WORKER, "w");
  const std::string job = cluster_->SubmitJob(Spec(1, 1)).value();
  cluster_->Tick();
  JobStatus status = cluster_->GetJob(job).value();
  EXPECT_EQ(status.state(), FAILED);
  EXPECT_NE(status.message().find("server down"), std::string::npos);
}

TEST_F(ClusterTest, BadRequestsGetTheRightCodes) {
  JobSpec bad = Spec(1, 1);
  bad.mutable_training()->set_batch_size(0);
  bad.mutable_training()->set_steps(0);
  // steps 0 is defaulted, so ask for something defaults do not fix.
  bad.set_num_workers(1000);
  EXPECT_EQ(cluster_->SubmitJob(bad).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(cluster_->GetJob("nope").status().code(), absl::StatusCode::kNotFound);
  HeartbeatRequest hb;
  hb.set_node_id("ghost");
  EXPECT_EQ(cluster_->Heartbeat(hb).status().code(), absl::StatusCode::kNotFound);
  RegisterRequest reg;
  EXPECT_EQ(cluster_->Register(reg).status().code(), absl::StatusCode::kInvalidArgument);
  const std::string job = cluster_->SubmitJob(Spec(1, 1)).value();
  ReportProgressRequest r;
  r.set_job_id(job);
  r.set_rank(5);
  EXPECT_EQ(cluster_->ReportProgress(r).status().code(), absl::StatusCode::kInvalidArgument);
  r.set_job_id("nope");
  EXPECT_EQ(cluster_->ReportProgress(r).status().code(), absl::StatusCode::kNotFound);
}

TEST_F(ClusterTest, WatchersSeeChanges) {
  const std::string job = cluster_->SubmitJob(Spec(1, 1)).value();
  uint64_t revision = 0;
  JobStatus status = cluster_->WaitForJobChange(job, &revision, absl::ZeroDuration()).value();
  EXPECT_EQ(status.state(), PENDING);
  const uint64_t seen = revision;
  cluster_->WaitForJobChange(job, &revision, absl::Milliseconds(10)).value();
  EXPECT_EQ(revision, seen);  // Nothing changed.
  ASSERT_TRUE(cluster_->CancelJob(job).ok());
  status = cluster_->WaitForJobChange(job, &revision, absl::Seconds(1)).value();
  EXPECT_GT(revision, seen);
  EXPECT_EQ(status.state(), CANCELLED);
}

TEST_F(ClusterTest, ANodeRegisteringAgainKeepsItsIdOrGetsItBack) {
  const std::string w = Register(WORKER, "w1");
  EXPECT_EQ(Register(WORKER, "w1-moved", w), w);  // Known: kept, with its new address.
  ASSERT_EQ(cluster_->ListNodes().nodes_size(), 1);
  EXPECT_EQ(cluster_->ListNodes().nodes(0).address(), "w1-moved");
  // Forgotten (as by a coordinator restarted without its state): given back, never handed out.
  EXPECT_EQ(Register(SERVER, "h:1", "server-7"), "server-7");
  EXPECT_EQ(Register(WORKER, "w2"), "worker-8");
  RegisterRequest r;
  r.set_address("x");
  r.set_role(SERVER);
  r.set_node_id(w);  // Known as a worker.
  EXPECT_EQ(cluster_->Register(r).status().code(), absl::StatusCode::kInvalidArgument);
  for (const char* id : {"worker-7x", "server-", "node-3", "server-07"}) {
    r.set_node_id(id);
    EXPECT_EQ(cluster_->Register(r).status().code(), absl::StatusCode::kInvalidArgument) << id;
  }
}

// A coordinator on a StateStore, and the same coordinator after a restart on the same file.
class PersistentClusterTest : public ClusterTest {
 protected:
  void SetUp() override {
    const char* tmp = std::getenv("TEST_TMPDIR");
    std::string templ = std::string(tmp != nullptr ? tmp : "/tmp") + "/cluster_XXXXXX";
    path_ = std::string(mkdtemp(templ.data())) + "/coordinator.db";
    Restart();
  }

  // Replaces the coordinator by a new one on the same database, as a new process would.
  void Restart() {
    cluster_.reset();
    store_.reset();
    absl::StatusOr<std::unique_ptr<StateStore>> store = StateStore::Open(path_);
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = std::move(*store);
    options_.state = store_.get();
    cluster_ = std::make_unique<ClusterCoordinator>(options_);
    absl::Status loaded = cluster_->Load();
    ASSERT_TRUE(loaded.ok()) << loaded;
  }

  // The job as its last write left it in the database.
  JobStatus Stored(const std::string& job) {
    const StateStore::Contents contents = store_->Load().value();
    for (const StateStore::StoredJob& stored : contents.jobs) {
      if (stored.id == job) return stored.record.status();
    }
    return JobStatus();
  }

  std::string path_;
  std::unique_ptr<StateStore> store_;
};

TEST_F(PersistentClusterTest, AReservationSavedBeforeACrashDoesNotStrandTheWorker) {
  const std::string server = Register(SERVER, "h:1");
  const std::string w1 = Register(WORKER, "w1"), w2 = Register(WORKER, "w2");
  const std::string job = cluster_->SubmitJob(Spec(1, 2)).value();
  cluster_->Tick();
  ASSERT_EQ(cluster_->GetJob(job)->state(), RUNNING);
  const uint32_t lost_rank = Beat(w2).assignment().rank();
  now_ += absl::Seconds(2);  // w2 is lost: its rank goes vacant.
  Beat(server);
  Beat(w1);
  cluster_->Tick();
  ASSERT_TRUE(cluster_->GetJob(job)->workers(lost_rank).vacant());
  // A new worker is reserved for the rank (saved) and the coordinator dies before the rank is its.
  const std::string w3 = Register(WORKER, "w3");
  cluster_.reset();
  StateStore::Batch batch;
  NodeRecord reserved;
  reserved.mutable_info()->set_node_id(w3);
  reserved.mutable_info()->set_role(WORKER);
  reserved.mutable_info()->set_address("w3");
  reserved.set_job_id(job);
  reserved.set_rank(lost_rank);
  batch.PutNode(reserved);
  ASSERT_TRUE(store_->Write(batch).ok());
  Restart();
  // The worker is not stranded: it gets the vacant rank.
  for (int i = 0; i < 3; ++i) {
    Beat(server);
    Beat(w1);
    Beat(w3);
    cluster_->Tick();
  }
  const JobStatus status = cluster_->GetJob(job).value();
  EXPECT_FALSE(status.workers(lost_rank).vacant());
  EXPECT_EQ(status.workers(lost_rank).worker_id(), w3);
  EXPECT_TRUE(Beat(w3).has_assignment());
}

TEST_F(PersistentClusterTest, APromotionNotConfirmedBeforeARestartIsSentAgain) {
  const std::string s1 = Register(SERVER, "h:1");
  Register(SERVER, "h:2");
  const std::string w = Register(WORKER, "w");
  const std::string job = cluster_->SubmitJob(Spec(2, 1)).value();
  cluster_->Tick();
  ASSERT_EQ(cluster_->GetJob(job)->state(), RUNNING);
  promote_status_ = absl::UnavailableError("h:1 is slow");  // The Promote does not get through.
  now_ += absl::Seconds(2);
  Beat(s1);
  Beat(w);
  cluster_->Tick();
  ASSERT_EQ(cluster_->GetJob(job)->shard_map().epoch(), 1u);
  bool pending = false;
  const JobStatus stored = Stored(job);
  for (const ShardAssignment& shard : stored.shard_map().shards()) {
    pending |= shard.promoted_from() == "h:2";
  }
  EXPECT_TRUE(pending) << "the unconfirmed promotion is saved";
  // The coordinator restarts; it sends the promotion again.
  Restart();
  promote_status_ = absl::OkStatus();
  promoted_.clear();
  Beat(s1);
  Beat(w);
  cluster_->Tick();
  EXPECT_EQ(promoted_, std::vector<std::string>{"h:1 h:2"});
  const JobStatus status = cluster_->GetJob(job).value();
  EXPECT_EQ(status.state(), RUNNING);
  for (const ShardAssignment& shard : status.shard_map().shards()) {
    EXPECT_EQ(shard.promoted_from(), "");
  }
}

TEST_F(PersistentClusterTest, JobsNodesAndCountersSurviveARestart) {
  const std::string s1 = Register(SERVER, "h:1"), s2 = Register(SERVER, "h:2");
  const std::string w1 = Register(WORKER, "w1"), w2 = Register(WORKER, "w2");
  const std::string idle = Register(WORKER, "w3");
  const std::string gone = Register(WORKER, "w4");
  ASSERT_TRUE(cluster_->Leave(gone).ok());
  JobSpec spec = Spec(2, 2);
  spec.mutable_training()->set_consistency(SYNC);
  const std::string running = cluster_->SubmitJob(spec).value();
  cluster_->Tick();
  ASSERT_EQ(cluster_->GetJob(running)->state(), RUNNING);
  const std::string pending = cluster_->SubmitJob(Spec(1, 5)).value();  // Never enough workers.
  const std::string cancelled = cluster_->SubmitJob(Spec(1, 5)).value();
  ASSERT_TRUE(cluster_->CancelJob(cancelled).ok());
  HeartbeatResponse h1 = Beat(w1);
  ASSERT_TRUE(h1.has_assignment());
  const uint32_t rank1 = h1.assignment().rank();
  Report(running, rank1, 5, 3.0f);
  Report(running, 1 - rank1, 4, 2.0f, /*done=*/false);
  ASSERT_TRUE(cluster_->CheckpointJob(running, "/ckpt").ok());
  Report(running, rank1, 6, 2.5f);  // Saved by the next Tick only...
  EXPECT_EQ(Stored(running).workers(rank1).step(), 5u);
  cluster_->Tick();  // ...here.
  EXPECT_EQ(Stored(running).workers(rank1).step(), 6u);
  const ListJobsResponse jobs = cluster_->ListJobs();
  const ListNodesResponse nodes = cluster_->ListNodes();
  const ShardMap shard_map = cluster_->GetShardMap(running).value();

  now_ += absl::Seconds(60);  // Long after every node's last heartbeat.
  Restart();
  using google::protobuf::util::MessageDifferencer;
  const ListJobsResponse loaded_jobs = cluster_->ListJobs();
  ASSERT_EQ(loaded_jobs.jobs_size(), 3);  // In submission order, with state, spec, progress...
  for (int i = 0; i < 3; ++i) {
    EXPECT_TRUE(MessageDifferencer::Equals(loaded_jobs.jobs(i), jobs.jobs(i)))
        << loaded_jobs.jobs(i).DebugString() << "\nvs\n" << jobs.jobs(i).DebugString();
  }
  const JobStatus status = cluster_->GetJob(running).value();
  EXPECT_EQ(status.state(), RUNNING);
  EXPECT_EQ(status.step(), 4u);
  ASSERT_EQ(status.checkpoints_size(), 1);
  EXPECT_EQ(status.checkpoints(0).step(), 8u);
  EXPECT_TRUE(MessageDifferencer::Equals(cluster_->GetShardMap(running).value(), shard_map));
  EXPECT_EQ(cluster_->GetJob(pending)->state(), PENDING);
  EXPECT_EQ(cluster_->GetJob(cancelled)->state(), CANCELLED);
  // Watchers of a loaded job get its status at once.
  uint64_t revision = 0;
  cluster_->WaitForJobChange(running, &revision, absl::ZeroDuration()).value();
  EXPECT_GT(revision, 0u);

  // The same nodes, each with its job and rank; SUSPECT until heard from (not DEAD after 60 s).
  const ListNodesResponse loaded_nodes = cluster_->ListNodes();
  ASSERT_EQ(loaded_nodes.nodes_size(), nodes.nodes_size());
  for (int i = 0; i < nodes.nodes_size(); ++i) {
    const NodeInfo& before = nodes.nodes(i);
    const NodeInfo& after = loaded_nodes.nodes(i);
    EXPECT_EQ(after.node_id(), before.node_id());
    EXPECT_EQ(after.role(), before.role());
    EXPECT_EQ(after.address(), before.address());
    EXPECT_EQ(after.job_id(), before.job_id());
    EXPECT_EQ(after.rank(), before.rank());
    EXPECT_EQ(after.health(), SUSPECT);
  }
  // A job submitted now waits for nodes that show up.
  const std::string waiting = cluster_->SubmitJob(Spec(1, 1)).value();
  cluster_->Tick();
  EXPECT_EQ(cluster_->GetJob(waiting)->state(), PENDING);
  Beat(idle);
  Beat(s1);
  cluster_->Tick();
  EXPECT_EQ(cluster_->GetJob(waiting)->state(), RUNNING);
  cluster_->Tick();
  EXPECT_EQ(cluster_->GetJob(running)->state(), RUNNING);
  now_ += absl::Milliseconds(1100);  // 11 intervals: a node that never came back is DEAD...
  Beat(s1);
  Beat(s2);
  Beat(w2);
  cluster_->Tick();
  JobStatus lost = cluster_->GetJob(running).value();
  // ...and its rank goes vacant (the job goes on with the other worker), stored at once.
  EXPECT_EQ(lost.state(), RUNNING);
  EXPECT_NE(lost.message().find(w1), std::string::npos) << lost.message();
  const JobStatus stored = Stored(running);
  EXPECT_EQ(stored.state(), RUNNING);
  int vacant = 0;
  for (const WorkerProgress& w : stored.workers()) vacant += w.vacant();
  EXPECT_EQ(vacant, 1);

  // New ids follow the old ones.
  const std::string fresh = Register(WORKER, "w5");
  for (const std::string& old : {s1, s2, w1, w2, idle, gone}) EXPECT_NE(fresh, old);
  EXPECT_EQ(fresh, "worker-7");
  EXPECT_EQ(cluster_->SubmitJob(Spec(1, 1)).value(), "job-5");
  // A node registering again with its id keeps it.
  EXPECT_EQ(Register(WORKER, "w1", w1), w1);
}

TEST_F(PersistentClusterTest, WorkersAndServersCarryOnAfterARestart) {
  const std::string s = Register(SERVER, "h:1");
  const std::string w1 = Register(WORKER, "w1"), w2 = Register(WORKER, "w2");
  const std::string job = cluster_->SubmitJob(Spec(1, 2)).value();
  cluster_->Tick();
  ASSERT_EQ(cluster_->GetJob(job)->state(), RUNNING);
  const uint32_t rank1 = Beat(w1).assignment().rank();
  Report(job, rank1, 10, 1.0f, /*done=*/true);  // Saved at once: the worker reports no more.
  EXPECT_TRUE(Stored(job).workers(rank1).done());
  Restart();
  // The worker still running gets its assignment again (it ignores it: it runs it already).
  HeartbeatResponse h2 = Beat(w2);
  ASSERT_TRUE(h2.has_assignment());
  EXPECT_EQ(h2.assignment().rank(), 1 - rank1);
  EXPECT_EQ(h2.assignment().shard_map().shards_size(),
            cluster_->GetShardMap(job)->shards_size());
  EXPECT_FALSE(Beat(w1).has_assignment());  // Done with it.
  EXPECT_EQ(Report(job, 1 - rank1, 10, 1.0f, /*done=*/true).cancel(), false);
  EXPECT_EQ(cluster_->GetJob(job)->state(), SUCCEEDED);
  EXPECT_EQ(Stored(job).state(), SUCCEEDED);  // Saved before the report returned.
  // The server learns that the job whose shards it holds ended.
  HeartbeatResponse server_beat = Beat(s);
  ASSERT_EQ(server_beat.ended_jobs_size(), 1);
  EXPECT_EQ(server_beat.ended_jobs(0), job);
}

TEST_F(PersistentClusterTest, AJobThatWasStartingIsPendingAgain) {
  // What a coordinator killed while creating a job's shards leaves behind: the workers reserved.
  StateStore::Batch batch;
  JobRecord job;
  *job.mutable_status()->mutable_spec() = Spec(1, 1);
  job.mutable_status()->set_job_id("job-1");
  job.mutable_status()->set_state(PENDING);
  job.add_workers("worker-2");
  job.add_done(false);
  batch.PutJob("job-1", 1, job);
  NodeRecord node;
  node.mutable_info()->set_node_id("server-1");
  node.mutable_info()->set_role(SERVER);
  node.mutable_info()->set_address("h:1");
  batch.PutNode(node);
  node.mutable_info()->set_node_id("worker-2");
  node.mutable_info()->set_role(WORKER);
  node.set_job_id("job-1");
  batch.PutNode(node);
  ASSERT_TRUE(store_->Write(batch).ok());
  Restart();
  ASSERT_EQ(cluster_->ListNodes().nodes_size(), 2);
  EXPECT_EQ(cluster_->ListNodes().nodes(1).job_id(), "");  // Free again.
  EXPECT_EQ(cluster_->GetJob("job-1")->state(), PENDING);
  cluster_->Tick();
  EXPECT_EQ(cluster_->GetJob("job-1")->state(), PENDING);  // The nodes have not shown up yet.
  Beat("server-1");
  Beat("worker-2");
  cluster_->Tick();  // Started afresh.
  EXPECT_EQ(cluster_->GetJob("job-1")->state(), RUNNING);
  EXPECT_TRUE(Beat("worker-2").has_assignment());
}

TEST_F(PersistentClusterTest, FailedWritesAreRetriedAndStopNothing) {
  store_->TEST_FailWrites(absl::UnavailableError("disk unplugged"));
  Register(SERVER, "h:1");
  Register(WORKER, "w");
  const std::string job = cluster_->SubmitJob(Spec(1, 1)).value();
  cluster_->Tick();
  EXPECT_EQ(cluster_->GetJob(job)->state(), RUNNING);
  EXPECT_GT(store_->failed_writes(), 0u);
  store_->TEST_FailWrites(absl::OkStatus());
  cluster_->Tick();
  EXPECT_EQ(Stored(job).state(), RUNNING);
  EXPECT_EQ(store_->Load()->nodes.size(), 2u);
}

TEST_F(PersistentClusterTest, ARecordThatDoesNotAddUpIsAnError) {
  StateStore::Batch batch;
  JobRecord job;
  job.mutable_status()->set_job_id("job-9");  // Stored as job-1.
  batch.PutJob("job-1", 1, job);
  ASSERT_TRUE(store_->Write(batch).ok());
  ClusterCoordinator fresh(options_);
  absl::Status loaded = fresh.Load();
  EXPECT_EQ(loaded.code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(loaded.message().find("job-1"), absl::string_view::npos) << loaded;
}

}  // namespace
}  // namespace psrv
