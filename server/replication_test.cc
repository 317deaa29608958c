// Replication between real ParameterServer services over gRPC on 127.0.0.1: a primary and its
// backup, fail-over (Promote), a new backup catching up (AddBackup), a dead backup, and bad
// requests to every replication rpc.
#include <atomic>
#include <cmath>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/client_context.h>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "common/channel.h"
#include "common/grpc_server.h"
#include "gtest/gtest.h"
#include "proto/parameter_server.grpc.pb.h"
#include "server/aggregate.h"
#include "server/checkpoint.h"
#include "server/parameter_service.h"
#include "server/shard_store.h"

namespace psrv {
namespace {

constexpr uint64_t kSize = 1000;
constexpr uint32_t kWorkers = 2;

// One parameter server: a store behind a real gRPC server on a free port.
class Node {
 public:
  explicit Node(const std::string& name) {
    service_ = std::make_unique<ParameterService>(&store_);
    absl::StatusOr<RunningServer> server = StartGrpcServer("127.0.0.1", 0, {service_.get()}, "");
    EXPECT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
    address_ = absl::StrCat("127.0.0.1:", server_.port);
    store_.SetIdentity(name, address_);
    stub_ = ParameterServer::NewStub(CreateChannel(address_));
  }
  ~Node() { Stop(); }

  // The server dies (its store stays, unreachable).
  void Stop() {
    if (server_.server == nullptr) return;
    server_.server->Shutdown(std::chrono::system_clock::now());
    server_.server.reset();
  }

  const std::string& address() const { return address_; }
  ShardStore& store() { return store_; }
  ParameterServer::Stub* stub() { return stub_.get(); }
  ShardStatus Shard() {
    ServerStatus status = store_.Status("job");
    EXPECT_EQ(status.shards_size(), 1);
    return status.shards_size() > 0 ? status.shards(0) : ShardStatus();
  }

 private:
  ShardStore store_;
  std::unique_ptr<ParameterService> service_;
  RunningServer server_;
  std::string address_;
  std::unique_ptr<ParameterServer::Stub> stub_;
};

std::unique_ptr<grpc::ClientContext> Context() {
  auto context = std::make_unique<grpc::ClientContext>();
  context->set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(20)));
  return context;
}

TableSpec Table() {
  TableSpec t;
  t.set_name("w");
  t.add_shape(kSize);
  t.set_weight_decay(true);
  t.mutable_init()->set_kind(InitSpec::NORMAL);
  t.mutable_init()->set_scale(0.1f);
  t.mutable_init()->set_seed(11);
  return t;
}

KeyRange Range(uint64_t begin = 0, uint64_t end = kSize) {
  KeyRange r;
  r.set_begin(begin);
  r.set_end(end);
  return r;
}

CreateShardsRequest Create(ShardRole role, const std::string& other_address) {
  CreateShardsRequest r;
  r.set_job_id("job");
  r.set_consistency(SYNC);
  r.set_num_workers(kWorkers);
  OptimizerConfig* o = r.mutable_optimizer();
  o->set_kind(ADAMW);
  o->set_learning_rate(0.01f);
  o->set_beta1(0.9f);
  o->set_beta2(0.95f);
  o->set_epsilon(1e-8f);
  o->set_weight_decay(0.1f);
  o->set_warmup_steps(2);
  o->set_decay_steps(10);
  ShardSpec* s = r.add_shards();
  *s->mutable_table() = Table();
  *s->mutable_range() = Range();
  s->set_role(role);
  if (role == PRIMARY) s->set_backup_address(other_address);
  if (role == BACKUP) s->set_primary_address(other_address);
  return r;
}

// The job's shard on `primary`, replicated to `backup`.
void CreateReplicated(Node* primary, Node* backup) {
  ASSERT_TRUE(backup->store().CreateShards(Create(BACKUP, primary->address())).ok());
  ASSERT_TRUE(primary->store().CreateShards(Create(PRIMARY, backup->address())).ok());
}

std::vector<float> Gradient(uint64_t step, uint32_t rank) {
  std::vector<float> g(kSize);
  for (uint64_t i = 0; i < kSize; ++i) {
    g[i] = std::sin(0.01f * static_cast<float>(i + 31 * step + 7 * rank));
  }
  return g;
}

std::string Bytes(const std::vector<float>& values) {
  return std::string(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(float));
}

grpc::Status Push(Node* node, uint64_t step, uint32_t rank, uint64_t* version = nullptr) {
  PushRequest request;
  request.set_job_id("job");
  request.set_table("w");
  *request.mutable_range() = Range();
  request.set_dtype(FP32);
  request.set_step(step);
  request.set_worker_rank(rank);
  request.set_values(Bytes(Gradient(step, rank)));
  PushResponse response;
  grpc::Status status = node->stub()->Push(Context().get(), request, &response);
  if (version != nullptr) *version = response.version();
  return status;
}

// Both workers push `step`.
void Step(Node* node, uint64_t step) {
  for (uint32_t rank = 0; rank < kWorkers; ++rank) {
    grpc::Status status = Push(node, step, rank);
    ASSERT_TRUE(status.ok()) << "step " << step << " rank " << rank << ": "
                             << status.error_message();
  }
}

grpc::Status Pull(Node* node, uint64_t step, PullResponse* response,
                  const KeyRange& range = Range()) {
  PullRequest request;
  request.set_job_id("job");
  request.set_table("w");
  *request.mutable_range() = range;
  request.set_dtype(FP32);
  request.set_step(step);
  return node->stub()->Pull(Context().get(), request, response);
}

// The shard's values and optimizer state, through SaveCheckpoint.
ShardCheckpoint Checkpoint(Node* node) {
  SaveCheckpointRequest request;
  request.set_job_id("job");
  request.set_directory(::testing::TempDir() + "/replication_test/" + node->address());
  SaveCheckpointResponse response;
  grpc::Status status = node->stub()->SaveCheckpoint(Context().get(), request, &response);
  EXPECT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(response.files_size(), 1);
  if (response.files_size() != 1) return ShardCheckpoint();
  absl::StatusOr<ShardCheckpoint> checkpoint = ReadShardCheckpoint(response.files(0).path());
  EXPECT_TRUE(checkpoint.ok()) << checkpoint.status();
  return checkpoint.ok() ? *checkpoint : ShardCheckpoint();
}

void ExpectBitIdentical(const ShardCheckpoint& a, const ShardCheckpoint& b) {
  EXPECT_EQ(a.version, b.version);
  ASSERT_EQ(a.values.size(), b.values.size());
  EXPECT_EQ(std::memcmp(a.values.data(), b.values.data(), a.values.size() * sizeof(float)), 0);
  ASSERT_EQ(a.optimizer_state.size(), 2u);  // AdamW's moments.
  ASSERT_EQ(b.optimizer_state.size(), 2u);
  for (size_t s = 0; s < 2; ++s) {
    ASSERT_EQ(a.optimizer_state[s].size(), b.optimizer_state[s].size());
    EXPECT_EQ(std::memcmp(a.optimizer_state[s].data(), b.optimizer_state[s].data(),
                          a.optimizer_state[s].size() * sizeof(float)),
              0);
  }
}

grpc::Status Promote(Node* node, const std::string& failed, PromoteResponse* response,
                     const std::string& new_backup = "", const std::string& job = "job") {
  PromoteRequest request;
  request.set_job_id(job);
  request.set_failed_address(failed);
  request.set_new_backup_address(new_backup);
  return node->stub()->Promote(Context().get(), request, response);
}

grpc::Status AddBackup(Node* node, const std::string& backup, AddBackupResponse* response,
                       const KeyRange& range = Range(), const std::string& job = "job") {
  AddBackupRequest request;
  request.set_job_id(job);
  request.set_table("w");
  *request.mutable_range() = range;
  request.set_backup_address(backup);
  return node->stub()->AddBackup(Context().get(), request, response);
}

TEST(ReplicationTest, FailOverToTheBackupThenANewBackupCatchesUp) {
  Node a("server-a"), b("server-b"), c("server-c");
  CreateReplicated(&a, &b);
  EXPECT_EQ(a.Shard().role(), PRIMARY);
  EXPECT_EQ(a.Shard().backup_address(), b.address());
  EXPECT_EQ(b.Shard().role(), BACKUP);
  EXPECT_EQ(b.Shard().primary_address(), a.address());

  // Workers train on A; every step reaches B before it is acknowledged.
  for (uint64_t step = 1; step <= 3; ++step) Step(&a, step);
  EXPECT_EQ(a.Shard().version(), 3u);
  EXPECT_EQ(b.Shard().version(), 3u);
  PullResponse from_a;
  ASSERT_TRUE(Pull(&a, 4, &from_a).ok());
  const ShardCheckpoint a_at_3 = Checkpoint(&a);
  // B refuses workers, and is not checkpointed (it is a copy).
  PullResponse refused;
  EXPECT_EQ(Pull(&b, 4, &refused).error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(Push(&b, 4, 0).error_code(), grpc::StatusCode::UNAVAILABLE);
  SaveCheckpointRequest save;
  save.set_job_id("job");
  save.set_directory(::testing::TempDir() + "/replication_test/backup");
  SaveCheckpointResponse saved;
  ASSERT_TRUE(b.stub()->SaveCheckpoint(Context().get(), save, &saved).ok());
  EXPECT_EQ(saved.files_size(), 0);

  // Worker 0 pushed step 4 to A; A dies before worker 1 does.
  ASSERT_TRUE(Push(&a, 4, 0).ok());
  a.Stop();

  // The coordinator promotes B: nothing acknowledged is lost.
  PromoteResponse promoted;
  ASSERT_TRUE(Promote(&b, a.address(), &promoted).ok());
  ASSERT_EQ(promoted.shards_size(), 1);
  EXPECT_EQ(promoted.shards(0).table(), "w");
  EXPECT_EQ(promoted.shards(0).range().end(), kSize);
  EXPECT_EQ(promoted.shards(0).version(), 3u);
  EXPECT_EQ(promoted.shards(0).backup_address(), "");
  PromoteResponse again;
  ASSERT_TRUE(Promote(&b, a.address(), &again).ok());  // Idempotent.
  EXPECT_EQ(again.SerializeAsString(), promoted.SerializeAsString());
  EXPECT_EQ(b.Shard().role(), PRIMARY);
  ExpectBitIdentical(a_at_3, Checkpoint(&b));
  PullResponse from_b;
  ASSERT_TRUE(Pull(&b, 4, &from_b).ok());
  EXPECT_EQ(from_b.version(), 3u);
  EXPECT_EQ(from_b.values(), from_a.values());

  // Training goes on on B (step 4 pushed again by both workers), unreplicated for now.
  for (uint64_t step = 4; step <= 5; ++step) Step(&b, step);
  EXPECT_EQ(b.Shard().backup_address(), "");

  // A new backup, C, catches up mid-training.
  AddBackupResponse added;
  grpc::Status status = AddBackup(&b, c.address(), &added);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(added.version(), 5u);
  EXPECT_EQ(b.Shard().backup_address(), c.address());
  EXPECT_EQ(c.Shard().role(), BACKUP);
  EXPECT_EQ(c.Shard().primary_address(), b.address());
  EXPECT_EQ(c.Shard().version(), 5u);
  for (uint64_t step = 6; step <= 7; ++step) Step(&b, step);
  EXPECT_EQ(c.Shard().version(), 7u);
  ASSERT_TRUE(AddBackup(&b, c.address(), &added).ok());  // Already there: nothing to do.
  EXPECT_EQ(added.version(), 7u);
  const ShardCheckpoint b_at_7 = Checkpoint(&b);

  // B dies too; C takes over with everything B acknowledged.
  b.Stop();
  ASSERT_TRUE(Promote(&c, b.address(), &promoted).ok());
  EXPECT_EQ(promoted.shards(0).version(), 7u);
  ExpectBitIdentical(b_at_7, Checkpoint(&c));
  Step(&c, 8);
  EXPECT_EQ(c.Shard().version(), 8u);
}

TEST(ReplicationTest, PromoteCanGiveThePromotedShardsANewBackup) {
  Node a("server-a"), b("server-b"), c("server-c");
  CreateReplicated(&a, &b);
  Step(&a, 1);
  a.Stop();
  PromoteResponse promoted;
  ASSERT_TRUE(Promote(&b, a.address(), &promoted, c.address()).ok());
  ASSERT_EQ(promoted.shards_size(), 1);
  EXPECT_EQ(promoted.shards(0).version(), 1u);
  EXPECT_EQ(promoted.shards(0).backup_address(), c.address());
  EXPECT_EQ(promoted.shards(0).backup_error(), "");
  EXPECT_EQ(c.Shard().version(), 1u);
  Step(&b, 2);
  EXPECT_EQ(c.Shard().version(), 2u);
  // A new backup that cannot be reached: promoted anyway, unreplicated, and said why.
  Node d("server-d"), e("server-e");
  ASSERT_TRUE(e.store().CreateShards(Create(BACKUP, d.address())).ok());
  d.Stop();
  PromoteResponse unreplicated;
  ASSERT_TRUE(Promote(&e, d.address(), &unreplicated, "127.0.0.1:1").ok());
  ASSERT_EQ(unreplicated.shards_size(), 1);
  EXPECT_EQ(unreplicated.shards(0).backup_address(), "");
  EXPECT_NE(unreplicated.shards(0).backup_error().find("UNAVAILABLE"), std::string::npos)
      << unreplicated.shards(0).backup_error();
  EXPECT_EQ(e.Shard().role(), PRIMARY);
}

// A lost worker (SetWorkers, sent by the coordinator to every server of the job): the backup
// takes the new set, the step it completes on the primary is replicated, and both the promoted
// backup and a backup installed later wait only for the remaining worker.
TEST(ReplicationTest, WorkerSetsReachBackupsAndSurviveFailOvers) {
  Node a("server-a"), b("server-b"), c("server-c");
  CreateReplicated(&a, &b);
  Step(&a, 1);
  ASSERT_TRUE(Push(&a, 2, 0).ok());
  SetWorkersRequest lost;
  lost.set_job_id("job");
  lost.add_from_step(0);
  lost.add_from_step(SyncAggregator::kNever);
  SetWorkersResponse response;
  ASSERT_TRUE(b.stub()->SetWorkers(Context().get(), lost, &response).ok());
  EXPECT_EQ(b.Shard().version(), 1u);  // A backup applies nothing itself.
  ASSERT_TRUE(a.stub()->SetWorkers(Context().get(), lost, &response).ok());
  PullResponse pulled;
  ASSERT_TRUE(Pull(&a, 3, &pulled).ok());  // Step 2 is acknowledged: the backup has it.
  EXPECT_EQ(pulled.version(), 2u);
  EXPECT_EQ(b.Shard().version(), 2u);
  const ShardCheckpoint a_at_2 = Checkpoint(&a);

  // A dies; B, promoted with C as its new backup, completes step 3 with worker 0 alone.
  a.Stop();
  PromoteResponse promoted;
  ASSERT_TRUE(Promote(&b, a.address(), &promoted, c.address()).ok());
  ExpectBitIdentical(a_at_2, Checkpoint(&b));
  EXPECT_EQ(Push(&b, 3, 1).error_code(), grpc::StatusCode::FAILED_PRECONDITION);  // Rank 1 left.
  uint64_t version = 0;
  ASSERT_TRUE(Push(&b, 3, 0, &version).ok());
  EXPECT_EQ(version, 3u);
  EXPECT_EQ(c.Shard().version(), 3u);

  // B dies too; C got B's worker set with its copy.
  b.Stop();
  ASSERT_TRUE(Promote(&c, b.address(), &promoted).ok());
  ASSERT_TRUE(Push(&c, 4, 0, &version).ok());
  EXPECT_EQ(version, 4u);
}

TEST(ReplicationTest, ADeadBackupIsDroppedAndTrainingContinues) {
  Node a("server-a"), b("server-b"), c("server-c");
  CreateReplicated(&a, &b);
  Step(&a, 1);
  b.Stop();
  const absl::Time start = absl::Now();
  Step(&a, 2);
  Step(&a, 3);
  EXPECT_LT(absl::Now() - start, absl::Seconds(10));  // At most two deadlines, once.
  ShardStatus status = a.Shard();
  EXPECT_EQ(status.version(), 3u);
  EXPECT_TRUE(status.backup_lost());
  EXPECT_EQ(status.backup_address(), "");
  EXPECT_NE(status.backup_error().find(b.address()), std::string::npos) << status.backup_error();
  // The coordinator gives it a new backup.
  AddBackupResponse added;
  ASSERT_TRUE(AddBackup(&a, c.address(), &added).ok());
  EXPECT_EQ(added.version(), 3u);
  status = a.Shard();
  EXPECT_FALSE(status.backup_lost());
  EXPECT_EQ(status.backup_address(), c.address());
  EXPECT_NE(status.backup_error(), "");  // The history stays.
}

// Each server holds half of the table as PRIMARY and the other half as the other's BACKUP; four
// ASYNC workers push chunks to both at once. Replication answers travel on the same few gRPC
// callback threads as the pushes that wait for them: nothing may wait while holding one.
TEST(ReplicationTest, ServersBackingEachOtherUpUnderConcurrentPushes) {
  constexpr uint32_t kAsyncWorkers = 4;
  constexpr int kPushes = 40;
  Node a("server-a"), b("server-b");
  auto create = [](const std::string& self, const std::string& other, bool first_half) {
    CreateShardsRequest r = Create(PRIMARY, other);
    r.set_consistency(ASYNC);
    r.set_num_workers(kAsyncWorkers);
    *r.mutable_shards(0)->mutable_range() = first_half ? Range(0, kSize / 2) : Range(kSize / 2, kSize);
    ShardSpec* backup = r.add_shards();
    *backup = r.shards(0);
    *backup->mutable_range() = first_half ? Range(kSize / 2, kSize) : Range(0, kSize / 2);
    backup->set_role(BACKUP);
    backup->clear_backup_address();
    backup->set_primary_address(other);
    return r;
  };
  ASSERT_TRUE(a.store().CreateShards(create(a.address(), b.address(), true)).ok());
  ASSERT_TRUE(b.store().CreateShards(create(b.address(), a.address(), false)).ok());
  ASSERT_TRUE(a.store().CreateShards(create(a.address(), b.address(), true)).ok());  // Idempotent.
  std::vector<std::thread> workers;
  std::atomic<int> failures{0};
  for (uint32_t rank = 0; rank < kAsyncWorkers; ++rank) {
    workers.emplace_back([&, rank] {
      for (int i = 0; i < kPushes; ++i) {
        for (Node* node : {&a, &b}) {
          const uint64_t begin = node == &a ? 0 : kSize / 2;
          // Chunks of 100 keys, all in flight at once.
          std::vector<std::unique_ptr<grpc::ClientContext>> contexts;
          std::vector<PushResponse> responses(5);
          std::vector<grpc::Status> statuses(5);
          std::vector<PushRequest> requests(5);
          absl::Mutex mu;
          int pending = 5;
          for (int c = 0; c < 5; ++c) {
            PushRequest& request = requests[c];
            request.set_job_id("job");
            request.set_table("w");
            *request.mutable_range() = Range(begin + 100 * c, begin + 100 * (c + 1));
            request.set_dtype(FP32);
            request.set_worker_rank(rank);
            request.set_values(Bytes(std::vector<float>(100, 0.001f * (rank + 1))));
            contexts.push_back(Context());
            node->stub()->async()->Push(contexts.back().get(), &request, &responses[c],
                                        [&, c](grpc::Status status) {
                                          absl::MutexLock lock(&mu);
                                          statuses[c] = status;
                                          --pending;
                                        });
          }
          absl::MutexLock lock(&mu);
          mu.Await(absl::Condition(+[](int* n) { return *n == 0; }, &pending));
          for (const grpc::Status& status : statuses) failures += !status.ok();
          PullResponse pulled;
          failures += !Pull(node, 0, &pulled, Range(begin, begin + kSize / 2)).ok();
        }
      }
    });
  }
  for (std::thread& t : workers) t.join();
  EXPECT_EQ(failures, 0);
  for (Node* node : {&a, &b}) {
    ServerStatus status = node->store().Status("job");
    ASSERT_EQ(status.shards_size(), 2);
    for (const ShardStatus& shard : status.shards()) {
      EXPECT_EQ(shard.version(), uint64_t{kAsyncWorkers} * kPushes * 5) << shard.ShortDebugString();
      EXPECT_FALSE(shard.backup_lost()) << shard.backup_error();
    }
  }
}

std::string State(uint64_t begin, uint64_t end, uint64_t version) {
  ShardCheckpoint c;
  c.job_id = "job";
  c.table = "w";
  c.range = Range(begin, end);
  c.version = version;
  c.values.assign(end - begin, 0.5f);
  c.optimizer_state.assign(2, std::vector<float>(end - begin, 0.0f));
  return *EncodeShardCheckpoint(c);
}

InstallShardRequest Install(const std::string& primary, const std::string& state,
                            const KeyRange& range = Range()) {
  const CreateShardsRequest create = Create(BACKUP, primary);
  InstallShardRequest r;
  r.set_job_id(create.job_id());
  r.set_consistency(create.consistency());
  *r.mutable_optimizer() = create.optimizer();
  r.set_num_workers(create.num_workers());
  *r.mutable_shard() = create.shards(0);
  *r.mutable_shard()->mutable_range() = range;
  r.set_state(state);
  return r;
}

TEST(ReplicationTest, BadReplicationRequestsAreRefusedAndChangeNothing) {
  Node a("server-a"), b("server-b");
  CreateReplicated(&a, &b);
  Step(&a, 1);
  using grpc::StatusCode;

  // Replicate (to B's backup, and to A's primary).
  auto replicate = [](Node* node, auto change) {
    ReplicateRequest r;
    r.set_job_id("job");
    r.set_table("w");
    *r.mutable_range() = Range();
    r.set_version(2);
    r.set_gradient(Bytes(Gradient(9, 0)));
    change(&r);
    ReplicateResponse response;
    grpc::Status status = node->stub()->Replicate(Context().get(), r, &response);
    return std::make_pair(status.error_code(), response.version());
  };
  EXPECT_EQ(replicate(&b, [](ReplicateRequest* r) { r->set_job_id("nope"); }).first,
            StatusCode::NOT_FOUND);
  EXPECT_EQ(replicate(&b, [](ReplicateRequest* r) { r->set_table("nope"); }).first,
            StatusCode::NOT_FOUND);
  EXPECT_EQ(replicate(&b, [](ReplicateRequest* r) { *r->mutable_range() = Range(0, 2 * kSize); })
                .first,
            StatusCode::NOT_FOUND);
  EXPECT_EQ(replicate(&b, [](ReplicateRequest* r) { *r->mutable_range() = Range(5, 5); }).first,
            StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(replicate(&b, [](ReplicateRequest* r) { r->set_version(0); }).first,
            StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(replicate(&b, [](ReplicateRequest* r) { r->mutable_gradient()->resize(12); }).first,
            StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(replicate(&b,
                      [](ReplicateRequest* r) {
                        std::vector<float> g = Gradient(9, 0);
                        g[kSize - 1] = INFINITY;
                        r->set_gradient(Bytes(g));
                      })
                .first,
            StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(replicate(&b, [](ReplicateRequest* r) { r->set_version(3); }).first,
            StatusCode::FAILED_PRECONDITION);  // A gap.
  EXPECT_EQ(replicate(&b, [](ReplicateRequest* r) { r->set_version(1); }),
            std::make_pair(StatusCode::OK, uint64_t{1}));  // A resend: nothing done.
  EXPECT_EQ(replicate(&a, [](ReplicateRequest*) {}).first, StatusCode::ABORTED);  // A PRIMARY.

  // InstallShard.
  auto install = [](Node* node, InstallShardRequest request) {
    InstallShardResponse response;
    return node->stub()->InstallShard(Context().get(), request, &response).error_code();
  };
  const std::string good = State(0, kSize, 1);
  InstallShardRequest request = Install(a.address(), good);
  request.mutable_shard()->set_role(PRIMARY);
  EXPECT_EQ(install(&b, request), StatusCode::INVALID_ARGUMENT);
  request = Install("", good);
  EXPECT_EQ(install(&b, request), StatusCode::INVALID_ARGUMENT);
  request = Install(a.address(), good);
  request.set_num_workers(0);
  EXPECT_EQ(install(&b, request), StatusCode::INVALID_ARGUMENT);
  request = Install(a.address(), good);
  request.add_from_step(0);  // One entry; the job has two workers.
  EXPECT_EQ(install(&b, request), StatusCode::INVALID_ARGUMENT);
  std::string corrupt = good;
  corrupt[corrupt.size() / 2] ^= 0x40;
  EXPECT_EQ(install(&b, Install(a.address(), corrupt)), StatusCode::DATA_LOSS);
  EXPECT_EQ(install(&b, Install(a.address(), State(0, 500, 1))), StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(install(&b, Install(a.address(), State(0, 500, 1), Range(0, 500))),
            StatusCode::ALREADY_EXISTS);
  EXPECT_EQ(install(&a, Install(b.address(), good)), StatusCode::FAILED_PRECONDITION);

  // AddBackup (to A's primary, and to B's backup).
  AddBackupResponse added;
  EXPECT_EQ(AddBackup(&a, b.address(), &added, Range(), "nope").error_code(),
            StatusCode::NOT_FOUND);
  EXPECT_EQ(AddBackup(&a, b.address(), &added, Range(0, 500)).error_code(),
            StatusCode::NOT_FOUND);
  EXPECT_EQ(AddBackup(&a, "", &added).error_code(), StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(AddBackup(&a, a.address(), &added).error_code(), StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(AddBackup(&a, "127.0.0.1:1", &added).error_code(), StatusCode::UNAVAILABLE);
  EXPECT_EQ(AddBackup(&b, a.address(), &added).error_code(), StatusCode::FAILED_PRECONDITION);

  // Promote (on B).
  PromoteResponse promoted;
  EXPECT_EQ(Promote(&b, "", &promoted).error_code(), StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(Promote(&b, "127.0.0.1:9", &promoted).error_code(), StatusCode::NOT_FOUND);
  EXPECT_EQ(Promote(&b, a.address(), &promoted, "", "nope").error_code(), StatusCode::NOT_FOUND);
  EXPECT_EQ(Promote(&b, a.address(), &promoted, b.address()).error_code(),
            StatusCode::INVALID_ARGUMENT);

  // CreateShards with inconsistent replication fields.
  CreateShardsRequest create = Create(BACKUP, "");
  create.set_job_id("other");
  EXPECT_EQ(b.store().CreateShards(create).code(), absl::StatusCode::kInvalidArgument);
  create = Create(BACKUP, a.address());
  create.set_job_id("other");
  create.mutable_shards(0)->set_backup_address("10.0.0.9:1");
  EXPECT_EQ(b.store().CreateShards(create).code(), absl::StatusCode::kInvalidArgument);
  create = Create(PRIMARY, b.address());
  create.set_job_id("other");
  create.mutable_shards(0)->set_primary_address("10.0.0.9:1");
  EXPECT_EQ(b.store().CreateShards(create).code(), absl::StatusCode::kInvalidArgument);
  create = Create(PRIMARY, b.address());
  create.set_job_id("other");
  EXPECT_EQ(b.store().CreateShards(create).code(),
            absl::StatusCode::kInvalidArgument);  // Its own address as its backup.
  EXPECT_EQ(b.store().Status("other").shards_size(), 0);

  // Nothing changed: the roles and versions are as they were, the next step is replicated as
  // usual, and the backup is still bit-identical.
  EXPECT_EQ(a.store().Status("").shards_size(), 1);
  EXPECT_EQ(b.store().Status("").shards_size(), 1);
  EXPECT_EQ(a.Shard().backup_address(), b.address());
  EXPECT_EQ(b.Shard().role(), BACKUP);
  EXPECT_EQ(b.Shard().version(), 1u);
  Step(&a, 2);
  EXPECT_FALSE(a.Shard().backup_lost());
  EXPECT_EQ(b.Shard().version(), 2u);
  const ShardCheckpoint a_at_2 = Checkpoint(&a);
  a.Stop();
  ASSERT_TRUE(Promote(&b, a.address(), &promoted).ok());
  ExpectBitIdentical(a_at_2, Checkpoint(&b));
}

}  // namespace
}  // namespace psrv
