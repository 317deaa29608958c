// Integration tests with real processes on 127.0.0.1: the coordinator is killed (SIGKILL) while a
// job runs and started again on the same port. With its state database the job goes on and
// succeeds, served by the same server and worker processes under the same node ids; without it,
// the server and worker register again under their old ids.
#include <signal.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <functional>
#include <iterator>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "client/coordinator_client.h"
#include "common/subprocess.h"
#include "gtest/gtest.h"
#include "tests/test_util.h"

namespace psrv {
namespace {

constexpr absl::Duration kStartup = absl::Seconds(30);

class CoordinatorRestartTest : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = TempDir("restart"); }

  // Starts ps_coordinator on `port` (0: a free one) with `flags`, and a client to it.
  void StartCoordinator(int port, const std::vector<std::string>& flags) {
    const std::string port_file = dir_ + "/coordinator.port";
    std::remove(port_file.c_str());
    std::vector<std::string> argv = {Runfile("coordinator/ps_coordinator"), "--host=127.0.0.1",
                                     absl::StrCat("--port=", port), "--port_file=" + port_file,
                                     "--metrics_port=-1", "--heartbeat_interval_ms=200"};
    argv.insert(argv.end(), flags.begin(), flags.end());
    coordinator_ = std::make_unique<Subprocess>();
    ASSERT_TRUE(coordinator_->Start(argv, dir_ + "/coordinator.log").ok());
    absl::StatusOr<int> bound = WaitForPortFile(port_file, kStartup, coordinator_.get());
    ASSERT_TRUE(bound.ok()) << bound.status() << "; see " << dir_ << "/coordinator.log";
    port_ = *bound;
    CoordinatorClientOptions options;
    options.address = absl::StrCat("127.0.0.1:", port_);
    client_ = std::make_unique<CoordinatorClient>(options);
  }

  // Kills the coordinator as a crash would.
  void KillCoordinator() {
    coordinator_->Signal(SIGKILL);
    ASSERT_EQ(coordinator_->Wait(absl::Seconds(10)).value_or(-1), 128 + SIGKILL);
    coordinator_.reset();
  }

  void StartServerAndWorker(const std::vector<std::string>& worker_flags = {}) {
    const std::string coordinator = absl::StrCat("--coordinator=127.0.0.1:", port_);
    const std::string port_file = dir_ + "/server.port";
    ASSERT_TRUE(server_
                    .Start({Runfile("server/ps_server"), "--host=127.0.0.1", "--port=0",
                            "--port_file=" + port_file, coordinator, "--metrics_port=-1"},
                           dir_ + "/server.log")
                    .ok());
    absl::StatusOr<int> server_port = WaitForPortFile(port_file, kStartup, &server_);
    ASSERT_TRUE(server_port.ok()) << server_port.status();
    server_address_ = absl::StrCat("127.0.0.1:", *server_port);
    std::vector<std::string> worker_argv = {Runfile("worker/ps_worker"), coordinator,
                                           "--host=127.0.0.1", "--metrics_port=-1"};
    worker_argv.insert(worker_argv.end(), worker_flags.begin(), worker_flags.end());
    ASSERT_TRUE(worker_.Start(worker_argv, dir_ + "/worker.log").ok());
  }

  // The ids of the healthy nodes once there are `count` of them (empty after 30 s).
  std::set<std::string> WaitForHealthyNodes(size_t count) {
    const absl::Time deadline = absl::Now() + kStartup;
    while (absl::Now() < deadline) {
      std::set<std::string> ids;
      absl::StatusOr<std::vector<NodeInfo>> nodes = client_->ListNodes();
      for (const NodeInfo& node : nodes.ok() ? *nodes : std::vector<NodeInfo>()) {
        if (node.health() == HEALTHY) ids.insert(node.node_id());
      }
      if (ids.size() == count) return ids;
      absl::SleepFor(absl::Milliseconds(100));
    }
    return {};
  }

  // Polls the job until `done(status)` or 60 s passed; fails the test if the server or worker
  // exits meanwhile.
  JobStatus WaitForJob(const std::string& job, const std::function<bool(const JobStatus&)>& done) {
    const absl::Time deadline = absl::Now() + absl::Seconds(60);
    JobStatus status;
    while (absl::Now() < deadline) {
      EXPECT_TRUE(server_.running() && worker_.running()) << "logs in " << dir_;
      absl::StatusOr<JobStatus> got = client_->GetJob(job);
      if (got.ok()) {
        status = *got;
        if (done(status)) return status;
      }
      absl::SleepFor(absl::Milliseconds(50));
    }
    ADD_FAILURE() << "job " << job << " is still " << JobState_Name(status.state()) << " at step "
                  << status.step() << "; logs in " << dir_;
    return status;
  }

  // The highest version of `job`'s shards on the server (one update per SYNC step).
  uint64_t ServerVersion(const std::string& job) {
    absl::StatusOr<ServerStatus> status =
        GetServerStatus(server_address_, job, absl::Seconds(5));
    EXPECT_TRUE(status.ok()) << status.status();
    uint64_t version = 0;
    if (!status.ok()) return version;
    for (const ShardStatus& shard : status->shards()) version = std::max(version, shard.version());
    return version;
  }

  void EndJobWhileTheCoordinatorIsAway(absl::Duration away,
                                       const std::vector<std::string>& worker_flags);

  std::string dir_;
  int port_ = 0;
  std::string server_address_;
  // Killed (SIGKILL) by their destructors if the test ends early.
  std::unique_ptr<Subprocess> coordinator_;
  Subprocess server_, worker_;
  std::unique_ptr<CoordinatorClient> client_;
};

TEST_F(CoordinatorRestartTest, RunningJobSurvivesAKilledCoordinator) {
  const std::vector<std::string> state = {"--state_db=" + dir_ + "/coordinator.db"};
  StartCoordinator(0, state);
  StartServerAndWorker();
  const std::set<std::string> nodes = WaitForHealthyNodes(2);
  ASSERT_EQ(nodes.size(), 2u) << "logs in " << dir_;
  const pid_t server_pid = server_.pid(), worker_pid = worker_.pid();

  constexpr uint64_t kSteps = 4000;  // About 5 s here; the coordinator is away for about 1 s.
  absl::StatusOr<std::string> job = client_->SubmitJob(SmallMlpJob(SYNC, 1, 1, kSteps));
  ASSERT_TRUE(job.ok()) << job.status();
  const JobStatus before =
      WaitForJob(*job, [](const JobStatus& s) { return s.step() >= 20 || IsTerminal(s.state()); });
  ASSERT_EQ(before.state(), RUNNING) << before.message();
  // Progress reports reach the database within a tick (100 ms): wait for a few.
  absl::SleepFor(absl::Milliseconds(300));

  KillCoordinator();
  // The worker trains on without the coordinator.
  const uint64_t version = ServerVersion(*job);
  absl::SleepFor(absl::Seconds(1));
  EXPECT_GT(ServerVersion(*job), version);
  ASSERT_LT(ServerVersion(*job), kSteps) << "the job ended while the coordinator was away: "
                                            "the test needs more steps";
  StartCoordinator(port_, state);

  // The job is back at once, and goes on to its end.
  absl::StatusOr<JobStatus> reloaded = client_->GetJob(*job);
  ASSERT_TRUE(reloaded.ok()) << reloaded.status();
  EXPECT_EQ(reloaded->state(), RUNNING);
  EXPECT_GE(reloaded->step(), before.step());
  const JobStatus final =
      WaitForJob(*job, [](const JobStatus& s) { return IsTerminal(s.state()); });
  ASSERT_EQ(final.state(), SUCCEEDED) << final.message() << "; logs in " << dir_;
  EXPECT_EQ(final.step(), kSteps);
  EXPECT_FALSE(final.sample().empty());

  std::string out;
  ASSERT_EQ(RunPsctl(absl::StrCat("127.0.0.1:", port_), dir_, {"job", "list"}, &out), 0) << out;
  bool listed = false;
  for (absl::string_view line : absl::StrSplit(out, '\n')) {
    listed |= absl::StrContains(line, *job) && absl::StrContains(line, "SUCCEEDED");
  }
  EXPECT_TRUE(listed) << out;

  // The same server and worker processes, under the same ids: none restarted or registered anew.
  EXPECT_TRUE(server_.running());
  EXPECT_TRUE(worker_.running());
  EXPECT_EQ(server_.pid(), server_pid);
  EXPECT_EQ(worker_.pid(), worker_pid);
  EXPECT_EQ(WaitForHealthyNodes(2), nodes);
  EXPECT_EQ(client_->ListNodes()->size(), 2u);
}

TEST_F(CoordinatorRestartTest, NodesKeepTheirIdsWithACoordinatorThatForgotThem) {
  StartCoordinator(0, {});  // Memory only.
  StartServerAndWorker();
  const std::set<std::string> nodes = WaitForHealthyNodes(2);
  ASSERT_EQ(nodes.size(), 2u) << "logs in " << dir_;
  KillCoordinator();
  absl::SleepFor(absl::Seconds(1));
  StartCoordinator(port_, {});
  // Their heartbeats get NOT_FOUND; they register again, under the same ids.
  EXPECT_EQ(WaitForHealthyNodes(2), nodes) << "logs in " << dir_;
  EXPECT_EQ(client_->ListNodes()->size(), 2u);
  // And they take work: a new job runs on them.
  absl::StatusOr<std::string> job = client_->SubmitJob(SmallMlpJob(SYNC, 1, 1, 30));
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_EQ(WaitForJob(*job, [](const JobStatus& s) { return IsTerminal(s.state()); }).state(),
            SUCCEEDED);
}

// Kills the coordinator while a job's worker runs its last steps and starts it again `away`
// after the job's last step; the job must end SUCCEEDED there.
void CoordinatorRestartTest::EndJobWhileTheCoordinatorIsAway(
    absl::Duration away, const std::vector<std::string>& worker_flags) {
  const std::vector<std::string> state = {"--state_db=" + dir_ + "/coordinator.db"};
  StartCoordinator(0, state);
  StartServerAndWorker(worker_flags);
  ASSERT_EQ(WaitForHealthyNodes(2).size(), 2u) << "logs in " << dir_;
  constexpr uint64_t kSteps = 300;
  absl::StatusOr<std::string> job = client_->SubmitJob(SmallMlpJob(SYNC, 1, 1, kSteps));
  ASSERT_TRUE(job.ok()) << job.status();
  // Once the worker runs it (it reports progress).
  ASSERT_EQ(
      WaitForJob(*job, [](const JobStatus& s) { return s.step() > 0 || IsTerminal(s.state()); })
          .state(),
      RUNNING);
  KillCoordinator();
  // The worker finishes its steps (and the evaluation that follows the last) meanwhile.
  const absl::Time deadline = absl::Now() + absl::Seconds(60);
  while (ServerVersion(*job) < kSteps && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(50));
  }
  ASSERT_EQ(ServerVersion(*job), kSteps);
  absl::SleepFor(away);
  StartCoordinator(port_, state);
  const JobStatus final =
      WaitForJob(*job, [](const JobStatus& s) { return IsTerminal(s.state()); });
  ASSERT_EQ(final.state(), SUCCEEDED) << final.message() << "; logs in " << dir_;
  EXPECT_EQ(final.step(), kSteps);
  EXPECT_FALSE(final.sample().empty());
  EXPECT_TRUE(worker_.running());
}

TEST_F(CoordinatorRestartTest, AJobThatEndsWhileTheCoordinatorIsAwayIsReportedOnceItIsBack) {
  // The worker's last report, retried meanwhile, ends the job.
  EndJobWhileTheCoordinatorIsAway(absl::Seconds(1), {});
}

TEST_F(CoordinatorRestartTest, AFinalReportOutlastingTheWorkersPatienceGoesWithItsHeartbeats) {
  // The coordinator stays away longer than the worker retries its last report: the report goes
  // with the worker's heartbeats, and the first one the coordinator answers ends the job.
  // (Its first try waits up to 5 s for the coordinator; it gives up after that.)
  EndJobWhileTheCoordinatorIsAway(absl::Seconds(8), {"--final_report_patience=1s"});
  std::ifstream log(dir_ + "/worker.log");
  const std::string text((std::istreambuf_iterator<char>(log)), std::istreambuf_iterator<char>());
  EXPECT_NE(text.find("delivered with a heartbeat"), std::string::npos) << "logs in " << dir_;
}

}  // namespace
}  // namespace psrv
