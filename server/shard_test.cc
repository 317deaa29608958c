// Shard replication with a fake transport: what a primary sends its backup and when, what the
// backup does with it, and what happens when the backup fails.
#include "server/shard.h"

#include <cmath>
#include <cstring>
#include <deque>
#include <optional>
#include <vector>

#include "gtest/gtest.h"
#include "server/aggregate.h"
#include "server/test_requests.h"

namespace psrv {
namespace {

constexpr uint64_t kSize = 64;
constexpr char kPrimaryAddress[] = "10.0.0.1:7071";

ShardConfig Config(ConsistencyMode mode, uint32_t workers, OptimizerKind kind = ADAMW) {
  ShardConfig c;
  c.job_id = "job";
  c.table.set_name("w");
  c.table.add_shape(kSize);
  c.table.set_weight_decay(true);
  c.table.mutable_init()->set_kind(InitSpec::NORMAL);
  c.table.mutable_init()->set_scale(0.5f);
  c.table.mutable_init()->set_seed(7);
  c.range.set_begin(0);
  c.range.set_end(kSize);
  c.consistency = mode;
  c.num_workers = workers;
  c.optimizer.set_kind(kind);
  c.optimizer.set_learning_rate(0.01f);
  c.optimizer.set_beta1(0.9f);
  c.optimizer.set_beta2(0.95f);
  c.optimizer.set_epsilon(1e-8f);
  c.optimizer.set_weight_decay(0.1f);
  c.optimizer.set_warmup_steps(3);
  c.optimizer.set_decay_steps(20);
  c.optimizer.set_min_learning_rate(0.001f);
  return c;
}

std::shared_ptr<Shard> Backup(const ShardConfig& config) {
  ShardReplication replication;
  replication.role = BACKUP;
  replication.primary_address = kPrimaryAddress;
  return std::make_shared<Shard>(config, ShardEnv(), replication);
}

// A backup server in memory: applies what it is sent to `shard` (if any) and answers, at once or,
// while held, when released. Failures can be scripted. Single-threaded tests only.
class FakeBackup : public Replicator {
 public:
  FakeBackup(std::shared_ptr<Shard> shard, std::string address = "10.0.0.2:7071")
      : shard_(std::move(shard)), address_(std::move(address)) {}

  const std::string& address() const override { return address_; }

  void Replicate(const ReplicateRequest& request, std::shared_ptr<PooledBuffer> gradient,
                 Done done) override {
    sent.push_back(request);
    const float* floats = reinterpret_cast<const float*>(gradient->data());
    gradients.emplace_back(floats, floats + gradient->size() / sizeof(float));
    if (hold) {
      held_.push_back([this, request, gradient, done] { Answer(request, gradient, done); });
      return;
    }
    Answer(request, gradient, done);
  }

  void Install(const InstallShardRequest& request, std::string state, Done done) override {
    installs.push_back(request);
    if (hold_installs) {
      held_.push_back([this, request, state, done] { Answer(request, state, done); });
      return;
    }
    Answer(request, state, done);
  }

  // Answers the held calls, in order, and those they lead to.
  void Release() {
    while (!held_.empty()) {
      std::function<void()> answer = std::move(held_.front());
      held_.pop_front();
      answer();
    }
  }

  std::shared_ptr<Shard> shard() const { return shard_; }

  bool hold = false;           // Replicate answers wait for Release.
  bool hold_installs = false;  // Install answers wait for Release.
  std::deque<absl::Status> failures;  // The next answers, before any is applied.
  std::vector<ReplicateRequest> sent;
  std::vector<std::vector<float>> gradients;  // Of each Replicate sent.
  std::vector<InstallShardRequest> installs;

 private:
  // Answers with the next scripted failure, if there is one.
  bool Failed(const Done& done) {
    if (failures.empty()) return false;
    absl::Status failure = failures.front();
    failures.pop_front();
    done(failure);
    return true;
  }

  // As ShardStore::InstallShard.
  void Answer(const InstallShardRequest& request, const std::string& state, const Done& done) {
    if (Failed(done)) return;
    ShardConfig config;
    config.job_id = request.job_id();
    config.table = request.shard().table();
    config.range = request.shard().range();
    config.consistency = request.consistency();
    config.optimizer = request.optimizer();
    config.num_workers = request.num_workers();
    ShardReplication replication;
    replication.role = request.shard().role();
    replication.primary_address = request.shard().primary_address();
    shard_ = std::make_shared<Shard>(config, ShardEnv(), replication);
    absl::StatusOr<ShardCheckpoint> checkpoint = DecodeShardCheckpoint(state, "install");
    absl::Status status =
        checkpoint.ok() ? shard_->Restore(std::move(*checkpoint)) : checkpoint.status();
    if (status.ok() && request.from_step_size() > 0) {
      status = shard_->RestoreWorkers(
          std::vector<uint64_t>(request.from_step().begin(), request.from_step().end()));
    }
    shard_->RestoreAppliedPushes(std::vector<uint64_t>(request.applied_pushes().begin(),
                                                       request.applied_pushes().end()));
    done(status);
  }

  void Answer(const ReplicateRequest& request, const std::shared_ptr<PooledBuffer>& gradient,
              const Done& done) {
    if (Failed(done)) return;
    absl::Status status;
    if (shard_ != nullptr) {
      status = shard_->ApplyReplicated(request, reinterpret_cast<const float*>(gradient->data()))
                   .status();
    }
    done(status);
  }

  std::shared_ptr<Shard> shard_;
  const std::string address_;
  std::deque<std::function<void()>> held_;
};

std::shared_ptr<Shard> Primary(const ShardConfig& config, std::shared_ptr<Replicator> backup) {
  ShardReplication replication;
  replication.backup = std::move(backup);
  return std::make_shared<Shard>(config, ShardEnv(), replication);
}

PushRequest PushHeader(uint64_t step, uint32_t rank, uint64_t begin = 0, uint64_t end = kSize) {
  return TestPushRequest(step, rank, begin, end);
}

PullRequest PullHeader(uint64_t step) { return TestPullRequest(step, 0, kSize); }

// A gradient that differs per key, step and worker (finite, mixed signs).
std::vector<float> Gradient(uint64_t count, uint64_t step, uint32_t rank) {
  std::vector<float> g(count);
  for (uint64_t i = 0; i < count; ++i) {
    g[i] = 0.01f * static_cast<float>((i * 7 + step * 13 + rank * 5) % 23) - 0.1f;
  }
  return g;
}

// Pushes; the answer lands in `*result` whenever it comes.
void PushTo(Shard* shard, const PushRequest& request, const std::vector<float>& gradient,
            std::optional<absl::StatusOr<uint64_t>>* result) {
  PooledBuffer payload = BufferPool::Global()->Acquire(gradient.size() * sizeof(float));
  std::memcpy(payload.data(), gradient.data(), gradient.size() * sizeof(float));
  shard->Push(request, std::move(payload),
              [result](absl::StatusOr<uint64_t> r) { *result = std::move(r); });
}

// Pushes and expects the answer at once.
absl::StatusOr<uint64_t> PushNow(Shard* shard, const PushRequest& request,
                                 const std::vector<float>& gradient) {
  std::optional<absl::StatusOr<uint64_t>> result;
  PushTo(shard, request, gradient, &result);
  if (!result.has_value()) return absl::InternalError("push not answered at once");
  return *result;
}

struct PullResult {
  absl::Status status;
  uint64_t version = 0;
  std::vector<float> values;
};

void PullFrom(Shard* shard, const PullRequest& request, std::optional<PullResult>* result) {
  shard->Pull(request, [result](absl::Status s, uint64_t v, PullPayload values) {
    PullResult r{s, v, {}};
    r.values.resize(values.size() / sizeof(float));
    if (values.size() > 0) std::memcpy(r.values.data(), values.data(), values.size());
    *result = std::move(r);
  });
}

ShardCheckpoint SnapshotNow(Shard* shard) {
  std::optional<absl::StatusOr<ShardCheckpoint>> result;
  shard->Snapshot(0, [&](absl::StatusOr<ShardCheckpoint> c) { result = std::move(c); });
  EXPECT_TRUE(result.has_value() && result->ok());
  return result.has_value() && result->ok() ? **result : ShardCheckpoint();
}

// Bit-identical values and optimizer state (memcmp: -0.0 vs 0.0 and NaN payloads count).
void ExpectIdentical(Shard* primary, Shard* backup) {
  const ShardCheckpoint a = SnapshotNow(primary);
  const ShardCheckpoint b = SnapshotNow(backup);
  EXPECT_EQ(a.version, b.version);
  ASSERT_EQ(a.values.size(), b.values.size());
  EXPECT_EQ(std::memcmp(a.values.data(), b.values.data(), a.values.size() * sizeof(float)), 0);
  ASSERT_EQ(a.optimizer_state.size(), b.optimizer_state.size());
  for (size_t s = 0; s < a.optimizer_state.size(); ++s) {
    ASSERT_EQ(a.optimizer_state[s].size(), b.optimizer_state[s].size());
    EXPECT_EQ(std::memcmp(a.optimizer_state[s].data(), b.optimizer_state[s].data(),
                          a.optimizer_state[s].size() * sizeof(float)),
              0)
        << "optimizer state " << s;
  }
}

// What waits for step 1 of a replicated SYNC primary: a pull for step 2 and a checkpoint at
// version 1, and (PullStep1, once step 1 is applied but not yet on the backup) a pull for step 1,
// which would otherwise see step 1's values.
class WaitingForStep1 {
 public:
  explicit WaitingForStep1(Shard* primary) {
    PullFrom(primary, PullHeader(2), &pull_);
    primary->Snapshot(1, [this](absl::StatusOr<ShardCheckpoint> c) { checkpoint_ = std::move(c); });
  }
  WaitingForStep1(const WaitingForStep1&) = delete;
  WaitingForStep1& operator=(const WaitingForStep1&) = delete;

  void PullStep1(Shard* primary) { PullFrom(primary, PullHeader(1), &step1_pull_); }

  void ExpectNoneAnswered() const {
    EXPECT_FALSE(pull_.has_value());
    EXPECT_FALSE(step1_pull_.has_value());
    EXPECT_FALSE(checkpoint_.has_value());
  }

  // All answered with step 1's values.
  void ExpectAllAnsweredAtStep1() const {
    ASSERT_TRUE(pull_.has_value() && pull_->status.ok());
    EXPECT_EQ(pull_->version, 1u);
    ASSERT_TRUE(step1_pull_.has_value());
    EXPECT_EQ(step1_pull_->version, 1u);
    ASSERT_TRUE(checkpoint_.has_value() && checkpoint_->ok());
    EXPECT_EQ((*checkpoint_)->version, 1u);
    EXPECT_EQ(pull_->values, (*checkpoint_)->values);
  }

 private:
  std::optional<PullResult> pull_, step1_pull_;
  std::optional<absl::StatusOr<ShardCheckpoint>> checkpoint_;
};

TEST(ShardReplicationTest, SyncStepIsReplicatedOnceWithTheMean) {
  const ShardConfig config = Config(SYNC, 2);
  auto backup = std::make_shared<FakeBackup>(Backup(config));
  auto primary = Primary(config, backup);
  const std::vector<float> g0 = Gradient(kSize, 1, 0), g1 = Gradient(kSize, 1, 1);
  ASSERT_EQ(*PushNow(primary.get(), PushHeader(1, 0), g0), 0u);
  EXPECT_TRUE(backup->sent.empty());  // Aggregated, nothing applied yet.
  ASSERT_EQ(*PushNow(primary.get(), PushHeader(1, 1), g1), 1u);
  ASSERT_EQ(backup->sent.size(), 1u);
  const ReplicateRequest& sent = backup->sent[0];
  EXPECT_EQ(sent.job_id(), "job");
  EXPECT_EQ(sent.table(), "w");
  EXPECT_EQ(sent.range().begin(), 0u);
  EXPECT_EQ(sent.range().end(), kSize);
  EXPECT_EQ(sent.version(), 1u);
  std::vector<float> mean(kSize);
  for (uint64_t i = 0; i < kSize; ++i) mean[i] = (0.0f + g0[i] + g1[i]) * (1.0f / 2.0f);
  EXPECT_EQ(backup->gradients[0], mean);
  ExpectIdentical(primary.get(), backup->shard().get());
}

TEST(ShardReplicationTest, AnAsyncPushIsReplicatedWithItsRange) {
  const ShardConfig config = Config(ASYNC, 2);
  auto backup = std::make_shared<FakeBackup>(Backup(config));
  auto primary = Primary(config, backup);
  const std::vector<float> g = Gradient(16, 1, 0);
  ASSERT_EQ(*PushNow(primary.get(), PushHeader(0, 0, 8, 24), g), 1u);
  ASSERT_EQ(backup->sent.size(), 1u);
  EXPECT_EQ(backup->sent[0].range().begin(), 8u);
  EXPECT_EQ(backup->sent[0].range().end(), 24u);
  EXPECT_EQ(backup->sent[0].version(), 1u);
  EXPECT_EQ(backup->gradients[0], g);
  ExpectIdentical(primary.get(), backup->shard().get());
}

TEST(ShardReplicationTest, AnAsyncPushSentAgainIsAppliedOnceAlsoByThePromotedBackup) {
  const ShardConfig config = Config(ASYNC, 2);
  auto backup = std::make_shared<FakeBackup>(Backup(config));
  auto primary = Primary(config, backup);
  const std::vector<float> g = Gradient(kSize, 1, 0);
  PushRequest push = PushHeader(0, 0, 0, 16);
  push.set_push_id(77);
  ASSERT_EQ(*PushNow(primary.get(), push, Gradient(16, 1, 0)), 1u);
  // The same push again (its answer was lost): answered with the version, not applied.
  ASSERT_EQ(*PushNow(primary.get(), push, Gradient(16, 1, 0)), 1u);
  EXPECT_EQ(primary->Status().duplicate_pushes(), 1u);
  EXPECT_EQ(primary->Status().pushes(), 1u);
  // The same id on other keys is another push (a step's gradient may come in several ranges).
  PushRequest rest = PushHeader(0, 0, 16, kSize);
  rest.set_push_id(77);
  ASSERT_EQ(*PushNow(primary.get(), rest, Gradient(kSize - 16, 1, 0)), 2u);
  // The primary is lost; its backup, promoted, gets the resends of both: applied already there
  // (replicated with their ids), so nothing changes.
  ASSERT_EQ(backup->sent.size(), 2u);
  EXPECT_EQ(backup->sent[0].push_id(), 77u);
  std::shared_ptr<Shard> promoted = backup->shard();
  ASSERT_EQ(promoted->Promote(), 2u);
  const ShardCheckpoint before = SnapshotNow(promoted.get());
  ASSERT_EQ(*PushNow(promoted.get(), push, Gradient(16, 1, 0)), 2u);
  ASSERT_EQ(*PushNow(promoted.get(), rest, Gradient(kSize - 16, 1, 0)), 2u);
  EXPECT_EQ(SnapshotNow(promoted.get()).values, before.values);
  EXPECT_EQ(promoted->Status().duplicate_pushes(), 2u);
  // A new push (another id) is applied; one without an id always is.
  push.set_push_id(78);
  EXPECT_EQ(*PushNow(promoted.get(), push, Gradient(16, 1, 0)), 3u);
  push.set_push_id(0);
  EXPECT_EQ(*PushNow(promoted.get(), push, Gradient(16, 1, 0)), 4u);
  EXPECT_EQ(*PushNow(promoted.get(), push, Gradient(16, 1, 0)), 5u);
}

TEST(ShardReplicationTest, TheBackupStaysBitIdenticalOverManyAdamWSteps) {
  for (ConsistencyMode mode : {SYNC, ASYNC}) {
    SCOPED_TRACE(ConsistencyMode_Name(mode));
    const ShardConfig config = Config(mode, 3);
    auto backup = std::make_shared<FakeBackup>(Backup(config));
    auto primary = Primary(config, backup);
    for (uint64_t step = 1; step <= 40; ++step) {
      for (uint32_t rank = 0; rank < 3; ++rank) {
        // Two chunks per worker; ASYNC applies each on its own.
        const std::vector<float> g = Gradient(kSize, step, rank);
        ASSERT_TRUE(PushNow(primary.get(), PushHeader(step, rank, 0, 24),
                            std::vector<float>(g.begin(), g.begin() + 24))
                        .ok());
        ASSERT_TRUE(PushNow(primary.get(), PushHeader(step, rank, 24, kSize),
                            std::vector<float>(g.begin() + 24, g.end()))
                        .ok());
      }
    }
    EXPECT_EQ(backup->sent.size(), mode == SYNC ? 40u : 240u);
    EXPECT_EQ(primary->Status().version(), backup->shard()->Status().version());
    ExpectIdentical(primary.get(), backup->shard().get());
  }
}

TEST(ShardReplicationTest, PullsPushesAndCheckpointsWaitUntilTheBackupHasTheUpdate) {
  const ShardConfig config = Config(SYNC, 2);
  auto backup = std::make_shared<FakeBackup>(Backup(config));
  auto primary = Primary(config, backup);
  backup->hold = true;
  WaitingForStep1 waiting(primary.get());
  std::optional<absl::StatusOr<uint64_t>> first, last;
  PushTo(primary.get(), PushHeader(1, 0), Gradient(kSize, 1, 0), &first);
  ASSERT_TRUE(first.has_value());  // Aggregated: answered at once.
  PushTo(primary.get(), PushHeader(1, 1), Gradient(kSize, 1, 1), &last);
  // Step 1 is applied here and sent, but the backup has not answered.
  EXPECT_EQ(backup->sent.size(), 1u);
  EXPECT_FALSE(last.has_value());
  waiting.PullStep1(primary.get());
  waiting.ExpectNoneAnswered();
  backup->Release();
  ASSERT_TRUE(last.has_value() && last->ok());
  EXPECT_EQ(**last, 1u);
  waiting.ExpectAllAnsweredAtStep1();
  ExpectIdentical(primary.get(), backup->shard().get());
}

TEST(ShardReplicationTest, AsyncPushesArrivingDuringReplicationAreAppliedInOrderAfterIt) {
  const ShardConfig config = Config(ASYNC, 2);
  auto backup = std::make_shared<FakeBackup>(Backup(config));
  auto primary = Primary(config, backup);
  backup->hold = true;
  std::optional<absl::StatusOr<uint64_t>> a, b, c;
  PushTo(primary.get(), PushHeader(0, 0, 0, 32), Gradient(32, 1, 0), &a);
  PushTo(primary.get(), PushHeader(0, 1, 16, 48), Gradient(32, 1, 1), &b);
  PushTo(primary.get(), PushHeader(0, 0, 40, 64), Gradient(24, 2, 0), &c);
  EXPECT_EQ(backup->sent.size(), 1u);  // One update in flight; the others wait for it.
  std::optional<PullResult> pull;
  PullFrom(primary.get(), PullHeader(0), &pull);
  EXPECT_FALSE(pull.has_value());
  backup->Release();
  ASSERT_TRUE(a.has_value() && b.has_value() && c.has_value());
  EXPECT_EQ(**a, 1u);
  EXPECT_EQ(**b, 2u);
  EXPECT_EQ(**c, 3u);
  ASSERT_EQ(backup->sent.size(), 3u);
  for (uint64_t v = 0; v < 3; ++v) EXPECT_EQ(backup->sent[v].version(), v + 1);
  ASSERT_TRUE(pull.has_value());
  EXPECT_EQ(pull->version, 1u);  // Answered as soon as update 1 was acknowledged.
  ExpectIdentical(primary.get(), backup->shard().get());
}

TEST(ShardReplicationTest, AnUnreachableBackupIsRetriedOnceThenDroppedAndTrainingContinues) {
  const ShardConfig config = Config(SYNC, 1);
  auto backup = std::make_shared<FakeBackup>(Backup(config));
  auto primary = Primary(config, backup);
  // One failure: sent again, and kept.
  backup->failures = {absl::UnavailableError("connection reset")};
  ASSERT_EQ(*PushNow(primary.get(), PushHeader(1, 0), Gradient(kSize, 1, 0)), 1u);
  EXPECT_EQ(backup->sent.size(), 2u);
  EXPECT_EQ(primary->Status().backup_address(), "10.0.0.2:7071");
  EXPECT_FALSE(primary->Status().backup_lost());
  ExpectIdentical(primary.get(), backup->shard().get());
  // Two: dropped; the push is still answered, and the shard goes on without a backup.
  backup->failures = {absl::DeadlineExceededError("slow"), absl::DeadlineExceededError("slow")};
  ASSERT_EQ(*PushNow(primary.get(), PushHeader(2, 0), Gradient(kSize, 2, 0)), 2u);
  EXPECT_EQ(backup->sent.size(), 4u);
  ShardStatus status = primary->Status();
  EXPECT_EQ(status.backup_address(), "");
  EXPECT_TRUE(status.backup_lost());
  EXPECT_NE(status.backup_error().find("10.0.0.2:7071: DEADLINE_EXCEEDED: slow"), std::string::npos)
      << status.backup_error();
  EXPECT_GT(status.backup_error_ms(), 0);
  ASSERT_EQ(*PushNow(primary.get(), PushHeader(3, 0), Gradient(kSize, 3, 0)), 3u);
  EXPECT_EQ(backup->sent.size(), 4u);
  std::optional<PullResult> pull;
  PullFrom(primary.get(), PullHeader(4), &pull);
  ASSERT_TRUE(pull.has_value());
  EXPECT_EQ(pull->version, 3u);
}

TEST(ShardReplicationTest, ABackupRefusingAnUpdateIsDroppedAtOnce) {
  const ShardConfig config = Config(ASYNC, 1);
  auto backup = std::make_shared<FakeBackup>(Backup(config));
  auto primary = Primary(config, backup);
  backup->failures = {absl::FailedPreconditionError("gap")};
  ASSERT_EQ(*PushNow(primary.get(), PushHeader(0, 0), Gradient(kSize, 1, 0)), 1u);
  EXPECT_EQ(backup->sent.size(), 1u);  // Not retried: sending it again would not help.
  EXPECT_TRUE(primary->Status().backup_lost());
}

TEST(ShardReplicationTest, APrimaryWhoseBackupWasPromotedStopsAcknowledging) {
  // The coordinator failed this primary over (it thought its server lost): the backup answers
  // ABORTED. The update must not be acknowledged, nor anything after it.
  const ShardConfig config = Config(SYNC, 1);
  auto backup = std::make_shared<FakeBackup>(Backup(config));
  auto primary = Primary(config, backup);
  ASSERT_EQ(*PushNow(primary.get(), PushHeader(1, 0), Gradient(kSize, 1, 0)), 1u);
  backup->failures = {absl::AbortedError("is a PRIMARY here")};
  EXPECT_EQ(PushNow(primary.get(), PushHeader(2, 0), Gradient(kSize, 1, 0)).status().code(),
            absl::StatusCode::kUnavailable);
  EXPECT_EQ(PushNow(primary.get(), PushHeader(3, 0), Gradient(kSize, 1, 0)).status().code(),
            absl::StatusCode::kUnavailable);
  std::optional<PullResult> pull;
  PullFrom(primary.get(), PullHeader(2), &pull);
  ASSERT_TRUE(pull.has_value());
  EXPECT_EQ(pull->status.code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(pull->status.message().find("failed over"), std::string::npos) << pull->status;
}

TEST(ShardReplicationTest, ABackupAppliesUpdatesInOrderOnlyAndIgnoresResends) {
  const ShardConfig config = Config(ASYNC, 1);
  auto backup = Backup(config);
  auto primary = Primary(config, nullptr);
  const std::vector<float> g = Gradient(kSize, 1, 0);
  ReplicateRequest update;
  update.set_job_id("job");
  update.set_table("w");
  *update.mutable_range() = config.range;
  update.set_version(2);
  // A gap: FAILED_PRECONDITION, nothing applied.
  EXPECT_EQ(backup->ApplyReplicated(update, g.data()).status().code(),
            absl::StatusCode::kFailedPrecondition);
  update.set_version(1);
  ASSERT_EQ(*backup->ApplyReplicated(update, g.data()), 1u);
  const ShardCheckpoint once = SnapshotNow(backup.get());
  // A resend: OK, nothing done.
  ASSERT_EQ(*backup->ApplyReplicated(update, g.data()), 1u);
  EXPECT_EQ(SnapshotNow(backup.get()).values, once.values);
  // NaN: INVALID_ARGUMENT, nothing applied.
  std::vector<float> bad = g;
  bad[5] = std::nanf("");
  update.set_version(2);
  EXPECT_EQ(backup->ApplyReplicated(update, bad.data()).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(SnapshotNow(backup.get()).version, 1u);
  // A primary takes no Replicate.
  update.set_version(1);
  EXPECT_EQ(primary->ApplyReplicated(update, g.data()).status().code(),
            absl::StatusCode::kAborted);  // It was promoted: the sender was failed over.
  EXPECT_EQ(primary->Status().version(), 0u);
}

TEST(ShardReplicationTest, ABackupRefusesWorkersUntilPromoted) {
  const ShardConfig config = Config(SYNC, 1);
  auto backup = Backup(config);
  absl::StatusOr<uint64_t> pushed = PushNow(backup.get(), PushHeader(1, 0), Gradient(kSize, 1, 0));
  EXPECT_EQ(pushed.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(pushed.status().message().find("holds the backup of this shard; its primary is "
                                           "elsewhere (10.0.0.1:7071)"),
            std::string::npos)
      << pushed.status();
  std::optional<PullResult> pull;
  PullFrom(backup.get(), PullHeader(1), &pull);
  ASSERT_TRUE(pull.has_value());
  EXPECT_EQ(pull->status.code(), absl::StatusCode::kUnavailable);
  ShardStatus status = backup->Status();
  EXPECT_EQ(status.role(), BACKUP);
  EXPECT_EQ(status.primary_address(), kPrimaryAddress);
  EXPECT_EQ(status.version(), 0u);
  EXPECT_EQ(status.pulls(), 0u);
}

TEST(ShardReplicationTest, APromotedBackupTakesTheNextStep) {
  const ShardConfig config = Config(SYNC, 2);
  auto fake = std::make_shared<FakeBackup>(Backup(config));
  auto primary = Primary(config, fake);
  for (uint64_t step = 1; step <= 3; ++step) {
    for (uint32_t rank = 0; rank < 2; ++rank) {
      ASSERT_TRUE(PushNow(primary.get(), PushHeader(step, rank), Gradient(kSize, step, rank)).ok());
    }
  }
  // Step 4 is half aggregated when the primary dies; the backup never saw it.
  ASSERT_TRUE(PushNow(primary.get(), PushHeader(4, 0), Gradient(kSize, 4, 0)).ok());
  std::shared_ptr<Shard> backup = fake->shard();
  EXPECT_EQ(backup->Promote(), 3u);
  EXPECT_EQ(backup->Promote(), 3u);  // Idempotent.
  EXPECT_EQ(backup->role(), PRIMARY);
  EXPECT_EQ(backup->Status().primary_address(), kPrimaryAddress);  // Promoted from.
  std::optional<PullResult> pull;
  PullFrom(backup.get(), PullHeader(4), &pull);
  ASSERT_TRUE(pull.has_value() && pull->status.ok());
  EXPECT_EQ(pull->version, 3u);
  EXPECT_EQ(PushNow(backup.get(), PushHeader(3, 0), Gradient(kSize, 3, 0)).status().code(),
            absl::StatusCode::kAlreadyExists);  // Step 3 was applied: a resend.
  // Both workers push step 4 again, to the new primary.
  for (uint32_t rank = 0; rank < 2; ++rank) {
    ASSERT_TRUE(PushNow(backup.get(), PushHeader(4, rank), Gradient(kSize, 4, rank)).ok());
  }
  // The old primary, if it still runs (it was only thought lost), cannot go on alone: the
  // update its step 4 completes reaches the promoted copy, which refuses it; nothing is
  // acknowledged.
  EXPECT_EQ(PushNow(primary.get(), PushHeader(4, 1), Gradient(kSize, 4, 1)).status().code(),
            absl::StatusCode::kUnavailable);
  // The promoted shard's step 4 is the one an unreplicated shard makes of the same pushes.
  auto reference = Primary(config, nullptr);
  for (uint64_t step = 1; step <= 4; ++step) {
    for (uint32_t rank = 0; rank < 2; ++rank) {
      ASSERT_TRUE(PushNow(reference.get(), PushHeader(step, rank), Gradient(kSize, step, rank)).ok());
    }
  }
  ExpectIdentical(reference.get(), backup.get());
}

// SetWorkers(from_step) for `workers` ranks, rank `lost` removed (SyncAggregator::kNever).
std::vector<uint64_t> WithoutRank(uint32_t workers, uint32_t lost) {
  std::vector<uint64_t> from_step(workers, 0);
  from_step[lost] = SyncAggregator::kNever;
  return from_step;
}

TEST(ShardReplicationTest, AStepSetWorkersCompletesIsReplicatedOnceBeforePullsSeeIt) {
  const ShardConfig config = Config(SYNC, 3);
  auto backup = std::make_shared<FakeBackup>(Backup(config));
  auto primary = Primary(config, backup);
  backup->hold = true;
  const std::vector<float> g0 = Gradient(kSize, 1, 0), g1 = Gradient(kSize, 1, 1);
  ASSERT_EQ(*PushNow(primary.get(), PushHeader(1, 0), g0), 0u);
  ASSERT_EQ(*PushNow(primary.get(), PushHeader(1, 1), g1), 0u);
  WaitingForStep1 waiting(primary.get());
  // Rank 2 is lost: step 1 is complete without it, applied here and sent to the backup...
  ASSERT_TRUE(primary->SetWorkers(WithoutRank(3, 2)).ok());
  ASSERT_EQ(backup->sent.size(), 1u);
  EXPECT_EQ(backup->sent[0].version(), 1u);
  EXPECT_EQ(backup->sent[0].range().end(), kSize);
  std::vector<float> mean(kSize);
  for (uint64_t i = 0; i < kSize; ++i) mean[i] = (0.0f + g0[i] + g1[i]) * (1.0f / 2.0f);
  EXPECT_EQ(backup->gradients[0], mean);
  // ... but seen by nobody until the backup has it.
  waiting.PullStep1(primary.get());
  waiting.ExpectNoneAnswered();
  // The same set again while the step is in flight changes nothing.
  ASSERT_TRUE(primary->SetWorkers(WithoutRank(3, 2)).ok());
  backup->Release();
  EXPECT_EQ(backup->sent.size(), 1u);
  waiting.ExpectAllAnsweredAtStep1();
  ExpectIdentical(primary.get(), backup->shard().get());
  // Step 2 waits for ranks 0 and 1 only.
  backup->hold = false;
  EXPECT_EQ(PushNow(primary.get(), PushHeader(2, 2), Gradient(kSize, 2, 2)).status().code(),
            absl::StatusCode::kFailedPrecondition);
  ASSERT_EQ(*PushNow(primary.get(), PushHeader(2, 0), Gradient(kSize, 2, 0)), 1u);
  ASSERT_EQ(*PushNow(primary.get(), PushHeader(2, 1), Gradient(kSize, 2, 1)), 2u);
  EXPECT_EQ(backup->sent.size(), 2u);
  ExpectIdentical(primary.get(), backup->shard().get());
}

TEST(ShardReplicationTest, AStepSetWorkersCompletesWaitsForTheInstallInFlight) {
  const ShardConfig config = Config(SYNC, 2);
  auto primary = Primary(config, nullptr);
  ASSERT_EQ(*PushNow(primary.get(), PushHeader(1, 0), Gradient(kSize, 1, 0)), 0u);
  auto fake = std::make_shared<FakeBackup>(nullptr, "10.0.0.3:7071");
  fake->hold_installs = true;
  std::optional<absl::StatusOr<uint64_t>> added;
  primary->AddBackup(fake, kPrimaryAddress, [&](absl::StatusOr<uint64_t> v) { added = v; });
  ASSERT_EQ(fake->installs.size(), 1u);
  std::optional<PullResult> pull;
  PullFrom(primary.get(), PullHeader(2), &pull);
  // Step 1 is complete without rank 1, but the copy at version 0 is still travelling: the step
  // waits for it, as a push would, so that the new backup gets it.
  ASSERT_TRUE(primary->SetWorkers(WithoutRank(2, 1)).ok());
  EXPECT_EQ(primary->Status().version(), 0u);
  EXPECT_FALSE(pull.has_value());
  fake->Release();
  ASSERT_TRUE(added.has_value() && added->ok());
  EXPECT_EQ(**added, 0u);
  ASSERT_EQ(fake->sent.size(), 1u);
  EXPECT_EQ(fake->sent[0].version(), 1u);
  EXPECT_EQ(fake->gradients[0], Gradient(kSize, 1, 0));  // The mean of rank 0's push alone.
  ASSERT_TRUE(pull.has_value() && pull->status.ok());
  EXPECT_EQ(pull->version, 1u);
  ExpectIdentical(primary.get(), fake->shard().get());
}

TEST(ShardReplicationTest, ABackupTakesSetWorkersAndOncePromotedWaitsForTheRemainingRanks) {
  const ShardConfig config = Config(SYNC, 3);
  auto fake = std::make_shared<FakeBackup>(Backup(config));
  auto primary = Primary(config, fake);
  std::shared_ptr<Shard> backup = fake->shard();
  for (uint32_t rank = 0; rank < 3; ++rank) {
    ASSERT_TRUE(PushNow(primary.get(), PushHeader(1, rank), Gradient(kSize, 1, rank)).ok());
  }
  ASSERT_TRUE(PushNow(primary.get(), PushHeader(2, 0), Gradient(kSize, 2, 0)).ok());
  ASSERT_TRUE(PushNow(primary.get(), PushHeader(2, 1), Gradient(kSize, 2, 1)).ok());
  // The coordinator tells both servers that rank 2 is lost, the backup's first. The backup checks
  // the set like a primary and takes it, but applies nothing: step 2 reaches it from the primary,
  // once.
  EXPECT_EQ(backup->CheckSetWorkers({0, 0}).code(), absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(backup->SetWorkers(WithoutRank(3, 2)).ok());
  EXPECT_EQ(backup->Status().version(), 1u);
  EXPECT_EQ(fake->sent.size(), 1u);
  ASSERT_TRUE(primary->SetWorkers(WithoutRank(3, 2)).ok());
  ASSERT_EQ(fake->sent.size(), 2u);
  EXPECT_EQ(backup->Status().version(), 2u);
  ExpectIdentical(primary.get(), backup.get());
  // The primary dies; once promoted, the backup completes step 3 with ranks 0 and 1.
  EXPECT_EQ(backup->Promote(), 2u);
  EXPECT_EQ(PushNow(backup.get(), PushHeader(3, 2), Gradient(kSize, 3, 2)).status().code(),
            absl::StatusCode::kFailedPrecondition);  // Rank 2 left.
  ASSERT_EQ(*PushNow(backup.get(), PushHeader(3, 0), Gradient(kSize, 3, 0)), 2u);
  ASSERT_EQ(*PushNow(backup.get(), PushHeader(3, 1), Gradient(kSize, 3, 1)), 3u);
  // The same step 3 as an unreplicated shard given the same pushes and worker sets.
  auto reference = Primary(config, nullptr);
  for (uint32_t rank = 0; rank < 3; ++rank) {
    ASSERT_TRUE(PushNow(reference.get(), PushHeader(1, rank), Gradient(kSize, 1, rank)).ok());
  }
  for (uint32_t rank = 0; rank < 2; ++rank) {
    ASSERT_TRUE(PushNow(reference.get(), PushHeader(2, rank), Gradient(kSize, 2, rank)).ok());
  }
  ASSERT_TRUE(reference->SetWorkers(WithoutRank(3, 2)).ok());
  for (uint32_t rank = 0; rank < 2; ++rank) {
    ASSERT_TRUE(PushNow(reference.get(), PushHeader(3, rank), Gradient(kSize, 3, rank)).ok());
  }
  ExpectIdentical(reference.get(), backup.get());
}

TEST(ShardReplicationTest, AnInstalledBackupGetsThePrimarysWorkers) {
  const ShardConfig config = Config(SYNC, 2);
  auto primary = Primary(config, nullptr);
  ASSERT_TRUE(primary->SetWorkers(WithoutRank(2, 1)).ok());
  ASSERT_EQ(*PushNow(primary.get(), PushHeader(1, 0), Gradient(kSize, 1, 0)), 1u);
  auto fake = std::make_shared<FakeBackup>(nullptr);
  std::optional<absl::StatusOr<uint64_t>> added;
  primary->AddBackup(fake, kPrimaryAddress, [&](absl::StatusOr<uint64_t> v) { added = v; });
  ASSERT_TRUE(added.has_value() && added->ok());
  ASSERT_EQ(fake->installs.size(), 1u);
  EXPECT_EQ(std::vector<uint64_t>(fake->installs[0].from_step().begin(),
                                  fake->installs[0].from_step().end()),
            WithoutRank(2, 1));
  std::shared_ptr<Shard> backup = fake->shard();
  EXPECT_EQ(backup->Promote(), 1u);
  ASSERT_EQ(*PushNow(backup.get(), PushHeader(2, 0), Gradient(kSize, 2, 0)), 2u);
  // An ASYNC primary sends no worker set.
  auto async = Primary(Config(ASYNC, 2), nullptr);
  auto async_fake = std::make_shared<FakeBackup>(nullptr);
  async->AddBackup(async_fake, kPrimaryAddress, [](absl::StatusOr<uint64_t>) {});
  ASSERT_EQ(async_fake->installs.size(), 1u);
  EXPECT_EQ(async_fake->installs[0].from_step_size(), 0);
}

TEST(ShardReplicationTest, AnInstalledBackupKnowsThePushesItsPrimaryApplied) {
  const ShardConfig config = Config(ASYNC, 2);
  auto primary = Primary(config, nullptr);
  PushRequest push = PushHeader(0, 0);
  push.set_push_id(77);
  ASSERT_EQ(*PushNow(primary.get(), push, Gradient(kSize, 1, 0)), 1u);
  auto fake = std::make_shared<FakeBackup>(nullptr);
  std::optional<absl::StatusOr<uint64_t>> added;
  primary->AddBackup(fake, kPrimaryAddress, [&](absl::StatusOr<uint64_t> v) { added = v; });
  ASSERT_TRUE(added.has_value() && added->ok());
  ASSERT_EQ(fake->installs.size(), 1u);
  EXPECT_EQ(fake->installs[0].applied_pushes_size(), 1);
  // Promoted, the new backup answers a resend of that push without applying it.
  std::shared_ptr<Shard> backup = fake->shard();
  ASSERT_EQ(backup->Promote(), 1u);
  EXPECT_EQ(*PushNow(backup.get(), push, Gradient(kSize, 1, 0)), 1u);
  EXPECT_EQ(backup->Status().duplicate_pushes(), 1u);
}

TEST(ShardReplicationTest, AddBackupInstallsACopyAndUpdatesWaitForIt) {
  const ShardConfig config = Config(ASYNC, 1);
  auto primary = Primary(config, nullptr);
  for (uint64_t v = 1; v <= 5; ++v) {
    ASSERT_TRUE(PushNow(primary.get(), PushHeader(0, 0), Gradient(kSize, v, 0)).ok());
  }
  // An install that fails changes nothing.
  auto fake = std::make_shared<FakeBackup>(nullptr, "10.0.0.3:7071");
  fake->failures = {absl::UnavailableError("connection refused")};
  std::optional<absl::StatusOr<uint64_t>> added;
  primary->AddBackup(fake, kPrimaryAddress, [&](absl::StatusOr<uint64_t> v) { added = v; });
  ASSERT_TRUE(added.has_value());
  EXPECT_EQ(added->status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(primary->backup_address(), "");
  // Installed at version 5; a push sent while the copy travels waits for it.
  added.reset();
  std::optional<absl::StatusOr<uint64_t>> pushed;
  fake->hold = true;  // Holds Replicate only; Install answers at once.
  primary->AddBackup(fake, kPrimaryAddress, [&](absl::StatusOr<uint64_t> v) { added = v; });
  ASSERT_TRUE(added.has_value() && added->ok());
  EXPECT_EQ(**added, 5u);
  ASSERT_EQ(fake->installs.size(), 2u);
  const InstallShardRequest& install = fake->installs[1];
  EXPECT_EQ(install.shard().role(), BACKUP);
  EXPECT_EQ(install.shard().primary_address(), kPrimaryAddress);
  EXPECT_EQ(install.num_workers(), 1u);
  EXPECT_EQ(install.consistency(), ASYNC);
  EXPECT_EQ(fake->shard()->Status().version(), 5u);
  ExpectIdentical(primary.get(), fake->shard().get());
  PushTo(primary.get(), PushHeader(0, 0), Gradient(kSize, 6, 0), &pushed);
  EXPECT_FALSE(pushed.has_value());
  fake->Release();
  ASSERT_TRUE(pushed.has_value() && pushed->ok());
  EXPECT_EQ(**pushed, 6u);
  ExpectIdentical(primary.get(), fake->shard().get());
  ShardStatus status = primary->Status();
  EXPECT_EQ(status.backup_address(), "10.0.0.3:7071");
  EXPECT_FALSE(status.backup_lost());
  // The same backup again: nothing to do.
  added.reset();
  primary->AddBackup(fake, kPrimaryAddress, [&](absl::StatusOr<uint64_t> v) { added = v; });
  ASSERT_TRUE(added.has_value() && added->ok());
  EXPECT_EQ(**added, 6u);
  EXPECT_EQ(fake->installs.size(), 2u);
  // A backup cannot get a backup.
  added.reset();
  fake->shard()->AddBackup(fake, kPrimaryAddress, [&](absl::StatusOr<uint64_t> v) { added = v; });
  ASSERT_TRUE(added.has_value());
  EXPECT_EQ(added->status().code(), absl::StatusCode::kFailedPrecondition);
}

// The backup stops answering (frozen) while a step is on its way to it; the coordinator, which took
// its server for lost, gives the shard another backup. The step is acknowledged at once (it does
// not wait out the frozen backup's deadlines), the new backup is installed with it, the next steps
// go there, and the old backup's late answer changes nothing.
TEST(ShardReplicationTest, AnotherBackupReplacesOneThatHoldsAStepAndTheStepGoesOn) {
  const ShardConfig config = Config(SYNC, 1);
  auto frozen = std::make_shared<FakeBackup>(Backup(config));
  auto primary = Primary(config, frozen);
  frozen->hold = true;
  std::optional<absl::StatusOr<uint64_t>> step1;
  PushTo(primary.get(), PushHeader(1, 0), Gradient(kSize, 1, 0), &step1);
  ASSERT_EQ(frozen->sent.size(), 1u);
  EXPECT_FALSE(step1.has_value()) << "waits for the backup";
  auto next = std::make_shared<FakeBackup>(nullptr, "10.0.0.3:7071");
  std::optional<absl::StatusOr<uint64_t>> added;
  primary->AddBackup(next, kPrimaryAddress, [&](absl::StatusOr<uint64_t> v) { added = v; });
  ASSERT_TRUE(step1.has_value() && step1->ok()) << "acknowledged without the replaced backup";
  EXPECT_EQ(**step1, 1u);
  ASSERT_TRUE(added.has_value() && added->ok()) << (added ? added->status() : absl::OkStatus());
  EXPECT_EQ(**added, 1u);
  ExpectIdentical(primary.get(), next->shard().get());
  ASSERT_EQ(*PushNow(primary.get(), PushHeader(2, 0), Gradient(kSize, 2, 0)), 2u);
  EXPECT_EQ(next->sent.size(), 1u);
  EXPECT_EQ(frozen->sent.size(), 1u);
  frozen->Release();  // Its late answer (to update 1) is ignored.
  ExpectIdentical(primary.get(), next->shard().get());
  const ShardStatus status = primary->Status();
  EXPECT_EQ(status.backup_address(), "10.0.0.3:7071");
  EXPECT_FALSE(status.backup_lost());
  EXPECT_NE(status.backup_error().find("replaced by AddBackup"), std::string::npos)
      << status.backup_error();
}

TEST(ShardReplicationTest, DroppingAJobFailsPushesWaitingBehindAnUpdate) {
  const ShardConfig config = Config(ASYNC, 1);
  auto fake = std::make_shared<FakeBackup>(Backup(config));
  auto primary = Primary(config, fake);
  fake->hold = true;
  std::optional<absl::StatusOr<uint64_t>> first, second;
  PushTo(primary.get(), PushHeader(0, 0), Gradient(kSize, 1, 0), &first);
  PushTo(primary.get(), PushHeader(0, 0), Gradient(kSize, 2, 0), &second);
  primary->CancelWaiters(absl::CancelledError("job was dropped"));
  ASSERT_TRUE(second.has_value());
  EXPECT_EQ(second->status().code(), absl::StatusCode::kCancelled);
  fake->Release();  // The update in flight is still answered.
  ASSERT_TRUE(first.has_value() && first->ok());
  EXPECT_EQ(fake->sent.size(), 1u);
}

// SSP: a pull for step s waits while s - 1 is more than `staleness` past the
// slowest live rank's clock; a push by the slowest, or its rank going vacant, releases it.
TEST(ShardSspTest, APullTooFarAheadOfTheSlowestWaitsForIt) {
  ShardConfig config = Config(SSP, 2, SGD);
  config.staleness = 1;
  absl::Time now = absl::FromUnixSeconds(1000);
  ShardEnv env;
  env.clock = [&now] { return now; };
  auto shard = std::make_shared<Shard>(config, env);
  uint64_t push_id = 1;
  auto push = [&](uint64_t step, uint32_t rank, std::optional<uint64_t> base_version = {}) {
    PushRequest request = PushHeader(step, rank);
    request.set_push_id(push_id++);
    if (base_version.has_value()) request.set_base_version(*base_version);
    return PushNow(shard.get(), request, Gradient(kSize, step, rank));
  };
  // Rank 0 runs ahead: steps 1 and 2 pushed, rank 1 at 0.
  ASSERT_TRUE(push(1, 0).ok());
  std::optional<PullResult> pulled;
  PullFrom(shard.get(), PullHeader(2), &pulled);  // 1 past rank 1's clock: within tau = 1.
  ASSERT_TRUE(pulled.has_value());
  ASSERT_TRUE(push(2, 0).ok());
  pulled.reset();
  PullFrom(shard.get(), PullHeader(3), &pulled);  // 2 past: waits.
  EXPECT_FALSE(pulled.has_value());
  EXPECT_EQ(shard->Status().blocked_pulls(), 1u);
  now += absl::Seconds(2);
  // Rank 1 reaches step 1: 3 - 1 <= 1 + 1. Its gradient is 2 updates stale.
  ASSERT_TRUE(push(1, 1, /*base_version=*/0).ok());
  ASSERT_TRUE(pulled.has_value());
  EXPECT_TRUE(pulled->status.ok()) << pulled->status;
  EXPECT_EQ(shard->Status().blocked_pulls(), 0u);
  EXPECT_DOUBLE_EQ(shard->Status().blocked_seconds(), 2.0);
  ASSERT_TRUE(push(3, 0, /*base_version=*/3).ok());  // Fresh.
  pulled.reset();
  PullFrom(shard.get(), PullHeader(4), &pulled);
  EXPECT_FALSE(pulled.has_value());
  // Rank 1 goes vacant: it leaves the minimum.
  ASSERT_TRUE(shard->SetWorkers({1, SyncAggregator::kNever}).ok());
  ASSERT_TRUE(pulled.has_value());
  EXPECT_TRUE(pulled->status.ok()) << pulled->status;
  const ShardStatus status = shard->Status();
  ASSERT_EQ(status.worker_clocks_size(), 2);
  EXPECT_EQ(status.worker_clocks(0), 3u);
  EXPECT_EQ(status.worker_clocks(1), 1u);
  EXPECT_EQ(status.staleness(), 1u);
  EXPECT_DOUBLE_EQ(status.mean_push_staleness(), 1.0);  // (2 + 0) / 2.
  EXPECT_EQ(status.max_push_staleness(), 2u);
  // A rank out of range is refused and changes nothing.
  PushRequest bad = PushHeader(4, 2);
  bad.set_push_id(push_id++);
  EXPECT_EQ(PushNow(shard.get(), bad, Gradient(kSize, 4, 2)).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(shard->Status().version(), status.version());
}

// Backup workers: the first 2 of 3 workers make the step; the third's push, late, is dropped and
// counted (answered ALREADY_EXISTS, as applied: the worker goes on), not taken for an error.
TEST(ShardBackupWorkersTest, ALatePushIsDroppedAndCountedNotRejected) {
  ShardConfig config = Config(SYNC, 3, SGD);
  config.aggregate_first = 2;
  auto shard = std::make_shared<Shard>(config);
  ASSERT_TRUE(PushNow(shard.get(), PushHeader(1, 0), Gradient(kSize, 1, 0)).ok());
  ASSERT_EQ(*PushNow(shard.get(), PushHeader(1, 2), Gradient(kSize, 1, 2)), 1u);
  EXPECT_EQ(PushNow(shard.get(), PushHeader(1, 1), Gradient(kSize, 1, 1)).status().code(),
            absl::StatusCode::kAlreadyExists);
  const ShardStatus status = shard->Status();
  EXPECT_EQ(status.version(), 1u);
  EXPECT_EQ(status.aggregate_first(), 2u);
  EXPECT_EQ(status.late_pushes(), 1u);
  EXPECT_EQ(status.rejected_pushes(), 0u);
  EXPECT_EQ(status.last_error(), "");
  // The same as a job of the two workers that made it.
  auto two = std::make_shared<Shard>(Config(SYNC, 2, SGD));
  ASSERT_TRUE(PushNow(two.get(), PushHeader(1, 0), Gradient(kSize, 1, 0)).ok());
  ASSERT_TRUE(PushNow(two.get(), PushHeader(1, 1), Gradient(kSize, 1, 2)).ok());
  std::optional<PullResult> got, want;
  PullFrom(shard.get(), PullHeader(2), &got);
  PullFrom(two.get(), PullHeader(2), &want);
  ASSERT_TRUE(got.has_value() && want.has_value());
  EXPECT_EQ(got->values, want->values);
  // A contributor's resend of the step is not late; a push of a step ahead still is an error.
  EXPECT_EQ(PushNow(shard.get(), PushHeader(1, 0), Gradient(kSize, 1, 0)).status().code(),
            absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(shard->Status().late_pushes(), 1u);
  EXPECT_EQ(PushNow(shard.get(), PushHeader(3, 1), Gradient(kSize, 3, 1)).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(shard->Status().rejected_pushes(), 2u);
}

}  // namespace
}  // namespace psrv
