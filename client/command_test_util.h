// In-process fakes of the Coordinator and Admin services, and a fixture that starts them, for the
// tests of psctl's commands (job_commands_test, monitor_commands_test).
#ifndef PSRV_CLIENT_COMMAND_TEST_UTIL_H_
#define PSRV_CLIENT_COMMAND_TEST_UTIL_H_

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "client/command_env.h"
#include "client/job_spec_flags.h"
#include "proto/admin.grpc.pb.h"
#include "proto/coordinator.grpc.pb.h"

namespace psrv {

class FakeCoordinator final : public Coordinator::Service {
 public:
  grpc::Status SubmitJob(grpc::ServerContext*, const SubmitJobRequest* request,
                         SubmitJobResponse* response) override {
    absl::MutexLock lock(&mu_);
    submitted_.push_back(request->spec());
    response->set_job_id(absl::StrCat("job-", submitted_.size()));
    return grpc::Status::OK;
  }

  grpc::Status GetJob(grpc::ServerContext*, const GetJobRequest* request,
                      JobStatus* response) override {
    if (request->job_id() == "job-2") {
      *response = Job(PENDING, 0);
      response->set_job_id("job-2");
      return grpc::Status::OK;
    }
    if (request->job_id() == "job-3") {  // Survived a lost server and a lost worker.
      *response = Job(RUNNING, 60);
      response->set_job_id("job-3");
      response->mutable_spec()->set_replicas(2);
      response->set_restarts(1);
      response->set_resumed_from_step(40);
      response->mutable_shard_map()->set_epoch(2);
      response->add_checkpoints()->set_step(40);
      CheckpointManifest* bad = response->add_checkpoints();
      bad->set_step(50);
      bad->set_bad_reason("CRC mismatch");
      WorkerProgress* lost = response->add_workers();
      lost->set_rank(1);
      lost->set_vacant(true);
      return grpc::Status::OK;
    }
    if (request->job_id() != "job-1") {
      return grpc::Status(grpc::StatusCode::NOT_FOUND, "no job " + request->job_id());
    }
    *response = Job(SUCCEEDED, 100);
    return grpc::Status::OK;
  }

  grpc::Status ListJobs(grpc::ServerContext*, const ListJobsRequest*,
                        ListJobsResponse* response) override {
    *response->add_jobs() = Job(RUNNING, 40);
    JobStatus other = Job(PENDING, 0);
    other.set_job_id("job-2");
    other.mutable_spec()->set_name("a-longer-name");
    other.set_loss(0);
    other.clear_loss_history();
    other.set_tokens_per_sec(0);
    *response->add_jobs() = other;
    return grpc::Status::OK;
  }

  grpc::Status CancelJob(grpc::ServerContext*, const CancelJobRequest* request,
                         JobStatus* response) override {
    if (request->job_id() == "job-done") {
      return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION, "job already ended");
    }
    *response = Job(CANCELLED, 10);
    response->set_job_id(request->job_id());
    return grpc::Status::OK;
  }

  grpc::Status WatchJob(grpc::ServerContext*, const WatchJobRequest* request,
                        grpc::ServerWriter<JobStatus>* writer) override {
    const JobState last = request->job_id() == "job-fails" ? FAILED : SUCCEEDED;
    for (JobStatus status : {Job(PENDING, 0), Job(RUNNING, 0), Job(RUNNING, 50), Job(last, 100)}) {
      status.set_job_id(request->job_id());
      if (status.state() == FAILED) status.set_message("worker 1: out of memory");
      writer->Write(status);
    }
    return grpc::Status::OK;
  }

  grpc::Status ListNodes(grpc::ServerContext*, const ListNodesRequest*,
                         ListNodesResponse* response) override {
    absl::MutexLock lock(&mu_);
    for (const NodeInfo& node : nodes_) *response->add_nodes() = node;
    return grpc::Status::OK;
  }

  void AddNode(NodeInfo node) {
    absl::MutexLock lock(&mu_);
    nodes_.push_back(std::move(node));
  }

  std::vector<JobSpec> submitted() {
    absl::MutexLock lock(&mu_);
    return submitted_;
  }

  static JobStatus Job(JobState state, uint64_t step) {
    JobStatus status;
    status.set_job_id("job-1");
    status.mutable_spec()->set_name("tiny");
    status.mutable_spec()->mutable_training()->set_steps(100);
    status.mutable_spec()->set_num_servers(1);
    status.mutable_spec()->set_num_workers(1);
    status.set_state(state);
    status.set_step(step);
    if (step > 0) {
      status.set_loss(2.5f);
      status.add_loss_history()->set_loss(2.5f);
      status.set_tokens_per_sec(45100);
      // Validation at half-way and now; the half-way loss is the best.
      ValidationPoint* half = status.add_val_history();
      half->set_step(step / 2);
      half->set_loss(2.4f);
      ValidationPoint* now = status.add_val_history();
      now->set_step(step);
      now->set_loss(2.45f);
      status.set_val_loss(2.45f);
    }
    status.set_submit_time_ms(absl::ToUnixMillis(absl::Now() - absl::Seconds(125)));
    if (state == SUCCEEDED) status.set_sample("the quick brown fox");
    return status;
  }

 private:
  absl::Mutex mu_;
  std::vector<JobSpec> submitted_ ABSL_GUARDED_BY(mu_);
  std::vector<NodeInfo> nodes_ ABSL_GUARDED_BY(mu_);
};

class FakeAdmin final : public Admin::Service {
 public:
  grpc::Status GetStatus(grpc::ServerContext*, const GetStatusRequest* request,
                         ServerStatus* response) override {
    response->set_server_id("s-1");
    for (const char* table : {"embedding", "hidden.bias"}) {
      ShardStatus* shard = response->add_shards();
      shard->set_job_id(request->job_id().empty() ? "job-1" : request->job_id());
      shard->set_table(table);
      shard->mutable_range()->set_begin(0);
      shard->mutable_range()->set_end(6144);
      shard->set_elements(6144);
      shard->set_bytes(3 * 6144 * 4);
      shard->set_version(12);
      shard->set_consistency(SYNC);
      shard->set_pushes(24);
      shard->set_pulls(26);
      shard->set_bytes_in(1 << 20);
      shard->set_bytes_out(2 << 20);
      shard->add_workers_seen(1);
      shard->add_workers_seen(0);
    }
    return grpc::Status::OK;
  }
};

inline std::unique_ptr<grpc::Server> StartServer(grpc::Service* service, int* port) {
  grpc::ServerBuilder builder;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), port);
  builder.RegisterService(service);
  return builder.BuildAndStart();
}

class CommandsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    int port = 0;
    coordinator_server_ = StartServer(&coordinator_, &port);
    ASSERT_NE(coordinator_server_, nullptr);
    coordinator_address_ = absl::StrCat("127.0.0.1:", port);
    admin_server_ = StartServer(&admin_, &port);
    ASSERT_NE(admin_server_, nullptr);
    admin_address_ = absl::StrCat("127.0.0.1:", port);

    NodeInfo server;
    server.set_node_id("s-1");
    server.set_role(SERVER);
    server.set_address(admin_address_);
    server.set_health(HEALTHY);
    server.set_last_heartbeat_ms(absl::ToUnixMillis(absl::Now()));
    coordinator_.AddNode(server);
    NodeInfo dead = server;
    dead.set_node_id("s-2");
    dead.set_address("127.0.0.1:1");  // Nothing listens there.
    dead.set_health(DEAD);
    coordinator_.AddNode(dead);
    NodeInfo worker;
    worker.set_node_id("w-1");
    worker.set_role(WORKER);
    worker.set_address("127.0.0.1:0");
    worker.set_health(HEALTHY);
    worker.set_job_id("job-1");
    worker.set_rank(0);
    coordinator_.AddNode(worker);

    env_.out = &out_;
    env_.err = &err_;
    env_.coordinator = coordinator_address_;
    env_.timeout = absl::Seconds(5);
  }

  void TearDown() override {
    coordinator_server_->Shutdown();
    admin_server_->Shutdown();
  }

  JobSpecFlags MinimalFlags() {
    JobSpecFlags flags;
    flags.data = "/data/text.txt";
    return flags;
  }

  FakeCoordinator coordinator_;
  FakeAdmin admin_;
  std::unique_ptr<grpc::Server> coordinator_server_, admin_server_;
  std::string coordinator_address_, admin_address_;
  std::ostringstream out_, err_;
  CommandEnv env_;
};

}  // namespace psrv

#endif  // PSRV_CLIENT_COMMAND_TEST_UTIL_H_
