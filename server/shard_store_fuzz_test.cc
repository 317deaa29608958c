// In-process fuzzing of every ShardStore handler, through the same decoding as the gRPC service
// (common/wire.h for the raw calls, protobuf parsing for the typed ones): random bytes, valid
// requests with their bytes mutated, and valid requests with their fields mutated. Fixed seeds.
// Every answer must be OK (and well-formed) or an error with a message; a refused request must not
// change the parameters of the jobs created beforehand; every callback is called exactly once.
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <google/protobuf/message.h>
#include <google/protobuf/stubs/logging.h>

#include "common/buffer_pool.h"
#include "common/key_range.h"
#include "common/proto_mutator.h"
#include "common/wire.h"
#include "gtest/gtest.h"
#include "server/shard_store.h"

namespace psrv {
namespace {

constexpr uint64_t kSize = 64;  // Elements of each pre-created job's table "w".
constexpr int kIterations = 100000;  // Requests per handler (FUZZ_ITERATIONS overrides it).

// The last InstallShard a primary sent (a valid one, to install elsewhere).
struct SentInstall {
  InstallShardRequest request;
  std::string state;
};

// A backup server that is always down; it keeps the InstallShard it was sent.
class DownReplicator : public Replicator {
 public:
  DownReplicator(std::string address, SentInstall* sent)
      : address_(std::move(address)), sent_(sent) {}
  const std::string& address() const override { return address_; }
  void Replicate(const ReplicateRequest&, std::shared_ptr<PooledBuffer>, Done done) override {
    done(absl::UnavailableError("fuzz backup is down"));
  }
  void Install(const InstallShardRequest& request, std::string state, Done done) override {
    if (sent_ != nullptr) *sent_ = {request, std::move(state)};
    done(absl::UnavailableError("fuzz backup is down"));
  }

 private:
  std::string address_;
  SentInstall* sent_;  // May be null. Single-threaded test: no lock.
};

CreateShardsRequest Create(const std::string& job_id, ConsistencyMode mode, uint32_t workers) {
  CreateShardsRequest r;
  r.set_job_id(job_id);
  r.set_consistency(mode);
  r.mutable_optimizer()->set_kind(ADAMW);
  r.mutable_optimizer()->set_learning_rate(0.01f);
  r.mutable_optimizer()->set_beta1(0.9f);
  r.mutable_optimizer()->set_beta2(0.95f);
  r.mutable_optimizer()->set_epsilon(1e-8f);
  r.set_num_workers(workers);
  for (uint64_t begin : {uint64_t{0}, kSize / 2}) {
    ShardSpec* s = r.add_shards();
    s->mutable_table()->set_name("w");
    s->mutable_table()->add_shape(kSize);
    s->mutable_table()->mutable_init()->set_kind(InitSpec::NORMAL);
    s->mutable_table()->mutable_init()->set_scale(1.0f);
    s->mutable_range()->set_begin(begin);
    s->mutable_range()->set_end(begin + kSize / 2);
  }
  return r;
}

// Answers of deferred callbacks: each must come exactly once.
struct Answers {
  std::atomic<int> expected{0};
  std::atomic<int> answered{0};
  void Check(const absl::Status& status) {
    ++answered;
    if (!status.ok()) {
      EXPECT_FALSE(status.message().empty()) << status;
    }
  }
};

class ShardStoreFuzzTest : public ::testing::Test {
 protected:
  // The jobs whose parameters refused requests must leave alone: "async" (1 worker), "sync" (2).
  static constexpr const char* kJobs[] = {"async", "sync"};

  ShardStoreFuzzTest() : root_(::testing::TempDir()), mutator_(20261205, Words()) {
    google::protobuf::SetLogHandler(nullptr);  // Invalid UTF-8 would log at every parse.
    ShardStore::Options options;
    options.checkpoint_root = root_;
    options.max_memory_bytes = 4 << 20;
    options.connect_backup = [](const std::string& address) {
      return std::make_shared<DownReplicator>(address, nullptr);
    };
    store_ = std::make_unique<ShardStore>(options);
    store_->SetIdentity("fuzz", "127.0.0.1:7000");
    RecreateJobs();
    // A valid InstallShard of job "backup" (from a primary elsewhere): a BACKUP shard here.
    options.connect_backup = [this](const std::string& address) {
      return std::make_shared<DownReplicator>(address, &sent_);
    };
    ShardStore primary(options);
    primary.SetIdentity("primary", "127.0.0.1:7001");
    EXPECT_TRUE(primary.CreateShards(Create("backup", ASYNC, 1)).ok());
    AddBackupRequest add;
    add.set_job_id("backup");
    add.set_table("w");
    add.mutable_range()->set_end(kSize / 2);
    add.set_backup_address("127.0.0.1:7000");
    primary.AddBackup(add, [](absl::StatusOr<AddBackupResponse>) {});
    RecreateBackup();
  }

  void RecreateBackup() {
    store_->DropJob("backup").IgnoreError();
    absl::StatusOr<uint64_t> installed =
        store_->InstallShard(sent_.request, sent_.state.data(), sent_.state.size());
    ASSERT_TRUE(installed.ok()) << installed.status();
  }

  // The versions of job "backup"'s shards.
  std::vector<uint64_t> BackupVersions() {
    std::vector<uint64_t> versions;
    const ServerStatus status = store_->Status("backup");
    for (const ShardStatus& shard : status.shards()) {
      versions.push_back(shard.version());
    }
    return versions;
  }

  ~ShardStoreFuzzTest() override {
    store_->CancelAllWaiters();
    for (const std::string& job : store_->JobIds()) store_->DropJob(job).IgnoreError();
    store_.reset();  // Joins the checkpoint writer: every SaveCheckpoint has answered.
    EXPECT_EQ(answers_.answered.load(), answers_.expected.load()) << "a callback was lost or called twice";
  }

  std::vector<std::string> Words() const {
    return {"async", "sync", "w", "x", root_, root_ + "/ckpt", root_ + "/../..", "127.0.0.1:7000",
            "127.0.0.1:7001"};
  }

  void RecreateJobs() {
    for (const absl::Status& created :
         {store_->CreateShards(Create("async", ASYNC, 1)),
          store_->CreateShards(Create("sync", SYNC, 2))}) {
      ASSERT_TRUE(created.ok() || absl::IsAlreadyExists(created)) << created;
    }
  }

  // The values of every pre-created job (empty for one that was dropped by a valid request).
  std::vector<std::vector<float>> Snapshot() {
    std::vector<std::vector<float>> values;
    for (const char* job : kJobs) {
      PullRequest pull;
      pull.set_job_id(job);
      pull.set_table("w");
      pull.mutable_range()->set_end(kSize / 2);
      pull.set_dtype(FP32);
      std::vector<float> v;
      for (uint64_t begin : {uint64_t{0}, kSize / 2}) {
        pull.mutable_range()->set_begin(begin);
        pull.mutable_range()->set_end(begin + kSize / 2);
        store_->Pull(pull, [&](absl::Status s, uint64_t, PullPayload p) {
          if (!s.ok()) return;
          const size_t n = v.size();
          v.resize(n + p.size() / sizeof(float));
          std::memcpy(v.data() + n, p.data(), p.size());
        });
      }
      values.push_back(std::move(v));
    }
    return values;
  }

  // The bytes of `valid`, or of random bytes, or of `valid` mutated in its fields or bytes;
  // `payload` (field 15) appended as the service's clients send it.
  grpc::ByteBuffer Mutated(google::protobuf::Message* valid, const std::string& payload) {
    std::string bytes;
    switch (mutator_.Uniform(8)) {
      case 0:
        bytes = mutator_.RandomBytes(64);
        break;
      case 1:
      case 2:
        bytes = valid->SerializeAsString();
        mutator_.MutateBytes(&bytes);
        break;
      default:
        mutator_.MutateFields(valid);
        bytes = valid->SerializeAsString();
        break;
    }
    if (!payload.empty() || mutator_.OneIn(2)) {
      PushRequest just_payload;  // Field 15 is `bytes` in every request with a payload.
      just_payload.set_values(payload);
      bytes += just_payload.SerializeAsString();
    }
    if (mutator_.OneIn(8)) mutator_.MutateBytes(&bytes);
    grpc::Slice slice(bytes);
    return grpc::ByteBuffer(&slice, 1);
  }

  // A payload for a request about `range` in `dtype`: mostly the right size, with NaN and infinite
  // values among ordinary ones; sometimes a wrong size or random bytes.
  std::string Payload(const KeyRange& range, DType dtype) {
    uint64_t bytes = RangeSize(range) * (dtype == BF16 ? 2 : 4);
    if (mutator_.OneIn(8)) bytes = mutator_.Uniform(2 * bytes + 16);
    if (bytes > (1 << 20)) bytes = mutator_.Uniform(1024);
    if (mutator_.OneIn(8)) return mutator_.RandomBytes(bytes);
    std::vector<float> values = mutator_.InterestingFloats(bytes / 4 + 1);
    return std::string(reinterpret_cast<const char*>(values.data()), bytes);
  }

  // Decodes `bytes` as the service does (typed calls: protobuf; raw calls: ParseWithPayload into
  // a pooled buffer, after `check`): the error, or OK with `header` and `payload` filled in.
  static absl::Status Decode(grpc::ByteBuffer* bytes, google::protobuf::Message* header,
                             PooledBuffer* payload,
                             const std::function<absl::Status(size_t)>& check = nullptr) {
    return ParseWithPayload(bytes, header, [&](size_t size) -> absl::StatusOr<char*> {
      if (check != nullptr) {
        absl::Status checked = check(size);
        if (!checked.ok()) return checked;
      }
      *payload = BufferPool::Global()->Acquire(size);
      return payload->data();
    });
  }

  // Runs `handle` on `iterations` mutations of `seed()`: `handle` decodes and calls the store,
  // and returns its answer if it came at once (nullopt if it will come later). Checks the answer
  // and that a refused request changed no parameters.
  template <typename Request>
  void Fuzz(const std::function<Request()>& seed,
            const std::function<std::optional<absl::Status>(grpc::ByteBuffer*)>& handle,
            const std::function<std::string(const Request&)>& payload = nullptr,
            int divisor = 1) {
    const int iterations = FuzzIterations(kIterations) / divisor;
    int refused = 0;
    int ok = 0;
    for (int i = 0; i < iterations; ++i) {
      if (i % 2000 == 1999) {  // Start again from the pre-created jobs only, within the memory.
        for (const std::string& job : store_->JobIds()) {
          if (job != "async" && job != "sync") store_->DropJob(job).IgnoreError();
        }
      }
      Request valid = seed();
      const std::string values = payload != nullptr ? payload(valid) : std::string();
      grpc::ByteBuffer bytes = Mutated(&valid, values);
      if (i % 100 == 99) RecreateBackup();  // Perhaps dropped or promoted.
      const std::vector<std::vector<float>> before = Snapshot();
      const std::vector<uint64_t> backup_before = BackupVersions();
      const std::optional<absl::Status> status = handle(&bytes);
      if (!status.has_value()) continue;
      if (status->ok()) {
        ++ok;
      } else {
        ++refused;
        if (std::getenv("FUZZ_VERBOSE") != nullptr) std::printf("%s\n", status->ToString().c_str());
        ASSERT_FALSE(status->message().empty()) << *status << " (iteration " << i << ")";
        ASSERT_EQ(Snapshot(), before) << "refused with " << *status << " but changed parameters"
                                      << " (iteration " << i << ")";
        ASSERT_EQ(BackupVersions(), backup_before) << "refused with " << *status
                                                   << " but changed the backup shard";
      }
      if (before[0].empty() || before[1].empty()) RecreateJobs();
    }
    RecordProperty("ok", ok);
    RecordProperty("refused", refused);
    std::printf("%d requests: %d answered OK at once, %d refused\n", iterations, ok, refused);
    EXPECT_GT(refused, 0);
  }

  // A valid request about one of the pre-created jobs' shards.
  template <typename Request>
  Request About() {
    Request r;
    r.set_job_id(kJobs[mutator_.Uniform(2)]);
    r.set_table("w");
    const uint64_t begin = mutator_.OneIn(2) ? 0 : kSize / 2;
    r.mutable_range()->set_begin(begin);
    r.mutable_range()->set_end(begin + 1 + mutator_.Uniform(kSize / 2));
    return r;
  }

  // Called from deferred callbacks.
  std::function<void(const absl::Status&)> Later() {
    ++answers_.expected;
    return [this](const absl::Status& s) { answers_.Check(s); };
  }

  const std::string root_;
  ProtoMutator mutator_;
  SentInstall sent_;
  std::unique_ptr<ShardStore> store_;
  Answers answers_;
};

TEST_F(ShardStoreFuzzTest, Pull) {
  Fuzz<PullRequest>(
      [&] {
        PullRequest r = About<PullRequest>();
        r.set_dtype(mutator_.OneIn(2) ? FP32 : BF16);
        r.set_step(mutator_.Uniform(3));
        return r;
      },
      [&](grpc::ByteBuffer* bytes) -> std::optional<absl::Status> {
        PullRequest header;
        PooledBuffer payload;
        absl::Status parsed = Decode(bytes, &header, &payload, [](size_t size) {
          return size == 0 ? absl::OkStatus() : absl::InvalidArgumentError("values in a pull");
        });
        if (!parsed.ok()) return parsed;
        auto now = std::make_shared<std::optional<absl::Status>>();
        auto later = Later();
        store_->Pull(header, [now, later, header, called = false](
                                 absl::Status s, uint64_t, PullPayload values) mutable {
          EXPECT_FALSE(called);
          called = true;
          if (s.ok()) {  // The range, or a row-sparse pull's rows.
            const uint64_t keys = header.row_width() > 0
                                      ? uint64_t{header.row_width()} * header.rows_size()
                                      : RangeSize(header.range());
            EXPECT_EQ(values.size(), keys * WireBytesPerValue(header.dtype()));
          }
          later(s);
          if (!now->has_value()) *now = s;
        });
        return *now;
      });
}

TEST_F(ShardStoreFuzzTest, Push) {
  Fuzz<PushRequest>(
      [&] {
        PushRequest r = About<PushRequest>();
        r.set_dtype(mutator_.OneIn(2) ? FP32 : BF16);
        r.set_step(1 + mutator_.Uniform(2));
        r.set_worker_rank(static_cast<uint32_t>(mutator_.Uniform(2)));
        if (mutator_.OneIn(4)) r.set_push_id(1 + mutator_.Uniform(100));
        if (mutator_.OneIn(8)) r.set_scale_follows(true);
        return r;
      },
      [&](grpc::ByteBuffer* bytes) -> std::optional<absl::Status> {
        PushRequest header;
        PooledBuffer payload;
        absl::Status parsed = Decode(bytes, &header, &payload, [&](size_t size) {
          return store_->CheckPush(header, size).status();
        });
        if (!parsed.ok()) return parsed;
        auto now = std::make_shared<std::optional<absl::Status>>();
        auto later = Later();
        store_->Push(header, std::move(payload), [now, later](absl::StatusOr<uint64_t> version) {
          later(version.status());
          if (!now->has_value()) *now = version.status();
        });
        return *now;
      },
      [&](const PushRequest& r) { return Payload(r.range(), r.dtype()); });
}

// The typed calls: the bytes parse as gRPC parses them (protobuf; a message that does not parse
// never reaches the store).
absl::Status ParseTyped(grpc::ByteBuffer* bytes, google::protobuf::Message* request) {
  std::vector<grpc::Slice> slices;
  if (!bytes->Dump(&slices).ok()) return absl::InvalidArgumentError("unreadable buffer");
  std::string all;
  for (const grpc::Slice& slice : slices) {
    all.append(reinterpret_cast<const char*>(slice.begin()), slice.size());
  }
  if (!request->ParseFromString(all)) return absl::InvalidArgumentError("does not parse");
  return absl::OkStatus();
}

// A typed call that `call` answers at once.
template <typename Request>
std::function<std::optional<absl::Status>(grpc::ByteBuffer*)> Typed(
    std::function<absl::Status(const Request&)> call) {
  return [call](grpc::ByteBuffer* bytes) -> std::optional<absl::Status> {
    Request request;
    absl::Status parsed = ParseTyped(bytes, &request);
    if (!parsed.ok()) return parsed;
    return call(request);
  };
}

TEST_F(ShardStoreFuzzTest, CommitStep) {
  Fuzz<CommitStepRequest>(
      [&] {
        CommitStepRequest r;
        r.set_job_id(kJobs[mutator_.Uniform(2)]);
        r.set_worker_rank(static_cast<uint32_t>(mutator_.Uniform(2)));
        r.set_step(1 + mutator_.Uniform(2));
        r.set_grad_scale(0.5f);
        return r;
      },
      Typed<CommitStepRequest>([&](const CommitStepRequest& r) { return store_->CommitStep(r); }));
}

TEST_F(ShardStoreFuzzTest, SetWorkers) {
  Fuzz<SetWorkersRequest>(
      [&] {
        SetWorkersRequest r;
        r.set_job_id(kJobs[mutator_.Uniform(2)]);
        const int n = 1 + static_cast<int>(mutator_.Uniform(3));
        for (int i = 0; i < n; ++i) r.add_from_step(1 + mutator_.Uniform(3));
        return r;
      },
      Typed<SetWorkersRequest>([&](const SetWorkersRequest& r) { return store_->SetWorkers(r); }));
}

TEST_F(ShardStoreFuzzTest, CreateShards) {
  Fuzz<CreateShardsRequest>(
      [&] {
        CreateShardsRequest r = Create(mutator_.OneIn(2) ? "new" : kJobs[mutator_.Uniform(2)],
                                       mutator_.OneIn(2) ? SYNC : ASYNC,
                                       static_cast<uint32_t>(1 + mutator_.Uniform(3)));
        if (mutator_.OneIn(8)) r.add_restore_from()->set_path(root_ + "/missing");
        if (mutator_.OneIn(16)) r.set_init_from_safetensors(root_ + "/missing.safetensors");
        return r;
      },
      Typed<CreateShardsRequest>(
          [&](const CreateShardsRequest& r) { return store_->CreateShards(r); }));
}

TEST_F(ShardStoreFuzzTest, DropJob) {
  Fuzz<DropJobRequest>(
      [&] {
        DropJobRequest r;
        r.set_job_id(mutator_.OneIn(4) ? "async" : "other");
        return r;
      },
      Typed<DropJobRequest>([&](const DropJobRequest& r) { return store_->DropJob(r.job_id()); }));
}

TEST_F(ShardStoreFuzzTest, SaveCheckpoint) {
  Fuzz<SaveCheckpointRequest>(
      [&] {
        SaveCheckpointRequest r;
        r.set_job_id(kJobs[mutator_.Uniform(2)]);
        r.set_version(mutator_.Uniform(3));
        r.set_directory(root_ + "/ckpt");
        return r;
      },
      [&](grpc::ByteBuffer* bytes) -> std::optional<absl::Status> {
        SaveCheckpointRequest request;
        absl::Status parsed = ParseTyped(bytes, &request);
        if (!parsed.ok()) return parsed;
        auto later = Later();
        auto now = std::make_shared<std::optional<absl::Status>>();
        store_->SaveCheckpoint(request, [now, later](absl::StatusOr<SaveCheckpointResponse> r) {
          later(r.status());
        });
        return *now;  // Answered by the writer thread: checked there.
      },
      nullptr, /*divisor=*/10);  // Each valid request writes and syncs files: 10^4 take ~6 s.
}

TEST_F(ShardStoreFuzzTest, Replicate) {
  Fuzz<ReplicateRequest>(
      [&] {
        ReplicateRequest r = About<ReplicateRequest>();
        if (!mutator_.OneIn(4)) r.set_job_id("backup");
        r.mutable_range()->set_begin(0);
        const std::vector<uint64_t> versions = BackupVersions();
        r.set_version((versions.empty() ? 0 : versions[0]) + mutator_.Uniform(3));
        return r;
      },
      [&](grpc::ByteBuffer* bytes) -> std::optional<absl::Status> {
        ReplicateRequest header;
        PooledBuffer payload;
        absl::Status parsed = Decode(bytes, &header, &payload);
        if (!parsed.ok()) return parsed;
        return store_->Replicate(header, payload.data(), payload.size()).status();
      },
      [&](const ReplicateRequest& r) { return Payload(r.range(), FP32); });
}

TEST_F(ShardStoreFuzzTest, InstallShard) {
  Fuzz<InstallShardRequest>(
      [&] {
        InstallShardRequest r = sent_.request;
        r.set_job_id(mutator_.OneIn(2) ? "backup" : kJobs[mutator_.Uniform(2)]);
        return r;
      },
      [&](grpc::ByteBuffer* bytes) -> std::optional<absl::Status> {
        InstallShardRequest header;
        PooledBuffer payload;
        absl::Status parsed = Decode(bytes, &header, &payload);
        if (!parsed.ok()) return parsed;
        return store_->InstallShard(header, payload.data(), payload.size()).status();
      },
      [&](const InstallShardRequest&) {
        std::string state = sent_.state;
        if (mutator_.OneIn(2)) mutator_.MutateBytes(&state);
        return state;
      });
}

TEST_F(ShardStoreFuzzTest, AddBackup) {
  Fuzz<AddBackupRequest>(
      [&] {
        AddBackupRequest r = About<AddBackupRequest>();
        r.mutable_range()->set_end(r.range().begin() + kSize / 2);
        r.set_backup_address("127.0.0.1:7001");
        return r;
      },
      [&](grpc::ByteBuffer* bytes) -> std::optional<absl::Status> {
        AddBackupRequest request;
        absl::Status parsed = ParseTyped(bytes, &request);
        if (!parsed.ok()) return parsed;
        auto now = std::make_shared<std::optional<absl::Status>>();
        auto later = Later();
        store_->AddBackup(request, [now, later](absl::StatusOr<AddBackupResponse> r) {
          later(r.status());
          if (!now->has_value()) *now = r.status();
        });
        return *now;
      });
}

TEST_F(ShardStoreFuzzTest, Promote) {
  Fuzz<PromoteRequest>(
      [&] {
        PromoteRequest r;
        r.set_job_id(mutator_.OneIn(2) ? "backup" : kJobs[mutator_.Uniform(2)]);
        r.set_failed_address("127.0.0.1:7001");
        if (mutator_.OneIn(2)) r.set_new_backup_address("127.0.0.1:7002");
        return r;
      },
      [&](grpc::ByteBuffer* bytes) -> std::optional<absl::Status> {
        PromoteRequest request;
        absl::Status parsed = ParseTyped(bytes, &request);
        if (!parsed.ok()) return parsed;
        auto now = std::make_shared<std::optional<absl::Status>>();
        auto later = Later();
        store_->Promote(request, [now, later](absl::StatusOr<PromoteResponse> r) {
          later(r.status());
          if (!now->has_value()) *now = r.status();
        });
        return *now;
      });
}

}  // namespace
}  // namespace psrv
