// The coordinator's calls to servers with real processes on 127.0.0.1: one unresponsive server
// (SIGSTOP: its TCP port still accepts connections, but no call to it ever returns before its
// deadline) must not delay what the coordinator does for the jobs on other servers.
#include <signal.h>

#include <functional>
#include <iostream>
#include <memory>
#include <set>
#include <string>

#include <grpcpp/client_context.h>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "client/coordinator_client.h"
#include "client/local_cluster.h"
#include "common/channel.h"
#include "common/job_spec.h"
#include "gtest/gtest.h"
#include "proto/coordinator.grpc.pb.h"
#include "tests/test_util.h"

namespace psrv {
namespace {

constexpr int kHeartbeatMs = 100;  // DEAD after 10 intervals: 1 s of silence.

class CoordinatorConcurrencyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    log_dir_ = TempDir("concurrency");
    // No servers yet: they come once the workers have their ids (see StartJobsOnDisjointServers).
    LocalClusterOptions options = TestClusterOptions(log_dir_, /*servers=*/0, /*workers=*/2);
    options.heartbeat_interval_ms = kHeartbeatMs;
    options.worker_max_jobs = 0;
    cluster_ = std::make_unique<LocalCluster>(options);
    ASSERT_TRUE(cluster_->Start().ok());
    CoordinatorClientOptions client_options;
    client_options.address = cluster_->coordinator_address();
    client_ = std::make_unique<CoordinatorClient>(client_options);
  }

  void TearDown() override {
    if (frozen_pid_ > 0) kill(frozen_pid_, SIGCONT);  // So that it can be stopped politely.
    if (cluster_) cluster_->Stop(absl::Seconds(2));
  }

  JobStatus WaitFor(const std::string& job, const std::function<bool(const JobStatus&)>& done,
                    absl::Duration timeout = absl::Seconds(60)) {
    return WaitForJob(client_.get(), job, done, timeout, log_dir_);
  }

  JobStatus WaitUntilRunning(const std::string& job) {
    return WaitFor(job, [](const JobStatus& s) {
      return (s.state() == RUNNING && s.step() >= 20) || IsTerminal(s.state());
    });
  }

  // Waits until `count` nodes of `role` are registered.
  void WaitForNodes(NodeRole role, int count) {
    for (int i = 0; i < 1000; ++i) {
      int seen = 0;
      for (const NodeInfo& node : client_->ListNodes().value_or(std::vector<NodeInfo>())) {
        seen += node.role() == role;
      }
      if (seen >= count) return;
      absl::SleepFor(absl::Milliseconds(10));
    }
    ADD_FAILURE() << "fewer than " << count << " " << NodeRole_Name(role) << "s registered";
  }

  // Registers a node under id `node_id` and has it leave: the coordinator never gives out an id
  // up to that one again (as after a restart without its state).
  void SkipNodeIdsUpTo(const std::string& node_id) {
    auto stub = Coordinator::NewStub(CreateChannel(cluster_->coordinator_address()));
    grpc::ClientContext register_context;
    RegisterRequest request;
    request.set_role(WORKER);
    request.set_address("127.0.0.1:1");
    request.set_node_id(node_id);
    RegisterResponse registered;
    ASSERT_TRUE(stub->Register(&register_context, request, &registered).ok());
    grpc::ClientContext leave_context;
    LeaveRequest leave;
    leave.set_node_id(node_id);
    LeaveResponse left;
    ASSERT_TRUE(stub->Leave(&leave_context, leave, &left).ok());
  }

  // The coordinator gives a new job the first HEALTHY servers in the order of their ids (as
  // strings). Job A gets server-3 and server-4 (the workers are 1 and 2); job B the servers added
  // after id 9, server-10 and server-11, which sort before A's.
  void StartJobsOnDisjointServers() {
    WaitForNodes(WORKER, 2);
    ASSERT_TRUE(cluster_->AddServer().ok());
    ASSERT_TRUE(cluster_->AddServer().ok());
    WaitForNodes(SERVER, 2);
    const JobSpec spec = SmallMlpJob(SYNC, /*servers=*/2, /*workers=*/1, /*steps=*/1000000);
    job_a_ = client_->SubmitJob(spec).value();
    a_ = WaitUntilRunning(job_a_);
    ASSERT_EQ(a_.state(), RUNNING) << a_.message();
    SkipNodeIdsUpTo("worker-9");
    ASSERT_TRUE(cluster_->AddServer().ok());
    ASSERT_TRUE(cluster_->AddServer().ok());
    WaitForNodes(SERVER, 4);
    job_b_ = client_->SubmitJob(spec).value();
    b_ = WaitUntilRunning(job_b_);
    ASSERT_EQ(b_.state(), RUNNING) << b_.message();

    std::set<std::string> a_servers;
    for (const ShardAssignment& shard : a_.shard_map().shards()) {
      ASSERT_NE(shard.backup_address(), "") << "every shard has a backup";
      a_servers.insert(shard.server_address());
      a_servers.insert(shard.backup_address());
    }
    for (const ShardAssignment& shard : b_.shard_map().shards()) {
      ASSERT_NE(shard.backup_address(), "") << "every shard has a backup";
      ASSERT_EQ(a_servers.count(shard.server_address()), 0u) << "the jobs share a server";
      ASSERT_EQ(a_servers.count(shard.backup_address()), 0u) << "the jobs share a server";
    }
  }

  std::string log_dir_;
  std::unique_ptr<LocalCluster> cluster_;
  std::unique_ptr<CoordinatorClient> client_;
  int frozen_pid_ = -1;
  std::string job_a_, job_b_;
  JobStatus a_, b_;  // As they ran before the faults.
};

// Job A's primary is frozen (SIGSTOP, kept stopped), then job B's primary is killed (SIGKILL).
// B's backups take over as fast as they would with no frozen server: the coordinator's calls to
// A's frozen server (Admin.GetStatus, 10 s deadline) hold up nothing of B's.
TEST_F(CoordinatorConcurrencyTest, AFrozenServerDoesNotDelayAnotherJobsFailOver) {
  StartJobsOnDisjointServers();
  if (HasFatalFailure()) return;
  const std::string frozen = LocalServerName(log_dir_, a_.shard_map().shards(0).server_address());
  const std::string victim = LocalServerName(log_dir_, b_.shard_map().shards(0).server_address());
  ASSERT_NE(frozen, "");
  ASSERT_NE(victim, "");

  frozen_pid_ = cluster_->PidOf(frozen);
  ASSERT_TRUE(cluster_->Kill(frozen, SIGSTOP).ok());
  // Long enough for the coordinator's once-a-second check of A's primaries to be waiting on the
  // frozen one; short enough that B's server is lost before that call's deadline.
  absl::SleepFor(absl::Milliseconds(600));
  ASSERT_TRUE(cluster_->Kill(victim, SIGKILL).ok());
  const absl::Time killed = absl::Now();
  const uint64_t at_kill = client_->GetJob(job_b_)->step();
  const JobStatus failed_over = WaitFor(job_b_, [](const JobStatus& s) {
    return s.shard_map().epoch() > 0 || IsTerminal(s.state());
  }, absl::Seconds(30));
  const absl::Duration promotion = absl::Now() - killed;
  const JobStatus moving = WaitFor(job_b_, [&](const JobStatus& s) {
    return s.step() > at_kill + 2 || IsTerminal(s.state());
  }, absl::Seconds(30));
  const absl::Duration first_steps = absl::Now() - killed;
  std::cout << "job B's primary killed at step " << at_kill << " while job A's server is frozen: "
            << "new shard map after " << absl::FormatDuration(promotion)
            << ", two steps more after " << absl::FormatDuration(first_steps) << "\n";

  ASSERT_EQ(moving.state(), RUNNING) << moving.message() << "; logs in " << log_dir_;
  EXPECT_EQ(failed_over.shard_map().epoch(), 1u);
  EXPECT_EQ(moving.restarts(), 0u);
  // Without the frozen server the new shard map comes once the killed server is DEAD (1 s of
  // silence, sooner if its worker reports it unreachable) plus a tick (100 ms) and one Promote.
  // The frozen server may cost one more bounded wait of a tick for replies; the rest is slack for
  // a loaded 2-core machine. Calls that wait out the frozen server's 10 s deadline miss it.
  const absl::Duration bound = 10 * absl::Milliseconds(kHeartbeatMs) + absl::Seconds(1) +
                               absl::Seconds(1);
  EXPECT_LT(promotion, bound) << "logs in " << log_dir_;
}

}  // namespace
}  // namespace psrv
