// Fault-tolerance tests with real processes on 127.0.0.1, killed with SIGKILL (no polite
// shutdown): a lost parameter server, a corrupt checkpoint, with the workers' overlapped step.
// Each test starts its own LocalCluster
// (short heartbeats, so a dead node is noticed within a second) and stops it even on failure.
#include <signal.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "client/coordinator_client.h"
#include "client/local_cluster.h"
#include "common/job_spec.h"
#include "gtest/gtest.h"
#include "tests/test_util.h"
#include "worker/parameter_client.h"

namespace psrv {
namespace {

class FaultTest : public ::testing::Test {
 protected:
  // Workers run jobs until stopped (`worker_max_jobs` 0), or exit after that many.
  // `per_worker_args`: more flags for single workers (LocalClusterOptions::per_worker_args).
  void StartCluster(int servers, int workers, int worker_max_jobs = 0,
                    std::vector<std::vector<std::string>> per_worker_args = {}) {
    log_dir_ = TempDir("fault");
    LocalClusterOptions options = TestClusterOptions(log_dir_, servers, workers);
    options.per_worker_args = std::move(per_worker_args);
    options.heartbeat_interval_ms = 100;  // DEAD after 1 s of silence.
    options.worker_max_jobs = worker_max_jobs;
    // The overlapped step (what GPU workers run; auto leaves it off for these CPU models): kills
    // land while pushes, commits and the next pulls are in flight together.
    options.worker_args = {"--overlap=on"};
    cluster_ = std::make_unique<LocalCluster>(options);
    ASSERT_TRUE(cluster_->Start().ok());
    CoordinatorClientOptions client_options;
    client_options.address = cluster_->coordinator_address();
    client_ = std::make_unique<CoordinatorClient>(client_options);
  }

  void TearDown() override {
    if (cluster_) cluster_->Stop(absl::Seconds(2));
  }

  // Polls until `done(status)` or 120 s; fails the test on timeout or when the job ended first.
  JobStatus WaitFor(const std::string& job, const std::function<bool(const JobStatus&)>& done) {
    return WaitForJob(client_.get(), job, done, absl::Seconds(120), log_dir_);
  }

  JobStatus WaitForEnd(const std::string& job) {
    return WaitFor(job, [](const JobStatus& s) { return IsTerminal(s.state()); });
  }

  // The parameters `spec` ends with when nothing goes wrong (empty if that run failed).
  std::vector<float> ReferenceParameters(const JobSpec& spec) {
    const JobStatus reference = WaitForEnd(client_->SubmitJob(spec).value());
    EXPECT_EQ(reference.state(), SUCCEEDED) << reference.message();
    return reference.state() == SUCCEEDED ? ServedParameters(reference) : std::vector<float>();
  }

  // On 3 servers and 2 workers: a SYNC job of 2 servers (each shard with a backup) and 2
  // workers, run once without a fault (its final parameters into `expected`), then submitted
  // again (`id`); returns its status once it is past step 100.
  JobStatus StartReplicatedJob(uint64_t steps, std::vector<float>* expected, std::string* id) {
    StartCluster(/*servers=*/3, /*workers=*/2);
    JobSpec spec = SmallMlpJob(SYNC, 2, 2, steps);
    spec.set_replicas(2);
    *expected = ReferenceParameters(spec);
    *id = client_->SubmitJob(spec).value();
    return WaitFor(*id,
                   [](const JobStatus& s) { return s.state() == RUNNING && s.step() >= 100; });
  }

  // See the tests that call it, below.
  void KillAWorkerOfAJobThatDoesNotWaitForAll(ConsistencyMode mode);

  // The local-cluster name ("server 1") of the server at `address` (127.0.0.1:port).
  std::string ServerNamed(const std::string& address) { return LocalServerName(log_dir_, address); }

  std::string log_dir_;
  std::unique_ptr<LocalCluster> cluster_;
  std::unique_ptr<CoordinatorClient> client_;
};

// Flips one byte in the middle of the file.
void Corrupt(const std::string& path) {
  std::fstream file(path, std::ios::in | std::ios::out | std::ios::binary);
  ASSERT_TRUE(file) << path;
  file.seekg(0, std::ios::end);
  const std::streamoff size = file.tellg();
  file.seekg(size / 2);
  char byte;
  file.read(&byte, 1);
  byte ^= 0x5a;
  file.seekp(size / 2);
  file.write(&byte, 1);
}

// Cuts the file to half its size.
void Truncate(const std::string& path) {
  std::error_code error;
  const uintmax_t size = std::filesystem::file_size(path, error);
  ASSERT_FALSE(error) << path;
  std::filesystem::resize_file(path, size / 2, error);
  ASSERT_FALSE(error) << path;
}

// A job on one server whose server is killed mid-way restarts on the spare server from its latest
// good checkpoint (the newest one is truncated and bit-flipped first, so from the one before), redoes the steps
// since, and ends with parameters equal, bit for bit, to the same job run without a fault:
// batches depend only on (seed, rank, step), and a checkpoint holds the optimizer state and step.
TEST_F(FaultTest, KilledServerJobResumesFromLastGoodCheckpointBitForBit) {
  StartCluster(/*servers=*/2, /*workers=*/1);
  // Long enough that the job is still running at the second checkpoint (600 steps once ended
  // first in CI: the checkpoint call then fails as the job is no longer RUNNING).
  constexpr uint64_t kSteps = 2000;
  JobSpec spec = SmallMlpJob(SYNC, 1, 1, kSteps);
  spec.mutable_checkpoint()->set_directory(log_dir_ + "/checkpoints");

  // The reference: no fault.
  const std::vector<float> expected = ReferenceParameters(spec);
  ASSERT_FALSE(expected.empty()) << "the fault-free run failed; logs in " << log_dir_;

  const std::string id = client_->SubmitJob(spec).value();
  WaitFor(id, [](const JobStatus& s) { return s.state() == RUNNING && s.step() >= 50; });
  absl::StatusOr<CheckpointManifest> good = client_->CheckpointJob(id, "");
  ASSERT_TRUE(good.ok()) << good.status();
  WaitFor(id, [&](const JobStatus& s) { return s.step() >= good->step() + 50; });
  absl::StatusOr<CheckpointManifest> bad = client_->CheckpointJob(id, "");
  ASSERT_TRUE(bad.ok()) << bad.status();
  // The first file loses its second half, the others get a flipped byte.
  for (int i = 0; i < bad->files_size(); ++i) {
    if (i == 0) {
      Truncate(bad->files(i).path());
    } else {
      Corrupt(bad->files(i).path());
    }
  }

  JobStatus before = client_->GetJob(id).value();
  ASSERT_EQ(before.state(), RUNNING) << "the job ended before the fault; make it longer";
  const std::string victim = ServerNamed(before.shard_map().shards(0).server_address());
  ASSERT_FALSE(victim.empty());
  ASSERT_TRUE(cluster_->Kill(victim, SIGKILL).ok());
  const absl::Time killed = absl::Now();

  const JobStatus resumed = WaitFor(id, [](const JobStatus& s) {
    return s.resumed_from_step() > 0 || IsTerminal(s.state());
  });
  const absl::Duration recovery = absl::Now() - killed;
  const JobStatus final = WaitForEnd(id);
  ASSERT_EQ(final.state(), SUCCEEDED) << final.message() << "; logs in " << log_dir_;
  EXPECT_EQ(final.restarts(), 1u);
  EXPECT_EQ(final.resumed_from_step(), good->step()) << final.message();
  ASSERT_EQ(final.checkpoints_size(), 2);
  EXPECT_TRUE(final.checkpoints(0).bad_reason().empty());
  EXPECT_NE(final.checkpoints(1).bad_reason(), "") << "the corrupt checkpoint is marked bad";
  EXPECT_EQ(final.step(), kSteps);
  EXPECT_NE(ServerNamed(final.shard_map().shards(0).server_address()), victim);
  std::cout << "recovery (kill -9 to running again from step " << resumed.resumed_from_step()
            << "): " << absl::FormatDuration(recovery) << "; steps redone: "
            << before.step() - resumed.resumed_from_step() << "\n";

  EXPECT_EQ(CountDifferent(ServedParameters(final), expected), 0u) << "of " << expected.size();
}

// A replicated job (2 servers, every shard with a backup on the other) whose server is killed
// mid-job fails over to the backups without a restart: nothing acknowledged is lost, nothing is
// redone, and the final parameters equal, bit for bit, those of the same job run without a fault.
// The spare server then becomes the new home of the backups.
TEST_F(FaultTest, KilledPrimaryFailsOverToItsBackupsBitForBit) {
  std::vector<float> expected;
  std::string id;
  const JobStatus before = StartReplicatedJob(1500, &expected, &id);
  ASSERT_FALSE(expected.empty()) << "the fault-free run failed; logs in " << log_dir_;
  for (const ShardAssignment& shard : before.shard_map().shards()) {
    ASSERT_NE(shard.backup_address(), "") << "every shard has a backup";
  }
  const std::string victim_address = before.shard_map().shards(0).server_address();
  const std::string victim = ServerNamed(victim_address);
  ASSERT_TRUE(cluster_->Kill(victim, SIGKILL).ok());
  const absl::Time killed = absl::Now();
  const uint64_t at_kill = client_->GetJob(id)->step();
  const JobStatus failed_over = WaitFor(id, [](const JobStatus& s) {
    return s.shard_map().epoch() > 0 || IsTerminal(s.state());
  });
  const absl::Duration promotion = absl::Now() - killed;
  const JobStatus moving = WaitFor(id, [&](const JobStatus& s) {
    return s.step() > at_kill + 1 || IsTerminal(s.state());
  });
  const absl::Duration first_step = absl::Now() - killed;
  std::cout << "primary killed at step " << at_kill << ": backups promoted after "
            << absl::FormatDuration(promotion) << ", first step after " << absl::FormatDuration(first_step)
            << "\n";
  // The spare server takes the lost backups.
  const JobStatus repaired = WaitFor(id, [](const JobStatus& s) {
    for (const ShardAssignment& shard : s.shard_map().shards()) {
      if (shard.backup_address().empty()) return IsTerminal(s.state());
    }
    return true;
  });
  const JobStatus final = WaitForEnd(id);
  ASSERT_EQ(final.state(), SUCCEEDED) << final.message() << "; logs in " << log_dir_;
  EXPECT_EQ(final.restarts(), 0u);
  EXPECT_EQ(final.shard_map().epoch(), 1u);
  EXPECT_EQ(final.step(), 1500u);
  for (const ShardAssignment& shard : final.shard_map().shards()) {
    EXPECT_NE(shard.server_address(), victim_address);
    EXPECT_NE(shard.backup_address(), victim_address);
  }
  EXPECT_EQ(repaired.state(), RUNNING) << "the job ended before its backups were replaced";

  EXPECT_EQ(CountDifferent(ServedParameters(final), expected), 0u) << "of " << expected.size();
}

// A worker whose compute hangs while its heartbeats go on (here: synthetic compute of 10
// minutes a step) would stall a SYNC job for ever: after training.step_timeout_seconds without
// its push, the coordinator drops it as if dead, and the job goes on and ends without it.
TEST_F(FaultTest, AHungWorkerIsDroppedAfterTheStepTimeout) {
  StartCluster(/*servers=*/1, /*workers=*/1);
  ASSERT_TRUE(cluster_->AddWorker({"--compute=synthetic:600000"}).ok());
  JobSpec spec = SmallMlpJob(SYNC, 1, 2, 200);
  spec.mutable_training()->set_step_timeout_seconds(2);
  const std::string id = client_->SubmitJob(spec).value();
  const JobStatus final = WaitForEnd(id);
  ASSERT_EQ(final.state(), SUCCEEDED) << final.message() << "; logs in " << log_dir_;
  EXPECT_EQ(final.step(), 200u);
  int vacant = 0;
  for (const WorkerProgress& worker : final.workers()) vacant += worker.vacant();
  EXPECT_EQ(vacant, 1) << "the hung worker's rank";
}

// A primary frozen (SIGSTOP) mid-job is taken for lost within about two seconds (it misses three
// heartbeats, so the coordinator probes it, and the probe gets no answer), its backups are
// promoted, and the workers, whose calls to it hang, follow the new map without waiting out their
// deadlines. Thawed (SIGCONT), it drops the job's shards at its next heartbeat: never two
// primaries for one range. The job ends bit for bit as without the freeze.
TEST_F(FaultTest, FrozenPrimaryFailsOverQuicklyAndStepsDownWhenThawed) {
  std::vector<float> expected;
  std::string id;
  const JobStatus before = StartReplicatedJob(1500, &expected, &id);
  ASSERT_FALSE(expected.empty()) << "the fault-free run failed; logs in " << log_dir_;
  const std::string victim_address = before.shard_map().shards(0).server_address();
  const std::string victim = ServerNamed(victim_address);
  ASSERT_FALSE(victim.empty()) << victim_address;
  ASSERT_TRUE(cluster_->Kill(victim, SIGSTOP).ok());
  const absl::Time frozen = absl::Now();
  const uint64_t at_freeze = client_->GetJob(id)->step();
  WaitFor(id, [&](const JobStatus& s) { return s.step() > at_freeze + 2 || IsTerminal(s.state()); });
  const absl::Duration resumed = absl::Now() - frozen;
  std::cout << "primary frozen at step " << at_freeze << ": training went on after "
            << absl::FormatDuration(resumed) << "\n";
  // 1.6-1.7 s measured on a 2-core VM. (Before: the workers waited out their 8-10 s deadlines;
  // then 2-4 s, while healthy primaries waited out their Replicate deadlines to the frozen backup.)
  EXPECT_LT(resumed, absl::Seconds(4));
  absl::SleepFor(absl::Seconds(1));
  ASSERT_TRUE(cluster_->Kill(victim, SIGCONT).ok());
  // Thawed: it drops the job's shards (it would otherwise serve them as a stale primary).
  absl::StatusOr<ServerStatus> thawed;
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  do {
    absl::SleepFor(absl::Milliseconds(100));
    thawed = GetServerStatus(victim_address, id, absl::Seconds(5));
  } while (thawed.ok() && thawed->shards_size() > 0 && absl::Now() < deadline);
  ASSERT_TRUE(thawed.ok()) << thawed.status();
  EXPECT_EQ(thawed->shards_size(), 0) << "the thawed server still holds shards of the job";
  const JobStatus final = WaitForEnd(id);
  ASSERT_EQ(final.state(), SUCCEEDED) << final.message() << "; logs in " << log_dir_;
  EXPECT_EQ(final.restarts(), 0u);
  EXPECT_EQ(CountDifferent(ServedParameters(final), expected), 0u) << "of " << expected.size();
}

// A primary killed and at once replaced by a new ps_server on the same port (as Kubernetes
// restarts a pod in place): the new process registers with a new incarnation, so the coordinator
// takes the old one for lost and promotes its backups; workers whose requests reach the new,
// empty process (NOT_FOUND) follow the new map. The job ends as if nothing happened, bit for bit.
TEST_F(FaultTest, ServerRestartedInPlaceFailsOverBitForBit) {
  std::vector<float> expected;
  std::string id;
  const JobStatus before = StartReplicatedJob(1000, &expected, &id);
  ASSERT_FALSE(expected.empty()) << "the fault-free run failed; logs in " << log_dir_;
  const std::string victim_address = before.shard_map().shards(0).server_address();
  const std::string victim = ServerNamed(victim_address);
  ASSERT_FALSE(victim.empty()) << victim_address;
  ASSERT_TRUE(cluster_->RestartServerInPlace(std::stoi(victim.substr(victim.find(' ') + 1))).ok());
  const JobStatus final = WaitForEnd(id);
  ASSERT_EQ(final.state(), SUCCEEDED) << final.message() << "; logs in " << log_dir_;
  EXPECT_EQ(final.restarts(), 0u);
  EXPECT_GE(final.shard_map().epoch(), 1u);
  EXPECT_EQ(final.step(), 1000u);
  EXPECT_EQ(CountDifferent(ServedParameters(final), expected), 0u) << "of " << expected.size();
}

// An ASYNC job whose primary is killed fails over to the backups; the pushes in flight go again
// (under the same push ids) to the new primaries and to the healthy servers: every push of every
// worker is applied exactly once, so every shard's version is workers x steps, as without a fault.
TEST_F(FaultTest, KilledPrimaryOfAnAsyncJobLosesNoPushAndAppliesNoneTwice) {
  StartCluster(/*servers=*/3, /*workers=*/2);
  constexpr uint64_t kSteps = 1000;
  JobSpec spec = SmallMlpJob(ASYNC, 2, 2, kSteps);
  spec.set_replicas(2);
  const std::string id = client_->SubmitJob(spec).value();
  const JobStatus before =
      WaitFor(id, [](const JobStatus& s) { return s.state() == RUNNING && s.step() >= 100; });
  const std::string victim = ServerNamed(before.shard_map().shards(0).server_address());
  ASSERT_TRUE(cluster_->Kill(victim, SIGKILL).ok());
  const JobStatus final = WaitForEnd(id);
  ASSERT_EQ(final.state(), SUCCEEDED) << final.message() << "; logs in " << log_dir_;
  ASSERT_GE(final.shard_map().epoch(), 1u);
  uint64_t duplicates = 0;
  for (const ShardAssignment& shard : final.shard_map().shards()) {
    absl::StatusOr<ServerStatus> server =
        GetServerStatus(shard.server_address(), id, absl::Seconds(5));
    ASSERT_TRUE(server.ok()) << server.status();
    for (const ShardStatus& held : server->shards()) {
      if (held.table() != shard.table() || held.range().begin() != shard.range().begin() ||
          held.role() != PRIMARY) {
        continue;
      }
      EXPECT_EQ(held.version(), 2 * kSteps) << held.table() << " [" << held.range().begin()
                                            << ", " << held.range().end() << ")";
      duplicates += held.duplicate_pushes();
    }
  }
  std::cout << "pushes sent again and not applied twice: " << duplicates << "\n";
}

// A SYNC job whose worker is killed does not hang: the servers stop waiting for it within about
// a second, the other worker goes on alone, and a worker started later takes the vacant rank (and
// its part of the data) over; the job completes.
TEST_F(FaultTest, KilledWorkerIsReplacedAndTheSyncJobCompletes) {
  StartCluster(/*servers=*/1, /*workers=*/2);
  const std::string id = client_->SubmitJob(SmallMlpJob(SYNC, 1, 2, 2500)).value();
  const JobStatus running =
      WaitFor(id, [](const JobStatus& s) { return s.state() == RUNNING && s.step() >= 50; });
  ASSERT_TRUE(cluster_->Kill("worker 1", SIGKILL).ok());
  const absl::Time killed = absl::Now();
  // The rank of the killed worker goes vacant and the job keeps stepping.
  const JobStatus alone = WaitFor(id, [](const JobStatus& s) {
    for (const WorkerProgress& w : s.workers()) {
      if (w.vacant()) return true;
    }
    return IsTerminal(s.state());
  });
  ASSERT_EQ(alone.state(), RUNNING) << alone.message();
  const absl::Duration detection = absl::Now() - killed;
  const JobStatus progressed =
      WaitFor(id, [&](const JobStatus& s) { return s.step() >= alone.step() + 100 || IsTerminal(s.state()); });
  const absl::Duration first_step = absl::Now() - killed;
  ASSERT_EQ(progressed.state(), RUNNING) << progressed.message();
  std::cout << "worker lost at step " << running.step() << ": rank vacated after "
            << absl::FormatDuration(detection) << "; 100 more steps by " << absl::FormatDuration(first_step)
            << "\n";

  // A new worker joins and takes the rank over.
  ASSERT_TRUE(cluster_->AddWorker().ok());
  const JobStatus joined = WaitFor(id, [](const JobStatus& s) {
    bool vacant = false;
    for (const WorkerProgress& w : s.workers()) vacant |= w.vacant();
    return !vacant || IsTerminal(s.state());
  });
  uint64_t took_over_at = 0;
  for (const WorkerProgress& w : joined.workers()) took_over_at = std::max(took_over_at, w.start_step());
  EXPECT_GT(took_over_at, progressed.step()) << joined.message();
  const JobStatus final = WaitForEnd(id);
  ASSERT_EQ(final.state(), SUCCEEDED) << final.message() << "; logs in " << log_dir_;
  EXPECT_EQ(final.step(), 2500u);
  EXPECT_EQ(final.restarts(), 0u);
}

// SSP: the workers' clocks (ShardStatus.worker_clocks) of every primary shard of the job of
// `status`, leaving rank `skip` out (-1: none).
std::vector<std::vector<uint64_t>> SspClocks(const JobStatus& status, int skip = -1) {
  std::vector<std::vector<uint64_t>> clocks;
  for (const ShardAssignment& shard : status.shard_map().shards()) {
    absl::StatusOr<ServerStatus> server =
        GetServerStatus(shard.server_address(), status.job_id(), absl::Seconds(5));
    EXPECT_TRUE(server.ok()) << server.status();
    if (!server.ok()) continue;
    for (const ShardStatus& held : server->shards()) {
      if (held.table() != shard.table() || held.range().begin() != shard.range().begin()) continue;
      std::vector<uint64_t> live;
      for (int rank = 0; rank < held.worker_clocks_size(); ++rank) {
        if (rank != skip) live.push_back(held.worker_clocks(rank));
      }
      clocks.push_back(live);
    }
  }
  return clocks;
}

// An SSP (staleness 2) or ASYNC job with 3 workers whose worker is killed goes on with the other
// two (SSP: the dead rank's clock leaves the minimum, or they would wait for it for ever); a new
// worker takes the vacant rank over and the job completes. SSP: no live worker is ever seen more
// than staleness + 1 steps ahead of the slowest (it may push once past the bound it pulled at).
void FaultTest::KillAWorkerOfAJobThatDoesNotWaitForAll(ConsistencyMode mode) {
  StartCluster(/*servers=*/1, /*workers=*/3);
  constexpr uint32_t kStaleness = 2;
  JobSpec spec = SmallMlpJob(mode, 1, 3, 3000);
  if (mode == SSP) spec.mutable_training()->set_staleness(kStaleness);
  const std::string id = client_->SubmitJob(spec).value();
  auto wait_for = [&](const std::function<bool(const JobStatus&)>& done) {
    return WaitFor(id, done);
  };
  JobStatus running =
      wait_for([](const JobStatus& s) { return s.state() == RUNNING && s.step() >= 50; });
  ASSERT_EQ(running.state(), RUNNING) << running.message();
  if (mode == SSP) {
    for (int sample = 0; sample < 5; ++sample) {
      for (const std::vector<uint64_t>& clocks : SspClocks(running)) {
        ASSERT_EQ(clocks.size(), 3u);
        const auto [slowest, fastest] = std::minmax_element(clocks.begin(), clocks.end());
        EXPECT_LE(*fastest, *slowest + kStaleness + 1)
            << "clocks " << clocks[0] << "," << clocks[1] << "," << clocks[2];
      }
      absl::SleepFor(absl::Milliseconds(50));
    }
  }
  ASSERT_TRUE(cluster_->Kill("worker 1", SIGKILL).ok());
  const JobStatus alone = wait_for([](const JobStatus& s) {
    for (const WorkerProgress& w : s.workers()) {
      if (w.vacant()) return true;
    }
    return IsTerminal(s.state());
  });
  ASSERT_EQ(alone.state(), RUNNING) << alone.message();
  int vacant = -1;
  for (const WorkerProgress& w : alone.workers()) {
    if (w.vacant()) vacant = static_cast<int>(w.rank());
  }
  const JobStatus progressed = wait_for([&](const JobStatus& s) {
    return s.step() >= alone.step() + 200 || IsTerminal(s.state());
  });
  ASSERT_EQ(progressed.state(), RUNNING) << progressed.message();
  if (mode == SSP) {
    // The survivors went on far past the dead rank's last clock plus the bound.
    const std::vector<std::vector<uint64_t>> all = SspClocks(progressed);
    const std::vector<std::vector<uint64_t>> live = SspClocks(progressed, vacant);
    ASSERT_EQ(all.size(), live.size());
    for (size_t shard = 0; shard < all.size(); ++shard) {
      const uint64_t dead_clock = all[shard][vacant];
      for (uint64_t clock : live[shard]) EXPECT_GT(clock, dead_clock + kStaleness + 1);
    }
  }
  ASSERT_TRUE(cluster_->AddWorker().ok());
  const JobStatus joined = wait_for([](const JobStatus& s) {
    bool any_vacant = false;
    for (const WorkerProgress& w : s.workers()) any_vacant |= w.vacant();
    return !any_vacant || IsTerminal(s.state());
  });
  EXPECT_EQ(joined.state(), RUNNING) << joined.message();
  const JobStatus final = WaitForEnd(id);
  ASSERT_EQ(final.state(), SUCCEEDED) << final.message() << "; logs in " << log_dir_;
  EXPECT_EQ(final.restarts(), 0u);
}

TEST_F(FaultTest, KilledWorkerOfAnSspJobLeavesTheMinimumClockAndIsReplaced) {
  KillAWorkerOfAJobThatDoesNotWaitForAll(SSP);
}

TEST_F(FaultTest, KilledWorkerOfAnAsyncJobIsReplacedAndTheJobCompletes) {
  KillAWorkerOfAJobThatDoesNotWaitForAll(ASYNC);
}

// Backup workers (SYNC, aggregate_first 2 of 3), one of them 4 times slower: steps are applied
// with the first two workers' gradients, the slow one's pushes are dropped as late and it skips
// to the servers' step. A killed worker does not stop the job either; a new one takes its rank
// and the job completes.
TEST_F(FaultTest, BackupWorkersStepOnWithoutTheSlowestAndAKilledWorker) {
  StartCluster(/*servers=*/1, /*workers=*/3, /*worker_max_jobs=*/0,
               {{}, {}, {"--slowdown=4"}});
  JobSpec spec = SmallMlpJob(SYNC, 1, 3, 1500);
  spec.mutable_training()->set_aggregate_first(2);
  const std::string id = client_->SubmitJob(spec).value();
  const JobStatus running =
      WaitFor(id, [](const JobStatus& s) { return s.state() == RUNNING && s.step() >= 100; });
  ASSERT_EQ(running.state(), RUNNING) << running.message();
  ASSERT_TRUE(cluster_->Kill("worker 1", SIGKILL).ok());
  const JobStatus progressed = WaitFor(id, [&](const JobStatus& s) {
    return s.step() >= running.step() + 200 || IsTerminal(s.state());
  });
  ASSERT_EQ(progressed.state(), RUNNING) << progressed.message();
  ASSERT_TRUE(cluster_->AddWorker().ok());
  const JobStatus final = WaitForEnd(id);
  ASSERT_EQ(final.state(), SUCCEEDED) << final.message() << "; logs in " << log_dir_;
  EXPECT_EQ(final.step(), 1500u);
  EXPECT_EQ(final.restarts(), 0u);
  uint64_t late = 0, version = 0;
  for (const ShardAssignment& shard : final.shard_map().shards()) {
    absl::StatusOr<ServerStatus> server =
        GetServerStatus(shard.server_address(), id, absl::Seconds(5));
    ASSERT_TRUE(server.ok()) << server.status();
    for (const ShardStatus& held : server->shards()) {
      EXPECT_EQ(held.aggregate_first(), 2u);
      late += held.late_pushes();
      version = std::max<uint64_t>(version, held.version());
    }
  }
  EXPECT_EQ(version, 1500u);  // Every step applied once.
  EXPECT_GT(late, 0u);        // The slow worker's pushes came late.
  std::cout << "late pushes dropped: " << late << "\n";
}

// A worker frozen (SIGSTOP) mid-job stops heartbeating, is taken for lost and its rank goes vacant;
// the SYNC job steps on without it. Thawed (SIGCONT), its late pushes belong to a rank it no longer
// holds and are refused (it stops running the job): every step is applied exactly once, so the
// server's version equals the job's steps, and the job ends SUCCEEDED without a restart.
TEST_F(FaultTest, FrozenWorkerIsDroppedAndItsLatePushesAreRefusedWhenThawed) {
  StartCluster(/*servers=*/1, /*workers=*/2);
  constexpr uint64_t kSteps = 2000;
  const std::string id = client_->SubmitJob(SmallMlpJob(SYNC, 1, 2, kSteps)).value();
  WaitFor(id, [](const JobStatus& s) { return s.state() == RUNNING && s.step() >= 50; });
  ASSERT_TRUE(cluster_->Kill("worker 1", SIGSTOP).ok());
  const JobStatus alone = WaitFor(id, [](const JobStatus& s) {
    for (const WorkerProgress& w : s.workers()) {
      if (w.vacant()) return true;
    }
    return IsTerminal(s.state());
  });
  ASSERT_EQ(alone.state(), RUNNING) << alone.message();
  WaitFor(id, [&](const JobStatus& s) { return s.step() >= alone.step() + 50 || IsTerminal(s.state()); });
  ASSERT_TRUE(cluster_->Kill("worker 1", SIGCONT).ok());
  const JobStatus final = WaitForEnd(id);
  ASSERT_EQ(final.state(), SUCCEEDED) << final.message() << "; logs in " << log_dir_;
  EXPECT_EQ(final.step(), kSteps);
  EXPECT_EQ(final.restarts(), 0u);
  absl::StatusOr<ServerStatus> server =
      GetServerStatus(final.shard_map().shards(0).server_address(), id, absl::Seconds(5));
  ASSERT_TRUE(server.ok()) << server.status();
  for (const ShardStatus& shard : server->shards()) {
    EXPECT_EQ(shard.version(), kSteps) << shard.table() << " [" << shard.range().begin() << ", " << shard.range().end()
                                   << "): a step applied twice or lost";
  }
}

// The coordinator frozen (SIGSTOP) for 3 s mid-job, three times its 1 s dead-node timeout: the
// workers and servers train on without it (they talk to each other directly). Thawed, it must not
// take every node for lost because it heard nothing while it was itself stopped: no node is
// declared dead, no rank goes vacant, no fail-over, and the job ends bit for bit as without the
// freeze.
TEST_F(FaultTest, FrozenCoordinatorDeclaresNoNodeDeadWhenThawed) {
  StartCluster(/*servers=*/1, /*workers=*/2);
  const JobSpec spec = SmallMlpJob(SYNC, 1, 2, 8000);  // ~10 s: the freeze is mid-job.
  const std::vector<float> expected = ReferenceParameters(spec);
  ASSERT_FALSE(expected.empty()) << "the fault-free run failed; logs in " << log_dir_;
  const std::string id = client_->SubmitJob(spec).value();
  const JobStatus before =
      WaitFor(id, [](const JobStatus& s) { return s.state() == RUNNING && s.step() >= 100; });
  const std::string server = before.shard_map().shards(0).server_address();
  auto server_version = [&]() -> uint64_t {
    absl::StatusOr<ServerStatus> status = GetServerStatus(server, id, absl::Seconds(5));
    EXPECT_TRUE(status.ok()) << status.status();
    return status.ok() && status->shards_size() > 0 ? status->shards(0).version() : 0;
  };
  ASSERT_TRUE(cluster_->Kill("coordinator", SIGSTOP).ok());
  const uint64_t frozen_at = server_version();
  absl::SleepFor(absl::Seconds(3));
  const uint64_t thawed_at = server_version();
  ASSERT_TRUE(cluster_->Kill("coordinator", SIGCONT).ok());
  std::cout << "coordinator frozen for 3 s: the job trained from step " << frozen_at << " to "
            << thawed_at << " meanwhile\n";
  EXPECT_GT(thawed_at, frozen_at + 100) << "training should go on without the coordinator";
  absl::SleepFor(absl::Seconds(1));  // Its first ticks after the thaw.
  absl::StatusOr<std::vector<NodeInfo>> nodes = client_->ListNodes();
  ASSERT_TRUE(nodes.ok()) << nodes.status();
  for (const NodeInfo& node : *nodes) {
    EXPECT_EQ(node.health(), HEALTHY) << node.node_id() << " after the coordinator's freeze";
  }
  const JobStatus final = WaitForEnd(id);
  ASSERT_EQ(final.state(), SUCCEEDED) << final.message() << "; logs in " << log_dir_;
  EXPECT_EQ(final.restarts(), 0u);
  EXPECT_EQ(final.shard_map().epoch(), before.shard_map().epoch()) << "no fail-over";
  for (const WorkerProgress& w : final.workers()) EXPECT_FALSE(w.vacant());
  EXPECT_EQ(CountDifferent(ServedParameters(final), expected), 0u) << "of " << expected.size();
}

// SIGTERM (e.g. Kubernetes stopping a pod) is not a crash: the server has the job checkpointed
// before it leaves, so the job restarts on the spare server from the step it was at.
TEST_F(FaultTest, TerminatedServerCheckpointsItsJobBeforeLeaving) {
  // --max_jobs=1 (as in Kubernetes): the run stopped by the restart does not count, the worker
  // stays for the job's next run.
  StartCluster(/*servers=*/2, /*workers=*/1, /*worker_max_jobs=*/1);
  JobSpec spec = SmallMlpJob(SYNC, 1, 1, 2000);
  spec.mutable_checkpoint()->set_directory(log_dir_ + "/checkpoints");
  const std::string id = client_->SubmitJob(spec).value();
  const JobStatus running =
      WaitFor(id, [](const JobStatus& s) { return s.state() == RUNNING && s.step() >= 50; });
  const std::string server = ServerNamed(running.shard_map().shards(0).server_address());
  ASSERT_TRUE(cluster_->Kill(server, SIGTERM).ok());
  const JobStatus final = WaitForEnd(id);
  ASSERT_EQ(final.state(), SUCCEEDED) << final.message() << "; logs in " << log_dir_;
  EXPECT_EQ(final.restarts(), 1u);
  ASSERT_EQ(final.checkpoints_size(), 1) << "taken on SIGTERM";
  EXPECT_GE(final.resumed_from_step(), running.step());
  EXPECT_EQ(final.resumed_from_step(), final.checkpoints(0).step());
}

// The whole cluster killed at once (SIGKILL), then started again: the coordinator from its state
// file on the same port, and new server and worker processes. The job, RUNNING on nodes that never
// come back, restarts from its latest checkpoint and completes.
TEST_F(FaultTest, WholeClusterKilledAndRestartedResumesFromTheCheckpoint) {
  StartCluster(/*servers=*/1, /*workers=*/1);
  JobSpec spec = SmallMlpJob(SYNC, 1, 1, 2000);
  spec.mutable_checkpoint()->set_directory(log_dir_ + "/checkpoints");
  spec.mutable_checkpoint()->set_every_steps(50);
  const std::string id = client_->SubmitJob(spec).value();
  const JobStatus before = WaitFor(id, [](const JobStatus& s) {
    return s.state() == RUNNING && s.checkpoints_size() >= 2;
  });
  for (const char* name : {"worker 0", "server 0", "coordinator"}) {
    ASSERT_TRUE(cluster_->Kill(name, SIGKILL).ok()) << name;
  }
  ASSERT_TRUE(cluster_->RestartCoordinator().ok());
  ASSERT_TRUE(cluster_->AddServer().ok());
  ASSERT_TRUE(cluster_->AddWorker().ok());
  const JobStatus final = WaitForEnd(id);
  ASSERT_EQ(final.state(), SUCCEEDED) << final.message() << "; logs in " << log_dir_;
  EXPECT_EQ(final.restarts(), 1u);
  EXPECT_GE(final.resumed_from_step(), before.checkpoints(1).step());
  bool from_a_checkpoint = false;
  for (const CheckpointManifest& c : final.checkpoints()) {
    from_a_checkpoint |= c.step() == final.resumed_from_step();
  }
  EXPECT_TRUE(from_a_checkpoint) << final.resumed_from_step();
  EXPECT_EQ(final.step(), 2000u);
}

// Without a checkpoint there is nothing to restart from: the job FAILS, naming the lost server.
TEST_F(FaultTest, KilledServerFailsAJobWithoutCheckpoints) {
  StartCluster(/*servers=*/1, /*workers=*/1);
  const std::string id = client_->SubmitJob(SmallMlpJob(SYNC, 1, 1, 100000)).value();
  const JobStatus running =
      WaitFor(id, [](const JobStatus& s) { return s.state() == RUNNING && s.step() >= 10; });
  ASSERT_TRUE(cluster_->Kill("server 0", SIGKILL).ok());
  const JobStatus final = WaitForEnd(id);
  EXPECT_EQ(final.state(), FAILED);
  EXPECT_NE(final.message().find(running.shard_map().shards(0).server_id()), std::string::npos)
      << final.message();
}

}  // namespace
}  // namespace psrv
