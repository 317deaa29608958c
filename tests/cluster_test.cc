// Integration tests with real processes on 127.0.0.1: a coordinator, parameter servers and workers
// (started by the same LocalCluster that `psctl local` uses) train a job end to end; psctl reads the
// shards back; bad requests over real gRPC get the right codes and change nothing.
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include <grpcpp/client_context.h>
#include <grpcpp/generic/generic_stub.h>
#include <nlohmann/json.hpp>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "bench/worker_metrics.h"
#include "client/coordinator_client.h"
#include "client/local_cluster.h"
#include "common/channel.h"
#include "common/initializer.h"
#include "common/job_spec.h"
#include "common/model_layout.h"
#include "common/proto_mutator.h"
#include "common/subprocess.h"
#include "gtest/gtest.h"
#include "proto/admin.pb.h"
#include "proto/parameter_server.grpc.pb.h"
#include "server/apply.h"
#include "server/checkpoint.h"
#include "tests/test_util.h"
#include "worker/compute.h"
#include "worker/step_pipeline.h"
#include "worker/data/corpus.h"
#include "worker/model/language_model.h"
#include "worker/model/tokenizer.h"
#include "worker/parameter_client.h"
#include "worker/model/model_factory.h"

namespace psrv {
namespace {

class ClusterTest : public ::testing::Test {
 protected:
  // Each worker runs `worker_max_jobs` jobs and exits (0: it stays until the test ends, e.g. to
  // have its /metrics read after its job).
  void StartCluster(int servers, int workers, const std::vector<std::string>& worker_args = {},
                    bool unix_sockets = false, const std::vector<std::string>& server_args = {},
                    int worker_max_jobs = 1) {
    log_dir_ = TempDir("cluster");
    LocalClusterOptions options = TestClusterOptions(log_dir_, servers, workers);
    options.worker_max_jobs = worker_max_jobs;
    options.worker_args = worker_args;
    options.server_args = server_args;
    options.unix_sockets = unix_sockets;
    cluster_ = std::make_unique<LocalCluster>(options);
    ASSERT_TRUE(cluster_->Start().ok());
    CoordinatorClientOptions client_options;
    client_options.address = cluster_->coordinator_address();
    client_ = std::make_unique<CoordinatorClient>(client_options);
  }

  // Runs a job to its end; fails the test if a process dies or it takes too long.
  JobStatus RunJob(const JobSpec& spec) {
    absl::StatusOr<std::string> id = client_->SubmitJob(spec);
    EXPECT_TRUE(id.ok()) << id.status();
    if (!id.ok()) return JobStatus();
    const absl::Time deadline = absl::Now() + absl::Seconds(240);
    absl::StatusOr<JobStatus> status = client_->WatchJob(
        *id, [](const JobStatus&) {},
        [&]() -> absl::Status {
          if (absl::Now() > deadline) return absl::DeadlineExceededError("job took too long");
          return cluster_->CheckProcesses();
        });
    EXPECT_TRUE(status.ok()) << status.status();
    return status.ok() ? *status : JobStatus();
  }

  // Runs psctl with `args` against the cluster; returns its exit code and stdout.
  int Psctl(const std::vector<std::string>& args, std::string* out) {
    return RunPsctl(cluster_->coordinator_address(), log_dir_, args, out);
  }

  void TearDown() override {
    if (cluster_) cluster_->Stop();
  }

  std::string log_dir_;
  std::unique_ptr<LocalCluster> cluster_;
  std::unique_ptr<CoordinatorClient> client_;
};

void ExpectLossFalls(const JobStatus& status) {
  ASSERT_GE(status.loss_history_size(), 3);
  const float first = status.loss_history(0).loss();
  const float last = status.loss_history(status.loss_history_size() - 1).loss();
  // Starts near ln(256) = 5.55 (uniform over bytes) and falls clearly.
  EXPECT_NEAR(first, std::log(256.0f), 0.8f);
  EXPECT_LT(last, first - 1.5f) << "first " << first << " last " << last;
}

TEST_F(ClusterTest, SyncTwoServersTwoWorkersTrainsAndShardsAreVisible) {
  StartCluster(2, 2);
  const JobSpec spec = SmallMlpJob(SYNC, 2, 2, 200);
  JobStatus status = RunJob(spec);
  ASSERT_EQ(status.state(), SUCCEEDED) << status.message() << "\nlogs in " << log_dir_;
  ExpectLossFalls(status);
  EXPECT_EQ(status.step(), 200u);
  EXPECT_FALSE(status.sample().empty());
  EXPECT_GT(status.tokens_per_sec(), 0.0f);

  std::string out;
  ASSERT_EQ(Psctl({"shards", "--json"}, &out), 0) << out;
  nlohmann::json shards = nlohmann::json::parse(out);
  ASSERT_EQ(shards.at("servers").size(), 2u) << out;
  const uint64_t expected_elements = TotalElements(*ModelTables(spec.model(), 1));
  uint64_t elements = 0, backed_up = 0;
  for (const auto& server : shards.at("servers")) {
    ASSERT_FALSE(server.at("shards").empty()) << "a server holds nothing: " << out;
    for (const auto& shard : server.at("shards")) {
      const uint64_t begin = std::stoull(shard.at("range").at("begin").get<std::string>());
      const uint64_t end = std::stoull(shard.at("range").at("end").get<std::string>());
      const uint64_t count = std::stoull(shard.at("elements").get<std::string>());
      EXPECT_EQ(end - begin, count);
      // SYNC: one update per step, whatever the number of workers; backups have every update.
      EXPECT_EQ(shard.at("version").get<std::string>(), "200");
      if (shard.value("role", "PRIMARY") == "BACKUP") {
        backed_up += count;
        continue;
      }
      EXPECT_EQ(shard.at("workers_seen").size(), 2u);
      elements += count;
    }
  }
  EXPECT_EQ(elements, expected_elements);
  EXPECT_EQ(backed_up, expected_elements) << "2 servers: every shard has a backup by default";
}

// psctl local's default: the servers are reached over Unix domain sockets.
TEST_F(ClusterTest, SyncTrainsOverUnixSockets) {
  StartCluster(2, 2, {}, /*unix_sockets=*/true);
  JobStatus status = RunJob(SmallMlpJob(SYNC, 2, 2, 100));
  ASSERT_EQ(status.state(), SUCCEEDED) << status.message() << "\nlogs in " << log_dir_;
  ASSERT_GT(status.shard_map().shards_size(), 0);
  for (const ShardAssignment& shard : status.shard_map().shards()) {
    EXPECT_TRUE(absl::StartsWith(shard.server_address(), "unix:/tmp/psrv-"))
        << shard.server_address();
  }
  std::string out;
  ASSERT_EQ(Psctl({"shards", "--json"}, &out), 0) << out;
  EXPECT_EQ(nlohmann::json::parse(out).at("servers").size(), 2u) << out;
}

TEST_F(ClusterTest, AsyncTwoServersTwoWorkersTrains) {
  StartCluster(2, 2);
  JobSpec spec = SmallMlpJob(ASYNC, 2, 2, 200);
  spec.mutable_training()->mutable_optimizer()->set_learning_rate(0.03f);
  JobStatus status = RunJob(spec);
  ASSERT_EQ(status.state(), SUCCEEDED) << status.message() << "\nlogs in " << log_dir_;
  ExpectLossFalls(status);
  std::string out;
  ASSERT_EQ(Psctl({"shards", "--json"}, &out), 0) << out;
  nlohmann::json shards = nlohmann::json::parse(out);
  for (const auto& server : shards.at("servers")) {
    for (const auto& shard : server.at("shards")) {
      // ASYNC: every push of every worker applied exactly once (by the backup too, replicated).
      EXPECT_EQ(shard.at("version").get<std::string>(), "400");
      const bool backup = shard.value("role", "PRIMARY") == "BACKUP";
      EXPECT_EQ(shard.at("pushes").get<std::string>(), backup ? "0" : "400");
    }
  }
}

TEST_F(ClusterTest, AnEndedJobsShardsAreDroppedAfterTheirTimeToLive) {
  StartCluster(1, 1, {}, false, {"--ended_job_ttl=1s"});
  const JobStatus status = RunJob(SmallMlpJob(SYNC, 1, 1, 20));
  ASSERT_EQ(status.state(), SUCCEEDED) << status.message() << "\nlogs in " << log_dir_;
  const std::string server = status.shard_map().shards(0).server_address();
  // Gone a little after the TTL (kept until then: server/ended_jobs_test).
  absl::StatusOr<ServerStatus> held = GetServerStatus(server, status.job_id(), absl::Seconds(5));
  const absl::Time deadline = absl::Now() + absl::Seconds(20);
  while (held.ok() && held->shards_size() > 0 && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(100));
    held = GetServerStatus(server, status.job_id(), absl::Seconds(5));
  }
  ASSERT_TRUE(held.ok()) << held.status();
  EXPECT_EQ(held->shards_size(), 0) << "logs in " << log_dir_;
}

TEST_F(ClusterTest, Bf16WireTrainsLikeFp32) {
  StartCluster(2, 2);
  JobSpec spec = SmallMlpJob(SYNC, 2, 2, 200);
  spec.mutable_training()->set_wire_dtype(BF16);
  JobStatus status = RunJob(spec);
  ASSERT_EQ(status.state(), SUCCEEDED) << status.message() << "\nlogs in " << log_dir_;
  ExpectLossFalls(status);
}

// TOP_K compression (error feedback, 5% of each push) trains through real processes: pushes
// travel as offsets and values (PushRequest.indices), the servers widen them.
TEST_F(ClusterTest, TopKCompressedPushesTrain) {
  StartCluster(2, 2);
  JobSpec spec = SmallMlpJob(SYNC, 2, 2, 300);
  spec.mutable_training()->mutable_compression()->set_kind(TOP_K);
  spec.mutable_training()->mutable_compression()->set_fraction(0.05f);
  JobStatus status = RunJob(spec);
  ASSERT_EQ(status.state(), SUCCEEDED) << status.message() << "\nlogs in " << log_dir_;
  ExpectLossFalls(status);
}

TEST_F(ClusterTest, CheckpointsAreConsistentAndVerifiable) {
  StartCluster(2, 2);
  // Long enough for several periodic checkpoints however fast the small model's steps go.
  JobSpec spec = SmallMlpJob(SYNC, 2, 2, 600);
  spec.mutable_checkpoint()->set_directory(log_dir_ + "/checkpoints");
  spec.mutable_checkpoint()->set_every_steps(60);
  absl::StatusOr<std::string> id = client_->SubmitJob(spec);
  ASSERT_TRUE(id.ok()) << id.status();
  // An on-demand checkpoint while it runs (refused while a periodic one is in progress: asked
  // again then).
  for (int i = 0; i < 200 && client_->GetJob(*id)->step() < 20; ++i) {
    absl::SleepFor(absl::Milliseconds(50));
  }
  std::string out;
  int code = Psctl({"checkpoint", *id, "--json"}, &out);
  for (int i = 0; i < 20 && code != 0 && absl::StrContains(out, "already in progress"); ++i) {
    absl::SleepFor(absl::Milliseconds(20));
    code = Psctl({"checkpoint", *id, "--json"}, &out);
  }
  ASSERT_EQ(code, 0) << out;
  absl::StatusOr<JobStatus> final = client_->WatchJob(*id, [](const JobStatus&) {});
  ASSERT_TRUE(final.ok()) << final.status();
  ASSERT_EQ(final->state(), SUCCEEDED) << final->message();
  ASSERT_GE(final->checkpoints_size(), 3) << "one on demand, periodic ones every 60 steps";
  size_t shards = final->shard_map().shards_size();
  for (const CheckpointManifest& manifest : final->checkpoints()) {
    // Every shard (split into however many files) at the manifest's step, and intact.
    EXPECT_GE(static_cast<size_t>(manifest.files_size()), shards);
    uint64_t keys = 0;
    for (const CheckpointFile& file : manifest.files()) {
      EXPECT_EQ(file.version(), manifest.step()) << file.path();
      EXPECT_FALSE(file.server_id().empty());
      const uint32_t crc = file.crc32();
      absl::StatusOr<ShardCheckpoint> read = ReadShardCheckpoint(file.path(), &crc);
      ASSERT_TRUE(read.ok()) << read.status();
      EXPECT_EQ(read->version, manifest.step());
      EXPECT_EQ(read->optimizer_state.size(), 1u);  // Momentum.
      keys += read->values.size();
    }
    EXPECT_EQ(keys, TotalElements(*ModelTables(final->spec().model(), 1)));
  }
}

TEST_F(ClusterTest, CancelStopsARunningJob) {
  StartCluster(1, 1);
  JobSpec spec = SmallMlpJob(SYNC, 1, 1, 1000000);
  absl::StatusOr<std::string> id = client_->SubmitJob(spec);
  ASSERT_TRUE(id.ok());
  for (int i = 0; i < 200 && client_->GetJob(*id)->step() < 10; ++i) {
    absl::SleepFor(absl::Milliseconds(50));
  }
  std::string out;
  EXPECT_EQ(Psctl({"job", "cancel", *id}, &out), 0) << out;
  JobStatus status = client_->GetJob(*id).value();
  EXPECT_EQ(status.state(), CANCELLED);
  // The worker stops (it was started with --max_jobs=1, so it exits 0).
  EXPECT_TRUE(cluster_->CheckProcesses().ok());
}

TEST_F(ClusterTest, MalformedJobSpecsAreRejectedWithReasons) {
  StartCluster(1, 0);
  JobSpec bad = SmallMlpJob(SYNC, 1, 1, 10);
  bad.mutable_training()->set_batch_size(1000000);
  absl::StatusOr<std::string> id = client_->SubmitJob(bad);
  ASSERT_FALSE(id.ok());
  EXPECT_EQ(id.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(id.status().message().find("batch_size"), std::string::npos) << id.status();

  const std::string spec_path = log_dir_ + "/bad.yaml";
  std::ofstream(spec_path) << "training:\n  steps: [1, 2\n";
  std::string out;
  EXPECT_EQ(Psctl({"job", "submit", "--spec", spec_path}, &out), 2) << out;
  std::ofstream(spec_path) << "trainin: {steps: 3}\n";
  EXPECT_EQ(Psctl({"job", "submit", "--spec", spec_path}, &out), 2) << out;
  EXPECT_NE(out.find("trainin"), std::string::npos) << out;
  EXPECT_EQ(Psctl({"job", "status", "job-404"}, &out), 1) << out;
  EXPECT_NE(out.find("NOT_FOUND"), std::string::npos) << out;
}

// Bad pushes sent with the ordinary generated stub (plain protobuf encoding) to a real server.
class ServerBadInputTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = TempDir("server");
    ASSERT_TRUE(server_
                    .Start({Runfile("server/ps_server"), "--host=127.0.0.1", "--port=0",
                            "--port_file=" + dir_ + "/port", "--metrics_port=0",
                            // Hostile requests that happen to be valid CreateShards stay small.
                            "--max_memory_bytes=67108864", "--checkpoint_root=" + dir_},
                           dir_ + "/server.log")
                    .ok());
    absl::StatusOr<int> port = WaitForPortFile(dir_ + "/port", absl::Seconds(30), &server_);
    ASSERT_TRUE(port.ok()) << port.status();
    stub_ = ParameterServer::NewStub(CreateChannel(absl::StrCat("127.0.0.1:", *port)));
    CreateShardsRequest create;
    create.set_job_id("job");
    create.set_consistency(SYNC);
    create.mutable_optimizer()->set_kind(SGD);
    create.mutable_optimizer()->set_learning_rate(0.1f);
    create.set_num_workers(2);
    ShardSpec* shard = create.add_shards();
    shard->mutable_table()->set_name("w");
    shard->mutable_table()->add_shape(64);
    shard->mutable_table()->mutable_init()->set_kind(InitSpec::NORMAL);
    shard->mutable_table()->mutable_init()->set_scale(1.0f);
    shard->mutable_range()->set_end(64);
    grpc::ClientContext context;
    CreateShardsResponse response;
    ASSERT_TRUE(stub_->CreateShards(&context, create, &response).ok());
  }

  grpc::Status Push(const PushRequest& request) {
    grpc::ClientContext context;
    PushResponse response;
    return stub_->Push(&context, request, &response);
  }

  PushRequest Good(uint64_t step = 1, uint32_t rank = 0) {
    PushRequest p;
    p.set_job_id("job");
    p.set_table("w");
    p.mutable_range()->set_end(64);
    p.set_dtype(FP32);
    p.set_step(step);
    p.set_worker_rank(rank);
    std::vector<float> g(64, 0.5f);
    p.set_values(std::string(reinterpret_cast<const char*>(g.data()), g.size() * 4));
    return p;
  }

  std::string PullValues(uint64_t step = 1) {
    PullRequest r;
    r.set_job_id("job");
    r.set_table("w");
    r.mutable_range()->set_end(64);
    r.set_dtype(FP32);
    r.set_step(step);
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    PullResponse response;
    grpc::Status status = stub_->Pull(&context, r, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    EXPECT_EQ(response.values().size(), 64u * 4);
    return response.values();
  }

  std::string dir_;
  Subprocess server_;
  std::unique_ptr<ParameterServer::Stub> stub_;
};

// Before: the exception this threw escaped the handler, and gRPC answered UNIMPLEMENTED with an
// empty message.
TEST_F(ServerBadInputTest, OversizedCreateShardsIsInvalidArgumentWithAMessage) {
  CreateShardsRequest create;
  create.set_job_id("big");
  create.set_consistency(SYNC);
  create.mutable_optimizer()->set_kind(SGD);
  create.mutable_optimizer()->set_learning_rate(0.1f);
  create.set_num_workers(4000000000u);
  ShardSpec* shard = create.add_shards();
  shard->mutable_table()->set_name("w");
  shard->mutable_table()->add_shape(64);
  shard->mutable_range()->set_end(64);
  for (int attempt = 0; attempt < 2; ++attempt) {
    grpc::ClientContext context;
    CreateShardsResponse response;
    grpc::Status status = stub_->CreateShards(&context, create, &response);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << status.error_message();
    EXPECT_FALSE(status.error_message().empty());
    create.set_num_workers(1);  // Then a 2^40-element table.
    shard->mutable_table()->set_shape(0, uint64_t{1} << 40);
    shard->mutable_range()->set_end(uint64_t{1} << 40);
  }
}

// Resident memory of process `pid`, in bytes.
uint64_t ResidentBytes(pid_t pid) {
  std::istringstream status(ReadFile(absl::StrCat("/proc/", pid, "/status")));
  std::string line;
  while (std::getline(status, line)) {
    if (absl::StartsWith(line, "VmRSS:")) return std::stoull(line.substr(6)) * 1024;
  }
  return 0;
}

// The attack: a Push whose `values` field declares 1 GiB that the message does not carry. Before,
// the server took (and kept, in its buffer pool) a 1 GiB buffer for it.
TEST_F(ServerBadInputTest, APayloadLongerThanItsMessageTakesNoMemory) {
  PushRequest header = Good();
  header.clear_values();
  std::string bytes = header.SerializeAsString() + std::string("\x7a\x80\x80\x80\x80\x04", 6);
  grpc::Slice slice(bytes);
  grpc::ByteBuffer request(&slice, 1);
  grpc::ByteBuffer response;
  grpc::GenericStub stub(
      CreateChannel(absl::StrCat("127.0.0.1:", std::stoi(ReadFile(dir_ + "/port")))));
  grpc::ClientContext context;
  absl::Notification done;
  grpc::Status status;
  stub.UnaryCall(&context, "/psrv.ParameterServer/Push", grpc::StubOptions(), &request, &response,
                 [&](grpc::Status s) {
                   status = std::move(s);
                   done.Notify();
                 });
  done.WaitForNotification();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << status.error_message();
  EXPECT_LT(ResidentBytes(server_.pid()), uint64_t{512} << 20);
}

// Hostile requests over gRPC (mutated valid requests, random bytes; every method but DropJob and
// SaveCheckpoint, whose valid requests would drop the job or write files) against a real
// ps_server: it stays up, every refusal has a message, and its memory stays flat (measured after
// a warm-up: gRPC and malloc settle during the first requests), and no refused request changed the
// stored parameters (read back after every request).
TEST_F(ServerBadInputTest, HostileRequestsNeitherCrashNorLeak) {
  grpc::GenericStub stub(
      CreateChannel(absl::StrCat("127.0.0.1:", std::stoi(ReadFile(dir_ + "/port")))));
  ProtoMutator mutator(/*seed=*/13, {"job", "w"});
  PullRequest pull;
  pull.set_job_id("job");
  pull.set_table("w");
  pull.mutable_range()->set_end(64);
  pull.set_dtype(FP32);
  pull.set_step(1);
  CreateShardsRequest create;
  create.set_job_id("other");
  create.set_consistency(ASYNC);
  create.mutable_optimizer()->set_kind(SGD);
  create.set_num_workers(1);
  ShardSpec* shard = create.add_shards();
  shard->mutable_table()->set_name("w");
  shard->mutable_table()->add_shape(64);
  shard->mutable_range()->set_end(64);
  ReplicateRequest replicate;
  replicate.set_job_id("job");
  replicate.set_table("w");
  *replicate.mutable_range() = pull.range();
  replicate.set_version(1);
  replicate.set_gradient(Good().values());
  InstallShardRequest install;
  install.set_job_id("job");
  install.set_num_workers(2);
  *install.mutable_shard() = *shard;
  install.mutable_shard()->set_role(BACKUP);
  install.set_state(std::string(300, 'x'));
  CommitStepRequest commit;
  commit.set_job_id("job");
  commit.set_step(1);
  commit.set_grad_scale(1.0f);
  SetWorkersRequest set_workers;
  set_workers.set_job_id("job");
  set_workers.add_from_step(1);
  set_workers.add_from_step(1);
  PromoteRequest promote;
  promote.set_job_id("job");
  AddBackupRequest add_backup;
  add_backup.set_job_id("job");
  add_backup.set_table("w");
  add_backup.set_backup_address("127.0.0.1:1");
  GetStatusRequest get_status;
  get_status.set_job_id("job");
  const PushRequest push = Good();
  PushBatchRequest push_batch;  // Two items: the payload is theirs, one after the other.
  for (uint64_t step : {1, 2}) {
    PushRequest item = Good(step);
    item.clear_values();
    *push_batch.add_pushes() = item;
  }
  push_batch.set_values(Good().values() + Good().values());
  PullBatchRequest pull_batch;
  *pull_batch.add_pulls() = pull;
  *pull_batch.add_pulls() = pull;
  const std::vector<std::pair<const char*, const google::protobuf::Message*>> methods = {
      {"/psrv.ParameterServer/Push", &push},
      {"/psrv.ParameterServer/Pull", &pull},
      {"/psrv.ParameterServer/PushBatch", &push_batch},
      {"/psrv.ParameterServer/PullBatch", &pull_batch},
      {"/psrv.ParameterServer/CreateShards", &create},
      {"/psrv.ParameterServer/Replicate", &replicate},
      {"/psrv.ParameterServer/InstallShard", &install},
      {"/psrv.ParameterServer/CommitStep", &commit},
      {"/psrv.ParameterServer/SetWorkers", &set_workers},
      {"/psrv.ParameterServer/Promote", &promote},
      {"/psrv.ParameterServer/AddBackup", &add_backup},
      {"/psrv.Admin/GetStatus", &get_status}};
  // What the job's parameters are now (or why they cannot be read).
  auto stored = [&] {
    PullRequest r = pull;
    r.set_step(1);
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    PullResponse response;
    grpc::Status status = stub_->Pull(&context, r, &response);
    return status.ok() ? response.values() : absl::StrCat("error ", status.error_code());
  };
  std::string parameters = stored();
  int refused = 0, without_message = 0, changed_by_refused = 0;
  auto send = [&](int count) {
    for (int i = 0; i < count; ++i) {
      const auto& [method, base] = methods[i % methods.size()];
      std::string bytes;
      if (mutator.OneIn(4)) {
        bytes = mutator.RandomBytes(512);
      } else {
        std::unique_ptr<google::protobuf::Message> request(base->New());
        request->CopyFrom(*base);
        mutator.MutateFields(request.get());
        bytes = request->SerializeAsString();
        if (mutator.OneIn(2)) mutator.MutateBytes(&bytes);
      }
      grpc::Slice slice(bytes);
      grpc::ByteBuffer request(&slice, 1), response;
      grpc::ClientContext context;
      // Short: a valid pull of a step to come waits for it until the deadline.
      context.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(250));
      absl::Notification done;
      grpc::Status status;
      stub.UnaryCall(&context, method, grpc::StubOptions(), &request, &response,
                     [&](grpc::Status s) {
                       status = std::move(s);
                       done.Notify();
                     });
      done.WaitForNotification();
      if (!status.ok()) ++refused;
      // (DEADLINE_EXCEEDED: a pull that validly waits for a step that does not come.)
      if (!status.ok() && status.error_message().empty() &&
          status.error_code() != grpc::StatusCode::DEADLINE_EXCEEDED) {
        ++without_message;
        ADD_FAILURE() << method << ": code " << status.error_code() << " without a message";
      }
      // A refused request changes no stored parameter (an accepted one may: a mutated request
      // can be a valid one).
      std::string now = stored();
      if (!status.ok() && now != parameters && ++changed_by_refused <= 5) {
        ADD_FAILURE() << method << " was refused (code " << status.error_code() << ": "
                      << status.error_message() << ") but changed the stored parameters";
      }
      parameters = std::move(now);
    }
  };
  send(1000);  // Warm-up.
  const uint64_t warm = ResidentBytes(server_.pid());
  send(FuzzIterations(10000));
  const uint64_t after = ResidentBytes(server_.pid());
  std::cout << "hostile requests: " << refused << " refused; server RSS " << (warm >> 20)
            << " MiB after the warm-up, " << (after >> 20) << " MiB after the run\n";
  ASSERT_TRUE(server_.running()) << "logs in " << dir_;
  EXPECT_EQ(without_message, 0);
  EXPECT_EQ(changed_by_refused, 0);
  EXPECT_LT(after, warm + (uint64_t{50} << 20)) << "server memory grew";
}

TEST_F(ServerBadInputTest, EachBadPushGetsItsCodeAndChangesNothing) {
  const std::string before = PullValues();
  struct Case {
    std::string name;
    PushRequest request;
    grpc::StatusCode code;
  };
  std::vector<Case> cases;
  PushRequest r = Good();
  r.set_job_id("unknown");
  cases.push_back({"unknown job", r, grpc::StatusCode::NOT_FOUND});
  r = Good();
  r.set_table("unknown");
  cases.push_back({"unknown table", r, grpc::StatusCode::NOT_FOUND});
  r = Good();
  r.mutable_values()->resize(63 * 4);
  cases.push_back({"wrong length", r, grpc::StatusCode::INVALID_ARGUMENT});
  r = Good();
  r.set_dtype(FP16);
  cases.push_back({"fp16", r, grpc::StatusCode::UNIMPLEMENTED});
  r = Good();
  r.set_dtype(BF16);  // 4 bytes per value: the length of FP32, not BF16.
  cases.push_back({"bf16 with fp32 length", r, grpc::StatusCode::INVALID_ARGUMENT});
  r = Good();
  r.set_dtype(DTYPE_UNSPECIFIED);
  cases.push_back({"no dtype", r, grpc::StatusCode::INVALID_ARGUMENT});
  r = Good();
  const float nan = std::nanf("");
  r.mutable_values()->replace(8, 4, reinterpret_cast<const char*>(&nan), 4);
  cases.push_back({"NaN", r, grpc::StatusCode::INVALID_ARGUMENT});
  r = Good();
  const float inf = INFINITY;
  r.mutable_values()->replace(0, 4, reinterpret_cast<const char*>(&inf), 4);
  cases.push_back({"Inf", r, grpc::StatusCode::INVALID_ARGUMENT});
  r = Good();
  r.set_dtype(BF16);  // A NaN in the last BF16 value (checked as the payload is copied).
  r.mutable_values()->resize(64 * 2);
  r.mutable_values()->replace(126, 2, "\xc0\x7f", 2);
  cases.push_back({"BF16 NaN", r, grpc::StatusCode::INVALID_ARGUMENT});
  cases.push_back({"step ahead", Good(2), grpc::StatusCode::FAILED_PRECONDITION});
  cases.push_back({"step 0", Good(0), grpc::StatusCode::INVALID_ARGUMENT});
  cases.push_back({"rank out of range", Good(1, 9), grpc::StatusCode::INVALID_ARGUMENT});
  // Sparse pushes (PushRequest.indices): two values for offsets 3 and 5 unless said otherwise.
  auto sparse = [&](std::vector<uint32_t> indices, size_t values) {
    PushRequest p = Good();
    for (uint32_t i : indices) p.add_indices(i);
    p.mutable_values()->resize(values * 4);
    return p;
  };
  const grpc::StatusCode invalid = grpc::StatusCode::INVALID_ARGUMENT;
  cases.push_back({"sparse: repeated offset", sparse({3, 3}, 2), invalid});
  cases.push_back({"sparse: decreasing", sparse({5, 3}, 2), invalid});
  cases.push_back({"sparse: outside", sparse({3, 64}, 2), invalid});
  cases.push_back({"sparse: length", sparse({3, 5}, 3), invalid});
  for (const Case& c : cases) {
    grpc::Status status = Push(c.request);
    EXPECT_EQ(status.error_code(), c.code) << c.name << ": " << status.error_message();
    EXPECT_FALSE(status.error_message().empty()) << c.name;
  }
  // Still serving, and nothing changed.
  EXPECT_EQ(PullValues(), before);

  // A full step, then the same step again is stale.
  ASSERT_TRUE(Push(Good(1, 0)).ok());
  EXPECT_EQ(Push(Good(1, 0)).error_code(), grpc::StatusCode::ALREADY_EXISTS);
  ASSERT_TRUE(Push(Good(1, 1)).ok());
  const std::string after = PullValues(2);
  EXPECT_NE(after, before);
  EXPECT_EQ(Push(Good(1, 1)).error_code(), grpc::StatusCode::ALREADY_EXISTS);  // Applied: a resend.
  EXPECT_EQ(PullValues(2), after);
  EXPECT_TRUE(server_.running());
}

}  // namespace
}  // namespace psrv

namespace psrv {
namespace {

JobSpec SmallGptJob(uint32_t servers, uint32_t workers, uint64_t steps) {
  JobSpec spec;
  spec.set_name("gpt-integration");
  spec.set_num_servers(servers);
  spec.set_num_workers(workers);
  spec.mutable_data()->set_path(Runfile("tests/testdata/shakespeare_200k.txt"));
  ModelSpec* model = spec.mutable_model();
  model->set_kind("gpt");
  model->set_tokenizer("char");
  model->set_layers(2);
  model->set_heads(4);
  model->set_width(64);
  model->set_context(32);
  TrainingSpec* t = spec.mutable_training();
  t->set_steps(steps);
  t->set_batch_size(8);
  t->mutable_optimizer()->set_kind(ADAMW);
  t->mutable_optimizer()->set_learning_rate(3e-3f);
  t->mutable_optimizer()->set_beta2(0.99f);
  t->mutable_optimizer()->set_weight_decay(0.1f);
  t->set_grad_clip(1.0f);
  t->set_report_every(1);
  t->set_eval_every(50);
  t->set_sample_length(60);
  ApplyJobDefaults(&spec);
  EXPECT_TRUE(FillVocabulary(&spec).ok());
  return spec;
}

// The overlapped step (pushes leaving during backward, the next pulls right behind them, forward
// awaiting each layer, the clipping factor sent after the pushes) gives the parameters of the
// same steps run one after another, bit for bit: 2 servers holding the big tables one shard per
// layer, 2 workers, dropout, gradient clipping, bf16 on the wire.
TEST_F(ClusterTest, GptOverlappedStepsEqualSequentialStepsBitForBit) {
  JobSpec spec = SmallGptJob(2, 2, 10);
  spec.mutable_model()->set_width(128);  // Per-layer slices of 16K+ keys: cut per layer.
  spec.mutable_model()->set_context(16);
  spec.mutable_model()->set_dropout(0.1f);
  spec.mutable_training()->set_batch_size(4);
  spec.mutable_training()->set_grad_clip(0.5f);  // Clipped at every step.
  spec.mutable_training()->set_sample_length(0);
  ASSERT_EQ(spec.training().wire_dtype(), BF16);
  std::vector<float> parameters[2];
  for (int overlap = 0; overlap < 2; ++overlap) {
    StartCluster(2, 2, {overlap ? "--overlap=on" : "--overlap=off"});
    JobStatus status = RunJob(spec);
    ASSERT_EQ(status.state(), SUCCEEDED) << status.message() << "\nlogs in " << log_dir_;
    int fc_shards = 0;
    for (const ShardAssignment& shard : status.shard_map().shards()) {
      fc_shards += shard.table() == "h.mlp.fc.weight";
    }
    EXPECT_EQ(fc_shards, 2) << "one shard per layer";
    parameters[overlap] = ServedParameters(status);
    cluster_->Stop();
  }
  ASSERT_FALSE(parameters[0].empty());
  EXPECT_EQ(CountDifferent(parameters[0], parameters[1]), 0u) << "of " << parameters[0].size();
}

// Data another tool tokenized: the test text's characters as ids (sorted distinct bytes), in an
// llm.c shard for training and one for validation (data.format llmc_bin, tokenizer "ids").
TEST_F(ClusterTest, AGptTrainsOnTokenIdsFromAnLlmcShard) {
  StartCluster(1, 2);  // A worker per job (each runs one).
  std::ifstream in(Runfile("tests/testdata/shakespeare_200k.txt"), std::ios::binary);
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  int id_of[256];
  std::fill(std::begin(id_of), std::end(id_of), -1);
  int vocab = 0;
  for (int b = 0; b < 256; ++b) {
    if (text.find(static_cast<char>(b)) != std::string::npos) id_of[b] = vocab++;
  }
  auto write_shard = [&](const std::string& path, size_t begin, size_t end) {
    int32_t header[256] = {};
    header[0] = 20240520;
    header[1] = 1;
    header[2] = static_cast<int32_t>(end - begin);
    std::ofstream out(path, std::ios::binary);
    out.write(reinterpret_cast<const char*>(header), sizeof(header));
    for (size_t i = begin; i < end; ++i) {
      const uint16_t id = static_cast<uint16_t>(id_of[static_cast<unsigned char>(text[i])]);
      out.write(reinterpret_cast<const char*>(&id), sizeof(id));
    }
  };
  const std::string train = log_dir_ + "/train.bin", val = log_dir_ + "/val.bin";
  write_shard(train, 0, text.size() * 9 / 10);
  write_shard(val, text.size() * 9 / 10, text.size());
  JobSpec spec = SmallGptJob(1, 1, 120);
  spec.mutable_model()->set_tokenizer("ids");
  spec.mutable_model()->clear_vocabulary();
  spec.mutable_model()->set_vocab_size(static_cast<uint32_t>(vocab));
  spec.mutable_data()->set_path(train);
  spec.mutable_data()->set_format("llmc_bin");
  spec.mutable_data()->set_validation_path(val);
  ASSERT_TRUE(ValidateJobSpec(spec).ok()) << ValidateJobSpec(spec);
  JobStatus status = RunJob(spec);
  ASSERT_EQ(status.state(), SUCCEEDED) << status.message() << "\nlogs in " << log_dir_;
  // Fewer points than the 120 steps: a progress report is skipped while the one before it still
  // awaits its reply (worker/progress_reporter.cc), which a loaded machine makes common.
  ASSERT_GE(status.loss_history_size(), 10);
  const float first = status.loss_history(0).loss();
  EXPECT_NEAR(first, std::log(static_cast<float>(vocab)), 0.3f);
  EXPECT_LT(status.val_loss(), first - 0.8f);
  // The sample is ids, as numbers.
  EXPECT_FALSE(status.sample().empty());
  EXPECT_EQ(status.sample().find_first_not_of("0123456789 "), std::string::npos)
      << status.sample();
  // A shard whose header does not fit its size fails the job, naming the file.
  write_shard(train, 0, 1000);
  std::ofstream(train, std::ios::binary | std::ios::app) << "xx";
  status = RunJob(spec);
  EXPECT_EQ(status.state(), FAILED);
  EXPECT_NE(status.message().find(train), std::string::npos) << status.message();
}

// `spec` with a BPE tokenizer of `pieces`, trained on its data as psctl trains it, and valid.
absl::Status UseBpe(uint32_t pieces, JobSpec* spec) {
  spec->mutable_model()->set_tokenizer("bpe");
  spec->mutable_model()->clear_vocabulary();
  spec->mutable_model()->set_vocab_size(pieces);
  const absl::Status filled = FillVocabulary(spec);
  return filled.ok() ? ValidateJobSpec(*spec) : filled;
}

TEST_F(ClusterTest, AGptTrainsOnBpeSubwordsAndExportsItsTokenizer) {
  StartCluster(1, 2);
  JobSpec spec = SmallGptJob(1, 2, 120);
  const absl::Status bpe = UseBpe(512, &spec);
  ASSERT_TRUE(bpe.ok()) << bpe;
  JobStatus status = RunJob(spec);
  ASSERT_EQ(status.state(), SUCCEEDED) << status.message() << "\nlogs in " << log_dir_;
  ASSERT_GE(status.loss_history_size(), 10);  // reports can be skipped, see above
  const float first = status.loss_history(0).loss();
  EXPECT_NEAR(first, std::log(512.0f), 0.3f);
  EXPECT_LT(status.val_loss(), first - 0.8f);
  // The sample is text the BPE model decoded: letters and spaces, not ids.
  EXPECT_NE(status.sample().find_first_of("etaoinshr"), std::string::npos) << status.sample();

  // psctl generate encodes the prompt and decodes the continuation with the job's model.
  std::string out;
  ASSERT_EQ(Psctl({"generate", status.job_id(), "--prompt", "ROMEO:", "--length", "20", "--seed",
                   "3", "--json"},
                  &out),
            0)
      << out;
  nlohmann::json generated = nlohmann::json::parse(out);
  EXPECT_EQ(generated.at("prompt").get<std::string>(), "ROMEO:");
  EXPECT_GE(generated.at("text").get<std::string>().size(), 20u);  // Every piece is >= 1 byte.

  // psctl export writes the tokenizer beside the tensors, as a SentencePiece model file.
  const std::string file = log_dir_ + "/bpe.safetensors";
  ASSERT_EQ(Psctl({"export", status.job_id(), "--out", file, "--json"}, &out), 0) << out;
  const std::string tokenizer_file = log_dir_ + "/bpe.tokenizer.model";
  EXPECT_EQ(nlohmann::json::parse(out).at("tokenizer_model").get<std::string>(), tokenizer_file);
  EXPECT_EQ(ReadFile(tokenizer_file), spec.model().vocabulary());
}

// Untied embeddings: wte is a sparse table, cut at row boundaries over the two servers; the
// worker pushes and pulls only the rows of the tokens in its batch, the job trains, and it trains
// exactly as it does with whole-table pushes and pulls.
TEST_F(ClusterTest, AnUntiedGptPushesOnlyTheEmbeddingRowsOfItsBatch) {
  StartCluster(2, 1, {}, false, {}, /*worker_max_jobs=*/0);  // Its /metrics are read after the job.
  JobSpec spec = SmallGptJob(2, 1, 80);
  spec.mutable_model()->set_tie_embeddings(false);
  const absl::Status bpe = UseBpe(1024, &spec);
  ASSERT_TRUE(bpe.ok()) << bpe;
  JobStatus status = RunJob(spec);
  ASSERT_EQ(status.state(), SUCCEEDED) << status.message() << "\nlogs in " << log_dir_;
  const float first = status.loss_history(0).loss();
  EXPECT_NEAR(first, std::log(1024.0f), 0.3f);
  EXPECT_LT(status.val_loss(), first - 0.8f);
  bool lm_head = false;
  for (const TableSpec& table : status.shard_map().tables()) lm_head |= table.name() == "lm_head";
  EXPECT_TRUE(lm_head);
  for (const ShardAssignment& shard : status.shard_map().shards()) {
    if (shard.table() == "wte") {
      EXPECT_EQ(shard.range().begin() % 64, 0u);  // Width 64.
    }
  }

  // Bytes per step: BF16 values of every table but wte, and of at most 8 x 32 rows of wte (the
  // batch's distinct tokens), with a 4-byte id per row.
  double bytes = 0, steps = 0;
  for (const ParsedMetrics& metrics : ReadWorkerMetrics(cluster_.get())) {
    bytes += metrics.Sum("psrv_worker_pushed_bytes_total", {});
    steps += metrics.Sum("psrv_worker_steps_total", {});
  }
  ASSERT_GT(steps, 0);
  const double wte = 1024.0 * 64 * 2;
  const std::vector<TableSpec> tables(status.shard_map().tables().begin(),
                                      status.shard_map().tables().end());
  const double dense = static_cast<double>(TotalElements(tables)) * 2;
  const double per_step = bytes / steps;
  EXPECT_LE(per_step, dense - wte + 8 * 32 * (64 * 2 + 4)) << "dense " << dense;
  EXPECT_GT(per_step, dense - wte);  // Some rows were sent.
  // Pulls: only the batch's rows of wte, but on validation steps (every 50) and at the end.
  double pulled = 0;
  for (const ParsedMetrics& metrics : ReadWorkerMetrics(cluster_.get())) {
    pulled += metrics.Sum("psrv_worker_pulled_bytes_total", {});
  }
  EXPECT_LT(pulled / steps, dense - wte / 2) << "dense " << dense;

  // The same job pulling and pushing the whole table trains the same, bit for bit.
  StartCluster(2, 1, {"--row_sparse_pulls=false", "--row_sparse_pushes=false"});
  JobStatus whole = RunJob(spec);
  ASSERT_EQ(whole.state(), SUCCEEDED) << whole.message() << "\nlogs in " << log_dir_;
  // (Progress reports may be coalesced: compare the steps both curves have.)
  std::map<uint64_t, float> sparse_curve;
  for (const LossPoint& p : status.loss_history()) sparse_curve[p.step()] = p.loss();
  int compared = 0;
  for (const LossPoint& p : whole.loss_history()) {
    auto same = sparse_curve.find(p.step());
    if (same == sparse_curve.end()) continue;
    EXPECT_EQ(p.loss(), same->second) << "step " << p.step();
    ++compared;
  }
  EXPECT_GE(compared, 20);  // Of 80 steps; under load each run skips some reports.
  EXPECT_EQ(whole.loss(), status.loss());
  EXPECT_EQ(whole.val_loss(), status.val_loss());
  EXPECT_EQ(whole.sample(), status.sample());
  // And with overlap on (the next step's row pulls start during backward).
  StartCluster(2, 1, {"--overlap=on"});
  JobStatus overlapped = RunJob(spec);
  ASSERT_EQ(overlapped.state(), SUCCEEDED) << overlapped.message() << "\nlogs in " << log_dir_;
  EXPECT_EQ(overlapped.val_loss(), status.val_loss());
  EXPECT_EQ(overlapped.loss(), status.loss());
}

TEST_F(ClusterTest, GptShortRunStartsNearLnVocabularyAndLossFalls) {
  StartCluster(2, 2);  // One worker for this job, one for the job started from its export.
  const JobSpec spec = SmallGptJob(2, 1, 150);
  const int vocab = VocabSize(spec.model());
  ASSERT_GT(vocab, 30);  // Shakespeare's characters.
  JobStatus status = RunJob(spec);
  ASSERT_EQ(status.state(), SUCCEEDED) << status.message() << "\nlogs in " << log_dir_;
#ifdef PSRV_WORKERS_ON_SIMULATED_GPU
  // --define=cuda=simt: the worker's model was the CUDA one, on the simulated GPU.
  std::stringstream worker_logs;
  for (const char* name : {"/worker-0.log", "/worker-1.log"}) {
    worker_logs << std::ifstream(log_dir_ + name).rdbuf();
  }
  EXPECT_NE(worker_logs.str().find("model on cuda:0 (psrv SIMT simulator (CPU))"),
            std::string::npos)
      << "see the worker logs in " << log_dir_;
#endif
  // Reports can be skipped while the one before awaits its reply; step 1's is always sent.
  ASSERT_GE(status.loss_history_size(), 20);
  // Step 1's loss is the initial model's: uniform over the vocabulary.
  const float first = status.loss_history(0).loss();
  EXPECT_EQ(status.loss_history(0).step(), 1u);
  EXPECT_NEAR(first, std::log(static_cast<float>(vocab)), 0.3f);
  float last10 = 0;
  for (int i = status.loss_history_size() - 10; i < status.loss_history_size(); ++i) {
    last10 += status.loss_history(i).loss() / 10;
  }
  EXPECT_LT(last10, first - 1.0f) << "first " << first << " last " << last10;
  ASSERT_GE(status.val_history_size(), 3);  // Steps 51, 101 and the end.
  EXPECT_LT(status.val_loss(), first - 0.8f);
  EXPECT_FALSE(status.sample().empty());

  // psctl generate samples from the job's current parameters.
  std::string out;
  ASSERT_EQ(Psctl({"generate", status.job_id(), "--prompt", "ROMEO:", "--length", "40", "--seed",
                   "3", "--json"},
                  &out),
            0)
      << out;
  nlohmann::json generated = nlohmann::json::parse(out);
  EXPECT_EQ(generated.at("prompt").get<std::string>(), "ROMEO:");
  EXPECT_EQ(generated.at("text").get<std::string>().size(), 40u);

  // psctl export writes safetensors that Python's safetensors library reads: every table with its
  // name, shape and values.
  const std::string file = log_dir_ + "/model.safetensors";
  ASSERT_EQ(Psctl({"export", status.job_id(), "--out", file, "--json"}, &out), 0) << out;
  absl::StatusOr<std::unique_ptr<ParameterClient>> client =
      ParameterClient::Create(status.shard_map(), 0);
  ASSERT_TRUE(client.ok());
  std::vector<float> served((*client)->num_parameters());
  ASSERT_TRUE((*client)->Pull(0, served.data(), absl::Seconds(10)).ok());
  const std::string script = log_dir_ + "/read.py";
  std::ofstream(script) << R"(import json, sys
from safetensors import safe_open
with safe_open(sys.argv[1], framework="numpy") as f:
    out = {"metadata": f.metadata(),
           "tensors": {k: [list(f.get_tensor(k).shape), float(f.get_tensor(k).astype("float64").sum())]
                       for k in f.keys()}}
print(json.dumps(out))
)";
  Subprocess python;
  const std::string python_out = log_dir_ + "/read.out";
  ASSERT_TRUE(python.Start({"/usr/bin/python3", script, file}, python_out).ok());
  absl::StatusOr<int> code = python.Wait(absl::Seconds(60));
  const std::string read = ReadFile(python_out);
  if (code.ok() && *code != 0 && read.find("No module named 'safetensors'") != std::string::npos) {
    GTEST_SKIP() << "SKIPPED: Python's safetensors is not installed (bash scripts/setup.sh)";
  }
  ASSERT_TRUE(code.ok() && *code == 0) << read;
  nlohmann::json parsed = nlohmann::json::parse(read.substr(read.find('{')));
  EXPECT_EQ(parsed.at("metadata").at("job_id").get<std::string>(), status.job_id());
  size_t offset = 0;
  for (const TableSpec& table : status.shard_map().tables()) {
    const auto& entry = parsed.at("tensors").at(table.name());
    std::vector<uint64_t> shape = entry.at(0).get<std::vector<uint64_t>>();
    EXPECT_EQ(shape, std::vector<uint64_t>(table.shape().begin(), table.shape().end()));
    const size_t n = TableElements(table);
    double sum = 0;
    for (size_t i = 0; i < n; ++i) sum += served[offset + i];
    offset += n;
    EXPECT_NEAR(entry.at(1).get<double>(), sum, 1e-6 * n + 1e-9) << table.name();
  }

  // A new job starts from the exported file: its very first loss is the trained model's, not
  // ln(vocabulary).
  JobSpec resumed = SmallGptJob(2, 1, 3);
  resumed.set_name("from-export");
  resumed.set_init_from(file);
  JobStatus second = RunJob(resumed);
  ASSERT_EQ(second.state(), SUCCEEDED) << second.message() << "\nlogs in " << log_dir_;
  ASSERT_GE(second.loss_history_size(), 1);
  EXPECT_LT(second.loss_history(0).loss(), first - 0.8f);
  EXPECT_NEAR(second.loss_history(0).loss(), last10, 0.3f);
}

// The first SYNC step with 2 workers equals, within float tolerance, the step computed here:
// the same initial parameters, each worker's gradient on its own data with its own seed stream
// (dropout included), clipped, averaged, and one SGD step. (SGD, because AdamW's first step,
// lr * g / (|g| + eps), magnifies the last-bit differences of near-zero gradients that different
// OpenBLAS kernels give; server/apply_test.cc checks AdamW against a reference.)
TEST_F(ClusterTest, FirstSyncStepEqualsInProcessMeanGradientStep) {
  StartCluster(2, 2);
  JobSpec spec = SmallGptJob(2, 2, 1);
  spec.mutable_model()->set_dropout(0.1f);
  spec.mutable_training()->mutable_optimizer()->set_kind(SGD);
  spec.mutable_training()->mutable_optimizer()->set_learning_rate(0.5f);
  spec.mutable_training()->set_sample_length(0);
  // Exact arithmetic to compare with (a BF16 wire rounds parameters and gradients).
  spec.mutable_training()->set_wire_dtype(FP32);
  JobStatus status = RunJob(spec);
  ASSERT_EQ(status.state(), SUCCEEDED) << status.message() << "\nlogs in " << log_dir_;

  // What the servers hold now.
  const std::vector<float> served = ServedParameters(status);

  // The same step in-process.
  const JobSpec& s = status.spec();
  const std::vector<TableSpec> tables = *ModelTables(s.model(), s.training().seed());
  std::vector<float> expected = InitializeTables(tables);
  std::unique_ptr<Tokenizer> tokenizer = *CreateTokenizer(s.model());
  std::unique_ptr<LanguageModel> model = *CreateLanguageModel(s.model(), tokenizer->vocab_size());
  ASSERT_EQ(model->num_parameters(), served.size());
  const ByteToToken vocabulary = ByteToTokenTable(*tokenizer);
  std::vector<float> mean(expected.size(), 0.0f);
  for (uint32_t rank = 0; rank < 2; ++rank) {
    absl::StatusOr<Corpus> corpus = Corpus::Load(s.data().path(), rank, 2, Split::kTrain,
                                                 s.data().validation_fraction());
    ASSERT_TRUE(corpus.ok()) << corpus.status();
    GradientComputer computer(model.get(), &*corpus, &vocabulary,
                              static_cast<int>(s.training().batch_size()),
                              s.training().seed() * 1000003 + rank);
    std::vector<float> grads(expected.size());
    computer.Compute(1, expected.data(), grads.data());
    double norm = 0;
    for (float g : grads) norm += static_cast<double>(g) * g;
    const float clip = GradientClipScale(std::sqrt(norm), s.training().grad_clip());
    for (float& g : grads) g *= clip;
    // The servers add the pushes in arrival order, then scale: the same sum here, either order
    // being exact to rounding.
    for (size_t i = 0; i < grads.size(); ++i) mean[i] += grads[i];
  }
  for (float& g : mean) g *= 0.5f;
  size_t offset = 0;
  for (const TableSpec& table : tables) {
    const size_t n = TableElements(table);
    Optimizer::Create(s.training().optimizer(), table, n)
        ->Apply(mean.data() + offset, expected.data() + offset, 0, n, /*t=*/1);
    offset += n;
  }
  size_t differ = 0;
  double worst = 0;
  for (size_t i = 0; i < served.size(); ++i) {
    const double diff = std::abs(static_cast<double>(served[i]) - expected[i]);
    worst = std::max(worst, diff);
    if (diff > 1e-5) ++differ;
  }
  // Gradients are O(1e-2) after clipping to norm 1 over ~100k weights, so the step moves weights by
  // ~5e-3: a sum instead of a mean, a missing clip or one worker's gradient alone would show far
  // above 1e-5.
  EXPECT_EQ(differ, 0u) << "worst difference " << worst;
}

}  // namespace
}  // namespace psrv
