// ResilientClient against in-process parameter servers (the real ShardStore behind a fake
// transport, no gRPC, no processes): retries, following a new shard map after a fail-over and
// sending the unapplied step again, giving up, cancelling.
#include "worker/resilient_client.h"

#include <atomic>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "common/bf16.h"
#include "common/buffer_pool.h"
#include "common/initializer.h"
#include "common/key_range.h"
#include "gtest/gtest.h"
#include "server/shard_store.h"
#include "worker/testing/fake_cluster.h"

namespace psrv {
namespace {

constexpr uint64_t kKeys = 1000;  // Table "w": keys [0, 600) on one shard, [600, 1000) another.

TableSpec Table() {
  TableSpec t;
  t.set_name("w");
  t.add_shape(kKeys);
  t.mutable_init()->set_kind(InitSpec::NORMAL);
  t.mutable_init()->set_scale(1.0f);
  t.mutable_init()->set_seed(5);
  return t;
}

// Table "w" split over `first` ([0, 600)) and `second` ([600, 1000)), as the coordinator maps it.
ShardMap Map(const std::string& first, const std::string& second, uint64_t epoch = 0) {
  ShardMap map;
  map.set_job_id("job");
  map.set_epoch(epoch);
  *map.add_tables() = Table();
  ShardAssignment* a = map.add_shards();
  a->set_table("w");
  *a->mutable_range() = MakeRange(0, 600);
  a->set_server_address(first);
  ShardAssignment* b = map.add_shards();
  b->set_table("w");
  *b->mutable_range() = MakeRange(600, 1000);
  b->set_server_address(second);
  return map;
}

CreateShardsRequest Create(uint64_t begin, uint64_t end, ShardRole role = PRIMARY,
                           const std::string& backup = "", const std::string& primary = "",
                           ConsistencyMode mode = SYNC) {
  CreateShardsRequest r;
  r.set_job_id("job");
  r.set_consistency(mode);
  r.mutable_optimizer()->set_kind(ADAMW);
  r.mutable_optimizer()->set_learning_rate(0.01f);
  r.mutable_optimizer()->set_beta1(0.9f);
  r.mutable_optimizer()->set_beta2(0.99f);
  r.mutable_optimizer()->set_epsilon(1e-8f);
  r.set_num_workers(1);
  ShardSpec* s = r.add_shards();
  *s->mutable_table() = Table();
  *s->mutable_range() = MakeRange(begin, end);
  s->set_role(role);
  s->set_backup_address(backup);
  s->set_primary_address(primary);
  return r;
}

ResilientClient::Options FastOptions(ConsistencyMode mode = SYNC) {
  ResilientClient::Options o;
  o.consistency = mode;
  o.targets.connections_per_server = 1;
  o.give_up = absl::Seconds(20);
  return o;
}

std::vector<float> Gradient(float base) {
  std::vector<float> g(kKeys);
  for (uint64_t i = 0; i < kKeys; ++i) g[i] = base * (static_cast<float>(i % 7) - 3.0f);
  return g;
}

// One SYNC step as the step pipeline runs it: pushes with scale_follows, then the commit.
void PushStep(ResilientClient* client, uint64_t step, const std::vector<float>& grads,
              float scale) {
  for (size_t t = 0; t < client->targets().size(); ++t) {
    client->StartPush(t, step, grads.data(), /*scale_follows=*/true);
  }
  client->StartCommit(step, scale);
}

// The parameters after `steps` steps of Gradient(step) scaled by 0.5, on plain in-memory servers.
std::vector<float> Reference(int steps) {
  FakeCluster cluster;
  cluster.Add("a")->store.CreateShards(Create(0, 600));
  cluster.Add("b")->store.CreateShards(Create(600, 1000));
  auto client = *ResilientClient::Create(Map("a", "b"), 0, FastOptions(), {}, cluster.Factory(),
                                         nullptr);
  std::vector<float> params(kKeys);
  std::vector<std::vector<float>> gradients;  // Alive until the end: the client may resend them.
  for (int step = 1; step <= steps; ++step) gradients.push_back(Gradient(0.1f * step));
  for (int step = 1; step <= steps; ++step) {
    EXPECT_TRUE(client->PullAll(step, params.data()).ok());
    PushStep(client.get(), step, gradients[step - 1], 0.5f);
  }
  EXPECT_TRUE(client->PullAll(steps + 1, params.data()).ok());
  return params;
}

TEST(ResilientClientTest, StepsWithScaleFollowingTheirPushesTrain) {
  const std::vector<float> after = Reference(3);
  std::vector<float> initial(kKeys);
  InitializeRange(Table(), 0, kKeys, initial.data());
  size_t changed = 0;
  for (uint64_t i = 0; i < kKeys; ++i) changed += after[i] != initial[i];
  EXPECT_GT(changed, kKeys / 2);
  EXPECT_EQ(after, Reference(3));  // Deterministic.
}

TEST(ResilientClientTest, AnUnavailableServerIsRetriedAndReported) {
  FakeCluster cluster;
  FakeServer* a = cluster.Add("a");
  a->store.CreateShards(Create(0, 600));
  cluster.Add("b")->store.CreateShards(Create(600, 1000));
  std::vector<std::string> reported;
  ResilientClient::Coordinator coordinator;
  coordinator.report_unreachable = [&](const std::string& address) {
    reported.push_back(address);
    if (reported.size() == 3) a->down = false;  // Back after a few retries.
  };
  a->down = true;
  auto client = *ResilientClient::Create(Map("a", "b"), 0, FastOptions(), coordinator,
                                         cluster.Factory(), nullptr);
  std::vector<float> params(kKeys);
  ASSERT_TRUE(client->PullAll(1, params.data()).ok());
  EXPECT_GE(reported.size(), 3u);
  EXPECT_EQ(reported.front(), "a");
}

TEST(ResilientClientTest, AFailedOverStepIsSentAgainToThePromotedBackup) {
  // "a" holds [0, 600) with its backup on "c"; "b" holds [600, 1000). "a" dies after taking
  // step 3's push (before its commit): the coordinator promotes "c" (epoch 1); the client must
  // send step 3 again there and end with the parameters of a run without the fault.
  FakeCluster cluster;
  ShardStore::Options with_backup;
  FakeServer* c = cluster.Add("c");
  with_backup.connect_backup = [c](const std::string&) -> std::shared_ptr<Replicator> {
    // The backup in memory: what "a" replicates is applied to "c" at once.
    class InMemory : public Replicator {
     public:
      explicit InMemory(FakeServer* backup) : backup_(backup) {}
      const std::string& address() const override { return address_; }
      void Replicate(const ReplicateRequest& request, std::shared_ptr<PooledBuffer> gradient,
                     Done done) override {
        done(backup_->store.Replicate(request, gradient->data(), gradient->size()).status());
      }
      void Install(const InstallShardRequest&, std::string, Done done) override {
        done(absl::UnimplementedError("not in this test"));
      }

     private:
      FakeServer* const backup_;
      const std::string address_ = "c";
    };
    return std::make_shared<InMemory>(c);
  };
  FakeServer* a = cluster.Add("a", with_backup);
  ASSERT_TRUE(c->store.CreateShards(Create(0, 600, BACKUP, "", "a")).ok());
  ASSERT_TRUE(a->store.CreateShards(Create(0, 600, PRIMARY, "c")).ok());
  ASSERT_TRUE(cluster.Add("b")->store.CreateShards(Create(600, 1000)).ok());
  ShardMap promoted = Map("c", "b", /*epoch=*/1);
  ResilientClient::Coordinator coordinator;
  std::atomic<bool> failed_over{false};
  coordinator.shard_map = [&]() -> absl::StatusOr<ShardMap> {
    if (!failed_over) return Map("a", "b");
    return promoted;
  };
  coordinator.report_unreachable = [&](const std::string& address) {
    if (address != "a" || failed_over) return;
    PromoteRequest promote;
    promote.set_job_id("job");
    promote.set_failed_address("a");
    c->store.Promote(promote, [](absl::StatusOr<PromoteResponse>) {});
    failed_over = true;
  };
  auto client = *ResilientClient::Create(Map("a", "b"), 0, FastOptions(), coordinator,
                                         cluster.Factory(), nullptr);
  std::vector<float> params(kKeys);
  std::vector<std::vector<float>> gradients;  // Each step's stays as long as it may be resent.
  for (int step = 1; step <= 4; ++step) gradients.push_back(Gradient(0.1f * step));
  for (int step = 1; step <= 4; ++step) {
    ASSERT_TRUE(client->PullAll(step, params.data()).ok()) << "step " << step;
    const std::vector<float>& grads = gradients[step - 1];
    if (step == 3) {
      for (size_t t = 0; t < client->targets().size(); ++t) {
        client->StartPush(t, step, grads.data(), true);
      }
      a->down = true;  // Crashes with step 3 pushed but not committed.
      client->StartCommit(step, 0.5f);
    } else {
      PushStep(client.get(), step, grads, 0.5f);
    }
  }
  ASSERT_TRUE(client->PullAll(5, params.data()).ok());
  EXPECT_TRUE(failed_over);
  EXPECT_EQ(params, Reference(4));
}

TEST(ResilientClientTest, ARefusedPushIsAnErrorAtOnce) {
  FakeCluster cluster;
  cluster.Add("a")->store.CreateShards(Create(0, 600));
  cluster.Add("b")->store.CreateShards(Create(600, 1000));
  auto client = *ResilientClient::Create(Map("a", "b"), 0, FastOptions(), {}, cluster.Factory(),
                                         nullptr);
  std::vector<float> params(kKeys);
  ASSERT_TRUE(client->PullAll(1, params.data()).ok());
  std::vector<float> bad = Gradient(1.0f);
  bad[10] = NAN;
  PushStep(client.get(), 1, bad, 1.0f);
  absl::Status status = client->AwaitPushed(1);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
}

TEST(ResilientClientTest, GivesUpAfterItsPatienceAndStopsWhenCancelled) {
  FakeCluster cluster;
  cluster.Add("a")->down = true;
  cluster.Add("b")->store.CreateShards(Create(600, 1000));
  ResilientClient::Options options = FastOptions();
  options.give_up = absl::Milliseconds(300);
  auto client =
      *ResilientClient::Create(Map("a", "b"), 0, options, {}, cluster.Factory(), nullptr);
  std::vector<float> params(kKeys);
  EXPECT_EQ(client->PullAll(1, params.data()).code(), absl::StatusCode::kUnavailable);

  std::atomic<bool> cancel{true};
  options.give_up = absl::Minutes(5);
  auto cancelled =
      *ResilientClient::Create(Map("a", "b"), 0, options, {}, cluster.Factory(), &cancel);
  EXPECT_EQ(cancelled->PullAll(1, params.data()).code(), absl::StatusCode::kCancelled);
}

TEST(ResilientClientTest, AsyncPushesGoAgainToANewMapAndAreAppliedOnce) {
  FakeCluster cluster;
  FakeServer* a = cluster.Add("a");
  FakeServer* c = cluster.Add("c");
  for (FakeServer* s : {a, c}) {
    ASSERT_TRUE(s->store.CreateShards(Create(0, 600, PRIMARY, "", "", ASYNC)).ok());
  }
  FakeServer* b = cluster.Add("b");
  ASSERT_TRUE(b->store.CreateShards(Create(600, 1000, PRIMARY, "", "", ASYNC)).ok());
  ResilientClient::Coordinator coordinator;
  coordinator.shard_map = [&]() -> absl::StatusOr<ShardMap> { return Map("c", "b", 1); };
  auto client = *ResilientClient::Create(Map("a", "b"), 0, FastOptions(ASYNC), coordinator,
                                         cluster.Factory(), nullptr);
  std::vector<float> params(kKeys);
  ASSERT_TRUE(client->PullAll(1, params.data()).ok());
  a->down = true;
  const std::vector<float> grads = Gradient(1.0f);
  for (size_t t = 0; t < client->targets().size(); ++t) {
    client->StartPush(t, 1, grads.data(), false);
  }
  // The push to "a" goes to "c" under the new map; the one to "b" may go again too (it was in
  // flight when the map changed), but "b" applies it once.
  ASSERT_TRUE(client->AwaitPushed(1).ok());
  ASSERT_TRUE(client->PullAll(2, params.data()).ok());
  EXPECT_EQ(c->store.Status("job").shards(0).version(), 1u);
  EXPECT_EQ(b->store.Status("job").shards(0).version(), 1u);
}

TEST(TopKCompressTest, SendsTheLargestAndCarriesTheRestToTheNextStep) {
  const std::vector<float> grad = {0.1f, -3.0f, 0.2f, 2.0f, -0.05f, 1.0f, 0.0f, -0.3f, 0.4f, 0.6f};
  std::vector<float> residual(grad.size(), 0.0f);
  SparsePush out;
  TopKCompress(grad.data(), grad.size(), 0.3f, FP32, residual.data(), &out);
  EXPECT_EQ(out.indices, (std::vector<uint32_t>{1, 3, 5}));  // |-3|, |2|, |1|, by offset.
  ASSERT_EQ(out.values.size(), 3 * sizeof(float));
  std::vector<float> sent(3);
  std::memcpy(sent.data(), out.values.data(), out.values.size());
  EXPECT_EQ(sent, (std::vector<float>{-3.0f, 2.0f, 1.0f}));
  // What was not sent waits: the residual is the gradient less what was sent.
  for (size_t i = 0; i < grad.size(); ++i) {
    EXPECT_EQ(residual[i], (i == 1 || i == 3 || i == 5) ? 0.0f : grad[i]) << i;
  }
  // A zero gradient next: the largest of what waited go now.
  const std::vector<float> zero(grad.size(), 0.0f);
  TopKCompress(zero.data(), zero.size(), 0.3f, FP32, residual.data(), &out);
  EXPECT_EQ(out.indices, (std::vector<uint32_t>{7, 8, 9}));
  // At least one value goes however small the fraction; BF16 rounding is carried over too.
  std::vector<float> r2(1, 0.0f);
  const float g = 1.00390625f + 0.001f;  // Not a bf16 value.
  TopKCompress(&g, 1, 1e-6f, BF16, r2.data(), &out);
  ASSERT_EQ(out.indices, (std::vector<uint32_t>{0}));
  uint16_t narrowed;
  std::memcpy(&narrowed, out.values.data(), sizeof(narrowed));
  EXPECT_FLOAT_EQ(Bf16ToFloat(narrowed) + r2[0], g);
  EXPECT_NE(r2[0], 0.0f);
}

// TOP_K with fraction 1 sends every value, as offsets and values: the servers end where dense
// pushes leave them, bit for bit. A smaller fraction changes fewer keys per step.
TEST(ResilientClientTest, TopKPushesOfEveryValueEqualDensePushes) {
  auto run = [](float fraction) {
    FakeCluster cluster;
    cluster.Add("a")->store.CreateShards(Create(0, 600));
    cluster.Add("b")->store.CreateShards(Create(600, 1000));
    ResilientClient::Options options = FastOptions();
    options.top_k_fraction = fraction;
    auto client =
        *ResilientClient::Create(Map("a", "b"), 0, options, {}, cluster.Factory(), nullptr);
    std::vector<float> params(kKeys);
    std::vector<std::vector<float>> gradients;
    for (int step = 1; step <= 3; ++step) gradients.push_back(Gradient(0.1f * step));
    uint64_t bytes = 0;
    for (int step = 1; step <= 3; ++step) {
      EXPECT_TRUE(client->PullAll(step, params.data()).ok());
      for (size_t t = 0; t < client->targets().size(); ++t) {
        client->StartPush(t, step, gradients[step - 1].data(), /*scale_follows=*/false);
      }
      EXPECT_TRUE(client->AwaitPushed(step).ok());
    }
    EXPECT_TRUE(client->PullAll(4, params.data()).ok());
    bytes = client->pushed_bytes();
    return std::make_pair(params, bytes);
  };
  const auto dense = run(0.0f);
  const auto all = run(1.0f);
  EXPECT_EQ(all.first, dense.first);
  EXPECT_EQ(dense.second, 3 * kKeys * sizeof(float));
  EXPECT_EQ(all.second, 3 * kKeys * (sizeof(float) + sizeof(uint32_t)));  // Offsets too.
  const auto tenth = run(0.1f);
  EXPECT_NE(tenth.first, dense.first);
  EXPECT_EQ(tenth.second, 3 * kKeys / 10 * (sizeof(float) + sizeof(uint32_t)));
}

// Table "w" as 100 rows of 10 keys, decayed; a sparse table (rows of 10) when `sparse`.
void MakeRowTable(TableSpec* table, bool sparse) {
  table->clear_shape();
  table->add_shape(100);
  table->add_shape(10);
  table->set_weight_decay(true);
  if (sparse) table->set_sparse_row_width(10);
}

TEST(SelectRowsTest, SendsTheRowsWithAGradient) {
  const std::vector<float> grad = {0, 0, 0,  1, 0, -2,  0, 0, 0,  0, 0, 0.5f};  // 4 rows of 3.
  SparsePush rows;
  SelectRows(grad.data(), grad.size(), 3, FP32, &rows);
  EXPECT_EQ(rows.indices, (std::vector<uint32_t>{1, 3}));
  ASSERT_EQ(rows.values.size(), 6 * sizeof(float));
  std::vector<float> values(6);
  std::memcpy(values.data(), rows.values.data(), rows.values.size());
  EXPECT_EQ(values, (std::vector<float>{1, 0, -2, 0, 0, 0.5f}));
  SelectRows(grad.data(), grad.size(), 3, BF16, &rows);  // Reuses the buffers.
  ASSERT_EQ(rows.values.size(), 6 * sizeof(uint16_t));
  EXPECT_EQ(Bf16ToFloat(reinterpret_cast<const uint16_t*>(rows.values.data())[2]), -2.0f);
  const std::vector<float> zeros(12, 0.0f);
  SelectRows(zeros.data(), zeros.size(), 3, FP32, &rows);
  EXPECT_TRUE(rows.indices.empty());
  EXPECT_TRUE(rows.values.empty());
}

// A sparse table (rows of 10 keys; the shards [0, 600) and [600, 1000) hold whole rows): pushing
// only the rows with a gradient ends where dense pushes do, bit for bit, for SGD on a table that
// is not sparse too (lazy or not, SGD leaves a zero-gradient row as it is), and for AdamW with
// its lazy rows; the bytes are the rows' ids and values.
TEST(ResilientClientTest, RowSparsePushesEqualDensePushes) {
  auto run = [](bool sparse_table, bool row_sparse, OptimizerKind optimizer) {
    auto create = [&](uint64_t begin, uint64_t end) {
      CreateShardsRequest r = Create(begin, end);
      r.mutable_optimizer()->set_kind(optimizer);
      r.mutable_optimizer()->set_weight_decay(0.1f);
      MakeRowTable(r.mutable_shards(0)->mutable_table(), sparse_table);
      return r;
    };
    FakeCluster cluster;
    EXPECT_TRUE(cluster.Add("a")->store.CreateShards(create(0, 600)).ok());
    EXPECT_TRUE(cluster.Add("b")->store.CreateShards(create(600, 1000)).ok());
    ShardMap map = Map("a", "b");
    MakeRowTable(map.mutable_tables(0), sparse_table);
    ResilientClient::Options options = FastOptions();
    options.row_sparse_pushes = row_sparse;
    auto client = *ResilientClient::Create(map, 0, options, {}, cluster.Factory(), nullptr);
    for (const ShardTarget& target : client->targets()) {
      EXPECT_EQ(target.row_width, sparse_table ? 10u : 0u);
    }
    std::vector<float> params(kKeys);
    std::vector<std::vector<float>> gradients;
    for (int step = 1; step <= 3; ++step) {
      // Rows 3, 17 and 60 + step have a gradient (row 17 with a zero inside); the rest is zero.
      std::vector<float> g(kKeys, 0.0f);
      for (int row : {3, 17, 60 + step}) {
        for (int c = 0; c < 10; ++c) g[row * 10 + c] = 0.1f * step * static_cast<float>(c - 4);
      }
      gradients.push_back(g);
    }
    for (int step = 1; step <= 3; ++step) {
      EXPECT_TRUE(client->PullAll(step, params.data()).ok());
      PushStep(client.get(), step, gradients[step - 1], 0.5f);
      EXPECT_TRUE(client->AwaitPushed(step).ok());
    }
    EXPECT_TRUE(client->PullAll(4, params.data()).ok());
    return std::make_pair(params, client->pushed_bytes());
  };
  const auto sgd_dense = run(/*sparse_table=*/false, /*row_sparse=*/false, SGD);
  const auto sgd_rows = run(true, true, SGD);
  EXPECT_EQ(sgd_rows.first, sgd_dense.first);
  EXPECT_EQ(sgd_dense.second, 3 * kKeys * sizeof(float));
  EXPECT_EQ(sgd_rows.second, 3 * 3 * (sizeof(uint32_t) + 10 * sizeof(float)));
  const auto adam_dense = run(true, false, ADAMW);
  const auto adam_rows = run(true, true, ADAMW);
  EXPECT_EQ(adam_rows.first, adam_dense.first);
  // Lazy: row 90 never had a gradient and kept its initial values (weight decay included),
  // which the dense table's AdamW would have decayed.
  const auto adam_not_lazy = run(false, false, ADAMW);
  for (int c = 0; c < 10; ++c) {
    EXPECT_NE(adam_rows.first[900 + c], adam_not_lazy.first[900 + c]) << c;
    EXPECT_EQ(adam_rows.first[170 + c] == adam_not_lazy.first[170 + c], true) << c;
  }
}

// Row-sparse pulls: a step whose rows the provider names gets only those rows of a sparse table's
// targets (the rest of the buffer is left as it was), in FP32 and BF16; a step it declines is
// pulled whole. Bytes: what was asked for.
TEST(ResilientClientTest, RowSparsePullsFetchOnlyTheNamedRows) {
  for (DType dtype : {FP32, BF16}) {
    FakeCluster cluster;
    auto create = [](uint64_t begin, uint64_t end) {
      CreateShardsRequest r = Create(begin, end);
      MakeRowTable(r.mutable_shards(0)->mutable_table(), /*sparse=*/true);
      return r;
    };
    ASSERT_TRUE(cluster.Add("a")->store.CreateShards(create(0, 600)).ok());
    ASSERT_TRUE(cluster.Add("b")->store.CreateShards(create(600, 1000)).ok());
    ShardMap map = Map("a", "b");
    MakeRowTable(map.mutable_tables(0), /*sparse=*/true);
    ResilientClient::Options options = FastOptions();
    options.wire_dtype = dtype;
    options.pull_rows = [](uint64_t step, std::vector<uint32_t>* rows) {
      if (step == 2) return false;  // Whole.
      *rows = {2, 59, 60, 99};       // Rows on both shards, at their edges.
      return true;
    };
    auto client = *ResilientClient::Create(map, 0, options, {}, cluster.Factory(), nullptr);
    const size_t value_bytes = dtype == BF16 ? 2 : 4;
    std::vector<float> whole(kKeys), params(kKeys, -7.0f);
    ASSERT_TRUE(client->PullAll(1, params.data()).ok());
    EXPECT_EQ(client->pulled_bytes(), 4 * 10 * value_bytes);
    PushStep(client.get(), 1, std::vector<float>(kKeys, 0.0f), 1.0f);  // Step 1 applied.
    ASSERT_TRUE(client->PullAll(2, whole.data()).ok());
    EXPECT_EQ(client->pulled_bytes(), 4 * 10 * value_bytes + kKeys * value_bytes);
    for (size_t i = 0; i < kKeys; ++i) {
      const size_t row = i / 10;
      const bool pulled = row == 2 || row == 59 || row == 60 || row == 99;
      EXPECT_EQ(params[i], pulled ? whole[i] : -7.0f) << i;
    }
  }
}

// A BF16 pull arrives as gRPC holds it, in pieces that split values (here 7 and 1 bytes), and is
// widened straight into the parameters: exactly the FP32 pull's values rounded to bf16, every key.
TEST(ResilientClientTest, Bf16PullsInPiecesEqualTheFp32ValuesRounded) {
  FakeCluster cluster;
  ASSERT_TRUE(cluster.Add("a")->store.CreateShards(Create(0, 600)).ok());
  ASSERT_TRUE(cluster.Add("b")->store.CreateShards(Create(600, 1000)).ok());
  cluster.at("a")->pull_piece_bytes = 7;
  cluster.at("b")->pull_piece_bytes = 1;
  std::vector<float> fp32(kKeys), bf16(kKeys, -7.0f);
  ResilientClient::Options options = FastOptions();
  auto fp32_client = *ResilientClient::Create(Map("a", "b"), 0, options, {}, cluster.Factory(),
                                              nullptr);
  ASSERT_TRUE(fp32_client->PullAll(1, fp32.data()).ok());
  options.wire_dtype = BF16;
  auto bf16_client = *ResilientClient::Create(Map("a", "b"), 0, options, {}, cluster.Factory(),
                                              nullptr);
  ASSERT_TRUE(bf16_client->PullAll(1, bf16.data()).ok());
  EXPECT_EQ(bf16_client->pulled_bytes(), kKeys * 2);
  for (size_t i = 0; i < kKeys; ++i) {
    ASSERT_EQ(bf16[i], Bf16ToFloat(FloatToBf16(fp32[i]))) << i;
  }
}

}  // namespace
}  // namespace psrv
