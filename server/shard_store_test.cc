#include "server/shard_store.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <functional>
#include <limits>
#include <memory>
#include <optional>
#include <vector>

#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "common/bf16.h"
#include "common/initializer.h"
#include "common/safetensors.h"
#include "gtest/gtest.h"
#include "server/apply.h"
#include "server/test_requests.h"

namespace psrv {
namespace {

constexpr uint64_t kSize = 100;

TableSpec Table() {
  TableSpec t;
  t.set_name("w");
  t.add_shape(kSize);
  t.mutable_init()->set_kind(InitSpec::NORMAL);
  t.mutable_init()->set_scale(1.0f);
  t.mutable_init()->set_seed(3);
  return t;
}

CreateShardsRequest Create(ConsistencyMode mode, uint32_t workers, uint64_t begin = 0,
                           uint64_t end = kSize) {
  CreateShardsRequest r;
  r.set_job_id("job");
  r.set_consistency(mode);
  r.mutable_optimizer()->set_kind(SGD);
  r.mutable_optimizer()->set_learning_rate(0.5f);
  r.set_num_workers(workers);
  ShardSpec* s = r.add_shards();
  *s->mutable_table() = Table();
  s->mutable_range()->set_begin(begin);
  s->mutable_range()->set_end(end);
  return r;
}

PushRequest PushHeader(uint64_t step, uint32_t rank, uint64_t begin = 0, uint64_t end = kSize) {
  return TestPushRequest(step, rank, begin, end);
}

PullRequest PullHeader(uint64_t step, uint64_t begin = 0, uint64_t end = kSize) {
  return TestPullRequest(step, begin, end);
}

// Pulls synchronously (the pull must be answerable now).
std::vector<float> PullNow(ShardStore* store, const PullRequest& request, uint64_t* version = nullptr) {
  std::vector<float> out;
  bool called = false;
  store->Pull(request, [&](absl::Status s, uint64_t v, PullPayload values) {
    called = true;
    ASSERT_TRUE(s.ok()) << s;
    out.resize(values.size() / sizeof(float));
    std::memcpy(out.data(), values.data(), values.size());
    if (version) *version = v;
  });
  EXPECT_TRUE(called) << "pull did not answer at once";
  return out;
}

// PullNow as BF16: the reply's bfloat16 values.
std::vector<uint16_t> PullBf16Now(ShardStore* store, PullRequest request) {
  request.set_dtype(BF16);
  std::vector<uint16_t> out;
  bool called = false;
  store->Pull(request, [&](absl::Status s, uint64_t, PullPayload values) {
    called = true;
    ASSERT_TRUE(s.ok()) << s;
    out.resize(values.size() / 2);
    std::memcpy(out.data(), values.data(), values.size());
  });
  EXPECT_TRUE(called) << "pull did not answer at once";
  return out;
}

// Pushes `bytes` of payload; the push must be answered at once (no replication here).
absl::StatusOr<uint64_t> PushBytes(ShardStore* store, const PushRequest& h, const void* data,
                                   size_t bytes) {
  PooledBuffer payload = BufferPool::Global()->Acquire(bytes);
  if (bytes > 0) std::memcpy(payload.data(), data, bytes);
  absl::StatusOr<uint64_t> result = absl::InternalError("push not answered at once");
  store->Push(h, std::move(payload), [&](absl::StatusOr<uint64_t> r) { result = std::move(r); });
  return result;
}

absl::StatusOr<uint64_t> Push(ShardStore* store, const PushRequest& h, const std::vector<float>& g) {
  return PushBytes(store, h, g.data(), g.size() * sizeof(float));
}

// A SaveCheckpoint whose answer arrives on the store's writer thread: `wait()` blocks for it.
class SaveResult {
 public:
  std::function<void(absl::StatusOr<SaveCheckpointResponse>)> callback() {
    return [this](absl::StatusOr<SaveCheckpointResponse> r) {
      result_ = std::move(r);
      done_.Notify();
    };
  }
  bool answered() const { return done_.HasBeenNotified(); }
  const absl::StatusOr<SaveCheckpointResponse>& wait() {
    EXPECT_TRUE(done_.WaitForNotificationWithTimeout(absl::Seconds(30)));
    return result_;
  }

 private:
  absl::Notification done_;
  absl::StatusOr<SaveCheckpointResponse> result_ = absl::UnknownError("not answered");
};

std::vector<float> Initial() {
  std::vector<float> v(kSize);
  InitializeRange(Table(), 0, kSize, v.data());
  return v;
}

TEST(ShardStoreTest, ShardsStartFromTheDeterministicInitialisation) {
  ShardStore store;
  ASSERT_TRUE(store.CreateShards(Create(SYNC, 1, 40, 100)).ok());
  std::vector<float> all = Initial();
  std::vector<float> pulled = PullNow(&store, PullHeader(1, 40, 100));
  EXPECT_EQ(pulled, std::vector<float>(all.begin() + 40, all.end()));
  // A slice of the shard.
  pulled = PullNow(&store, PullHeader(1, 50, 52));
  EXPECT_EQ(pulled, std::vector<float>(all.begin() + 50, all.begin() + 52));
}

TEST(ShardStoreTest, SyncAppliesTheMeanOnceEveryWorkerPushed) {
  ShardStore store;
  ASSERT_TRUE(store.CreateShards(Create(SYNC, 2)).ok());
  std::vector<float> g0(kSize, 1.0f), g1(kSize, 3.0f);
  ASSERT_TRUE(Push(&store, PushHeader(1, 0), g0).ok());
  // Not applied yet: a pull for step 2 waits, one for step 1 does not.
  EXPECT_EQ(PullNow(&store, PullHeader(1)), Initial());
  bool answered = false;
  std::vector<float> after;
  store.Pull(PullHeader(2), [&](absl::Status s, uint64_t v, PullPayload values) {
    ASSERT_TRUE(s.ok());
    EXPECT_EQ(v, 1u);
    after.resize(kSize);
    std::memcpy(after.data(), values.data(), values.size());
    answered = true;
  });
  EXPECT_FALSE(answered);
  absl::StatusOr<uint64_t> version = Push(&store, PushHeader(1, 1), g1);
  ASSERT_TRUE(version.ok());
  EXPECT_EQ(*version, 1u);
  ASSERT_TRUE(answered);
  std::vector<float> init = Initial();
  for (uint64_t i = 0; i < kSize; ++i) EXPECT_FLOAT_EQ(after[i], init[i] - 0.5f * 2.0f);
  ServerStatus status = store.Status("");
  ASSERT_EQ(status.shards_size(), 1);
  EXPECT_EQ(status.shards(0).version(), 1u);
  EXPECT_EQ(status.shards(0).pushes(), 2u);
  EXPECT_EQ(status.shards(0).bytes_in(), 2 * kSize * 4);
}

SetWorkersRequest Workers(std::vector<uint64_t> from_step, const std::string& job = "job") {
  SetWorkersRequest r;
  r.set_job_id(job);
  for (uint64_t s : from_step) r.add_from_step(s);
  return r;
}

TEST(ShardStoreTest, RemovingALostWorkerCompletesTheStepItWasAwaited) {
  ShardStore store;
  ASSERT_TRUE(store.CreateShards(Create(SYNC, 2)).ok());
  const uint64_t never = std::numeric_limits<uint64_t>::max();
  // Bad requests change nothing.
  EXPECT_EQ(store.SetWorkers(Workers({0, never}, "nope")).code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(store.SetWorkers(Workers({0})).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store.SetWorkers(Workers({never, never})).code(), absl::StatusCode::kInvalidArgument);
  std::vector<float> g0(kSize, 1.0f), g1(kSize, 3.0f);
  ASSERT_TRUE(Push(&store, PushHeader(1, 0), g0).ok());
  bool answered = false;
  store.Pull(PullHeader(2), [&](absl::Status s, uint64_t v, PullPayload) {
    EXPECT_TRUE(s.ok());
    EXPECT_EQ(v, 1u);
    answered = true;
  });
  EXPECT_FALSE(answered);
  // Worker 1 is lost: step 1 is worker 0's gradient alone, and the waiting pull is answered.
  ASSERT_TRUE(store.SetWorkers(Workers({0, never})).ok());
  ASSERT_TRUE(answered);
  std::vector<float> init = Initial();
  std::vector<float> after = PullNow(&store, PullHeader(2));
  for (uint64_t i = 0; i < kSize; ++i) EXPECT_FLOAT_EQ(after[i], init[i] - 0.5f * 1.0f);
  EXPECT_EQ(Push(&store, PushHeader(2, 1), g1).status().code(),
            absl::StatusCode::kFailedPrecondition);  // Rank 1 left.
  // A new worker takes rank 1 over from step 3; step 2 is worker 0's alone, 3 waits for both.
  EXPECT_EQ(store.SetWorkers(Workers({0, 1})).code(), absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE(store.SetWorkers(Workers({0, 3})).ok());
  ASSERT_EQ(*Push(&store, PushHeader(2, 0), g0), 2u);
  ASSERT_EQ(*Push(&store, PushHeader(3, 0), g0), 2u);
  ASSERT_EQ(*Push(&store, PushHeader(3, 1), g1), 3u);
  // SetWorkers means nothing to an ASYNC job.
  ShardStore async;
  ASSERT_TRUE(async.CreateShards(Create(ASYNC, 2)).ok());
  EXPECT_EQ(async.SetWorkers(Workers({0, never})).code(), absl::StatusCode::kFailedPrecondition);
}

TEST(ShardStoreTest, SyncAcceptsAPushInChunks) {
  ShardStore store;
  ASSERT_TRUE(store.CreateShards(Create(SYNC, 2)).ok());
  std::vector<float> g0(kSize, 1.0f), g1(kSize, 3.0f);
  ASSERT_TRUE(Push(&store, PushHeader(1, 0), g0).ok());
  ASSERT_TRUE(Push(&store, PushHeader(1, 1, 0, 60), std::vector<float>(60, 3.0f)).ok());
  EXPECT_EQ(Push(&store, PushHeader(1, 1, 50, 70), std::vector<float>(20, 3.0f)).status().code(),
            absl::StatusCode::kAlreadyExists);  // Overlaps the first chunk.
  EXPECT_EQ(store.Status("").shards(0).version(), 0u);
  ASSERT_TRUE(Push(&store, PushHeader(1, 1, 60, 100), std::vector<float>(40, 3.0f)).ok());
  EXPECT_EQ(store.Status("").shards(0).version(), 1u);
  std::vector<float> init = Initial(), after = PullNow(&store, PullHeader(2));
  for (uint64_t i = 0; i < kSize; ++i) EXPECT_FLOAT_EQ(after[i], init[i] - 0.5f * 2.0f);
}

TEST(ShardStoreTest, Bf16PushesAndPullsConvertAtTheBoundary) {
  ShardStore store;
  ASSERT_TRUE(store.CreateShards(Create(ASYNC, 1)).ok());
  // A BF16 pull: the shard's fp32 values rounded to bfloat16.
  PullRequest pull = PullHeader(0);
  pull.set_dtype(BF16);
  std::vector<uint16_t> wire;
  store.Pull(pull, [&](absl::Status s, uint64_t, PullPayload values) {
    ASSERT_TRUE(s.ok()) << s;
    wire.resize(values.size() / 2);
    std::memcpy(wire.data(), values.data(), values.size());
  });
  ASSERT_EQ(wire.size(), kSize);
  const std::vector<float> init = Initial();
  for (uint64_t i = 0; i < kSize; ++i) EXPECT_EQ(wire[i], FloatToBf16(init[i]));
  // A BF16 push of 2.0 (exact in bfloat16): w -= 0.5 * 2.
  std::vector<uint16_t> grad(kSize, FloatToBf16(2.0f));
  PushRequest push = PushHeader(0, 0);
  push.set_dtype(BF16);
  ASSERT_TRUE(PushBytes(&store, push, grad.data(), grad.size() * 2).ok());
  std::vector<float> after = PullNow(&store, PullHeader(0));
  for (uint64_t i = 0; i < kSize; ++i) EXPECT_FLOAT_EQ(after[i], init[i] - 1.0f);
}

TEST(ShardStoreTest, AsyncAppliesEveryPushOnce) {
  ShardStore store;
  ASSERT_TRUE(store.CreateShards(Create(ASYNC, 2)).ok());
  std::vector<float> g(kSize, 1.0f);
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(Push(&store, PushHeader(0, i % 2), g).ok());
  uint64_t version = 0;
  std::vector<float> now = PullNow(&store, PullHeader(0), &version);
  EXPECT_EQ(version, 5u);
  std::vector<float> init = Initial();
  for (uint64_t i = 0; i < kSize; ++i) EXPECT_NEAR(now[i], init[i] - 5 * 0.5f, 1e-5);
  // A sub-range push touches only its keys.
  std::vector<float> g2(10, 2.0f);
  ASSERT_TRUE(Push(&store, PushHeader(0, 0, 20, 30), g2).ok());
  std::vector<float> later = PullNow(&store, PullHeader(0));
  EXPECT_FLOAT_EQ(later[19], now[19]);
  EXPECT_FLOAT_EQ(later[20], now[20] - 1.0f);
  EXPECT_FLOAT_EQ(later[30], now[30]);
}

// A sparse push (offsets and values) is the dense push with zeros elsewhere, FP32 or BF16; bad
// offsets or lengths are INVALID_ARGUMENT and change nothing.
TEST(ShardStoreTest, ASparsePushIsTheDensePushWithZerosElsewhere) {
  ShardStore sparse_store, dense_store;
  ASSERT_TRUE(sparse_store.CreateShards(Create(ASYNC, 1)).ok());
  ASSERT_TRUE(dense_store.CreateShards(Create(ASYNC, 1)).ok());
  std::vector<float> dense(kSize, 0.0f);
  dense[3] = 0.5f;
  dense[40] = -2.0f;
  dense[99] = 1.25f;
  PushRequest header = PushHeader(1, 0);
  header.set_push_id(1);
  PushRequest sparse = header;
  for (uint32_t i : {3u, 40u, 99u}) sparse.add_indices(i);
  const std::vector<float> values = {0.5f, -2.0f, 1.25f};
  ASSERT_TRUE(Push(&dense_store, header, dense).ok());
  ASSERT_TRUE(Push(&sparse_store, sparse, values).ok());
  EXPECT_EQ(PullNow(&sparse_store, PullHeader(0)), PullNow(&dense_store, PullHeader(0)));
  // BF16 values (these are exact in bf16).
  PushRequest sparse_bf16 = sparse;
  sparse_bf16.set_dtype(BF16);
  sparse_bf16.set_push_id(2);
  header.set_push_id(2);
  const uint16_t bf16[3] = {FloatToBf16(0.5f), FloatToBf16(-2.0f), FloatToBf16(1.25f)};
  ASSERT_TRUE(PushBytes(&sparse_store, sparse_bf16, bf16, sizeof(bf16)).ok());
  ASSERT_TRUE(Push(&dense_store, header, dense).ok());
  const std::vector<float> after = PullNow(&sparse_store, PullHeader(0));
  EXPECT_EQ(after, PullNow(&dense_store, PullHeader(0)));

  // Bad offsets or lengths: refused, nothing applied.
  auto refused = [&](std::vector<uint32_t> indices, size_t values_count) {
    PushRequest bad = PushHeader(1, 0);
    bad.set_push_id(99);
    for (uint32_t i : indices) bad.add_indices(i);
    return Push(&sparse_store, bad, std::vector<float>(values_count, 1.0f)).status();
  };
  EXPECT_EQ(refused({3, 3}, 2).code(), absl::StatusCode::kInvalidArgument);     // Repeated.
  EXPECT_EQ(refused({40, 3}, 2).code(), absl::StatusCode::kInvalidArgument);    // Decreasing.
  EXPECT_EQ(refused({3, 100}, 2).code(), absl::StatusCode::kInvalidArgument);   // Outside.
  EXPECT_EQ(refused({3, 40}, 3).code(), absl::StatusCode::kInvalidArgument);    // Length.
  EXPECT_EQ(refused({3, 40}, 1).code(), absl::StatusCode::kInvalidArgument);
  const absl::Status repeated = refused({5, 5}, 2);
  EXPECT_NE(repeated.message().find("strictly increasing"), std::string::npos) << repeated;
  EXPECT_EQ(PullNow(&sparse_store, PullHeader(0)), after);
}

// A row-sparse push (rows of row_width keys and their values) is the dense push with zeros on
// the other rows; an empty one is a zero gradient; bad rows, widths or lengths are
// INVALID_ARGUMENT and change nothing.
TEST(ShardStoreTest, ARowSparsePushIsTheDensePushWithZeroRowsElsewhere) {
  ShardStore sparse_store, dense_store;
  ASSERT_TRUE(sparse_store.CreateShards(Create(ASYNC, 1)).ok());
  ASSERT_TRUE(dense_store.CreateShards(Create(ASYNC, 1)).ok());
  ASSERT_EQ(kSize % 10, 0u);  // Rows of 10 keys.
  std::vector<float> dense(kSize, 0.0f);
  std::vector<float> values;
  for (uint32_t row : {0u, 4u, static_cast<uint32_t>(kSize / 10 - 1)}) {
    for (int c = 0; c < 10; ++c) {
      dense[row * 10 + c] = 0.25f * static_cast<float>(c + 1) * (row % 2 ? -1.0f : 1.0f);
      values.push_back(dense[row * 10 + c]);
    }
  }
  PushRequest header = PushHeader(1, 0);
  header.set_push_id(1);
  PushRequest sparse = header;
  sparse.set_row_width(10);
  for (uint32_t row : {0u, 4u, static_cast<uint32_t>(kSize / 10 - 1)}) sparse.add_rows(row);
  ASSERT_TRUE(Push(&dense_store, header, dense).ok());
  ASSERT_TRUE(Push(&sparse_store, sparse, values).ok());
  EXPECT_EQ(PullNow(&sparse_store, PullHeader(0)), PullNow(&dense_store, PullHeader(0)));
  // No rows: a zero gradient (a shard none of the batch's tokens falls in).
  PushRequest empty = header;
  empty.set_push_id(2);
  empty.set_row_width(10);
  ASSERT_TRUE(Push(&sparse_store, empty, {}).ok());
  const std::vector<float> after = PullNow(&sparse_store, PullHeader(0));

  auto refused = [&](std::vector<uint32_t> rows, uint32_t width, size_t values_count,
                     bool with_indices = false) {
    PushRequest bad = PushHeader(1, 0);
    bad.set_push_id(99);
    bad.set_row_width(width);
    for (uint32_t r : rows) bad.add_rows(r);
    if (with_indices) bad.add_indices(0);
    return Push(&sparse_store, bad, std::vector<float>(values_count, 1.0f)).status();
  };
  const uint32_t last = static_cast<uint32_t>(kSize / 10 - 1);
  EXPECT_EQ(refused({2, 2}, 10, 20).code(), absl::StatusCode::kInvalidArgument);        // Repeated.
  EXPECT_EQ(refused({4, 2}, 10, 20).code(), absl::StatusCode::kInvalidArgument);        // Order.
  EXPECT_EQ(refused({2, last + 1}, 10, 20).code(), absl::StatusCode::kInvalidArgument);  // Outside.
  EXPECT_EQ(refused({2, 3}, 10, 19).code(), absl::StatusCode::kInvalidArgument);        // Length.
  EXPECT_EQ(refused({2}, 0, 10).code(), absl::StatusCode::kInvalidArgument);            // No width.
  EXPECT_EQ(refused({2}, 7, 7).code(), absl::StatusCode::kInvalidArgument);  // Does not divide.
  EXPECT_EQ(refused({2}, 10, 10, /*with_indices=*/true).code(),
            absl::StatusCode::kInvalidArgument);
  const absl::Status outside = refused({last + 1}, 10, 10);
  EXPECT_NE(outside.message().find("rows[0]"), std::string::npos) << outside;
  EXPECT_EQ(PullNow(&sparse_store, PullHeader(0)), after);

  // A row-sparse pull answers the listed rows, in order, FP32 or BF16; bad rows are refused.
  PullRequest rows_pull = PullHeader(0);
  rows_pull.set_row_width(10);
  for (uint32_t row : {1u, 4u, last}) rows_pull.add_rows(row);
  std::vector<float> expected;
  for (uint32_t row : {1u, 4u, last}) {
    expected.insert(expected.end(), after.begin() + row * 10, after.begin() + row * 10 + 10);
  }
  EXPECT_EQ(PullNow(&sparse_store, rows_pull), expected);
  PullRequest bf16_rows = rows_pull;
  bf16_rows.set_dtype(BF16);
  sparse_store.Pull(bf16_rows, [&](absl::Status status, uint64_t, PullPayload values) {
    ASSERT_TRUE(status.ok()) << status;
    ASSERT_EQ(values.size(), 30 * sizeof(uint16_t));
    const uint16_t* narrowed = reinterpret_cast<const uint16_t*>(values.data());
    for (int i = 0; i < 30; ++i) EXPECT_EQ(narrowed[i], FloatToBf16(expected[i])) << i;
  });
  auto pull_refused = [&](std::vector<uint32_t> rows, uint32_t width) {
    PullRequest bad = PullHeader(0);
    bad.set_row_width(width);
    for (uint32_t r : rows) bad.add_rows(r);
    absl::Status result;
    sparse_store.Pull(bad, [&](absl::Status status, uint64_t, PullPayload) { result = status; });
    return result.code();
  };
  EXPECT_EQ(pull_refused({4, 1}, 10), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(pull_refused({1, 1}, 10), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(pull_refused({last + 1}, 10), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(pull_refused({1}, 0), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(pull_refused({1}, 7), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(pull_refused({}, 10), absl::StatusCode::kOk);  // No rows: an empty reply.
}

// Every bad request gets its status code and leaves the parameters unchanged.
TEST(ShardStoreTest, BadPushesAreRejectedAndChangeNothing) {
  ShardStore store;
  ASSERT_TRUE(store.CreateShards(Create(SYNC, 2)).ok());
  const std::vector<float> before = PullNow(&store, PullHeader(1));
  std::vector<float> g(kSize, 1.0f);
  std::vector<float> nan = g;
  nan[17] = std::numeric_limits<float>::quiet_NaN();
  std::vector<float> inf = g;
  inf[3] = std::numeric_limits<float>::infinity();

  PushRequest unknown_job = PushHeader(1, 0);
  unknown_job.set_job_id("nope");
  PushRequest unknown_table = PushHeader(1, 0);
  unknown_table.set_table("nope");
  PushRequest fp16 = PushHeader(1, 0);
  fp16.set_dtype(FP16);
  PushRequest bf16 = PushHeader(1, 0);
  bf16.set_dtype(BF16);  // With 4 bytes per value: the wrong length for BF16.
  PushRequest no_dtype = PushHeader(1, 0);
  no_dtype.set_dtype(DTYPE_UNSPECIFIED);

  EXPECT_EQ(Push(&store, unknown_job, g).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(Push(&store, unknown_table, g).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(Push(&store, PushHeader(1, 0, 90, 110), g).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(Push(&store, PushHeader(1, 0, 5, 5), g).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Push(&store, PushHeader(1, 0), std::vector<float>(kSize - 1, 1.0f)).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Push(&store, fp16, g).status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_EQ(Push(&store, bf16, g).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Push(&store, no_dtype, g).status().code(), absl::StatusCode::kInvalidArgument);
  absl::Status s = Push(&store, PushHeader(1, 0), nan).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("NaN at key 17"), std::string::npos) << s;
  EXPECT_EQ(Push(&store, PushHeader(1, 0), inf).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Push(&store, PushHeader(1, 7), g).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Push(&store, PushHeader(0, 0), g).status().code(),
            absl::StatusCode::kInvalidArgument);  // Steps start at 1.
  EXPECT_EQ(Push(&store, PushHeader(2, 0), g).status().code(),
            absl::StatusCode::kFailedPrecondition);  // Ahead.
  // Nothing was aggregated or applied.
  EXPECT_EQ(store.Status("").shards(0).pending_pushes(), 0u);
  EXPECT_EQ(PullNow(&store, PullHeader(1)), before);

  // A valid push, then a duplicate and (after the step) a stale one.
  ASSERT_TRUE(Push(&store, PushHeader(1, 0), g).ok());
  EXPECT_EQ(Push(&store, PushHeader(1, 0), g).status().code(), absl::StatusCode::kAlreadyExists);
  ASSERT_TRUE(Push(&store, PushHeader(1, 1), g).ok());
  const std::vector<float> applied = PullNow(&store, PullHeader(2));
  EXPECT_EQ(Push(&store, PushHeader(1, 1), g).status().code(),
            absl::StatusCode::kAlreadyExists);  // A resend of an applied step.
  EXPECT_EQ(PullNow(&store, PullHeader(2)), applied);
  EXPECT_EQ(store.Status("").shards(0).rejected_pushes(), 11u);  // All but the four that matched no shard.
}

TEST(ShardStoreTest, BadPullsAndCreatesAreRejected) {
  ShardStore store;
  auto pull_status = [&](const PullRequest& r) {
    absl::Status out;
    store.Pull(r, [&](absl::Status s, uint64_t, PullPayload) { out = s; });
    return out;
  };
  EXPECT_EQ(pull_status(PullHeader(0)).code(), absl::StatusCode::kNotFound);
  ASSERT_TRUE(store.CreateShards(Create(ASYNC, 1, 0, 50)).ok());
  EXPECT_TRUE(store.CreateShards(Create(ASYNC, 1, 0, 50)).ok());  // Idempotent.
  EXPECT_EQ(store.CreateShards(Create(ASYNC, 1, 0, 60)).code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(pull_status(PullHeader(0, 40, 60)).code(), absl::StatusCode::kNotFound);
  PullRequest fp16 = PullHeader(0, 0, 10);  // FP16 is not supported.
  fp16.set_dtype(FP16);
  EXPECT_EQ(pull_status(fp16).code(), absl::StatusCode::kUnimplemented);
  CreateShardsRequest bad = Create(ASYNC, 0);
  bad.set_job_id("other");
  EXPECT_EQ(store.CreateShards(bad).code(), absl::StatusCode::kInvalidArgument);
  bad = Create(ASYNC, 1, 0, 101);
  bad.set_job_id("other");
  EXPECT_EQ(store.CreateShards(bad).code(), absl::StatusCode::kInvalidArgument);
  bad = Create(ASYNC, 1);
  bad.set_job_id("other");
  bad.mutable_optimizer()->set_learning_rate(-1);
  EXPECT_EQ(store.CreateShards(bad).code(), absl::StatusCode::kInvalidArgument);
  // Staleness is SSP's, backup workers SYNC's, at most one per worker.
  bad = Create(SYNC, 2);
  bad.set_job_id("other");
  bad.set_staleness(2);
  EXPECT_EQ(store.CreateShards(bad).code(), absl::StatusCode::kInvalidArgument);
  bad = Create(ASYNC, 2);
  bad.set_job_id("other");
  bad.set_aggregate_first(1);
  EXPECT_EQ(store.CreateShards(bad).code(), absl::StatusCode::kInvalidArgument);
  bad = Create(SYNC, 2);
  bad.set_job_id("other");
  bad.set_aggregate_first(3);
  EXPECT_EQ(store.CreateShards(bad).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store.Status("other").shards_size(), 0);  // Nothing was created.
  CreateShardsRequest good = Create(SYNC, 2);
  good.set_job_id("other");
  good.set_aggregate_first(1);
  EXPECT_TRUE(store.CreateShards(good).ok());
}

TEST(ShardStoreTest, AServerHoldsSeveralShardsOfATableAsLongAsTheyDoNotOverlap) {
  ShardStore store;
  ASSERT_TRUE(store.CreateShards(Create(ASYNC, 1, 0, 50)).ok());
  // Another range of the same table, e.g. the backup of another server's shard.
  CreateShardsRequest backup = Create(ASYNC, 1, 50, 100);
  backup.mutable_shards(0)->set_role(BACKUP);
  backup.mutable_shards(0)->set_primary_address("10.0.0.2:7071");
  ASSERT_TRUE(store.CreateShards(backup).ok());
  EXPECT_EQ(store.Status("job").shards_size(), 2);
  CreateShardsRequest both = Create(ASYNC, 1, 0, 50);
  *both.add_shards() = backup.shards(0);
  EXPECT_TRUE(store.CreateShards(both).ok());  // Idempotent.
  EXPECT_EQ(PullNow(&store, PullHeader(0, 10, 20)).size(), 10u);
  EXPECT_EQ(store.CreateShards(Create(ASYNC, 1, 40, 60)).code(), absl::StatusCode::kAlreadyExists);
  CreateShardsRequest other_optimizer = Create(ASYNC, 1, 0, 50);
  other_optimizer.mutable_optimizer()->set_learning_rate(0.1f);
  EXPECT_EQ(store.CreateShards(other_optimizer).code(), absl::StatusCode::kAlreadyExists);
  CreateShardsRequest overlapping = Create(ASYNC, 1, 0, 50);
  overlapping.set_job_id("other");
  *overlapping.add_shards() = Create(ASYNC, 1, 25, 75).shards(0);
  EXPECT_EQ(store.CreateShards(overlapping).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store.Status("").shards_size(), 2);
  // Only the primary is checkpointed.
  SaveCheckpointRequest save;
  save.set_job_id("job");
  save.set_directory(::testing::TempDir() + "/several_shards");
  SaveResult result;
  store.SaveCheckpoint(save, result.callback());
  const absl::StatusOr<SaveCheckpointResponse>& saved = result.wait();
  ASSERT_TRUE(saved.ok()) << saved.status();
  ASSERT_EQ(saved->files_size(), 1);
  EXPECT_EQ(saved->files(0).range().end(), 50u);
}

TEST(ShardStoreTest, DropJobFailsWaitingPulls) {
  ShardStore store;
  ASSERT_TRUE(store.CreateShards(Create(SYNC, 2)).ok());
  absl::Status waited;
  store.Pull(PullHeader(5), [&](absl::Status s, uint64_t, PullPayload) { waited = s; });
  EXPECT_TRUE(waited.ok());  // Still waiting.
  ASSERT_TRUE(store.DropJob("job").ok());
  EXPECT_EQ(waited.code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(store.DropJob("job").code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(store.Status("").shards_size(), 0);
}

}  // namespace
}  // namespace psrv

namespace psrv {
namespace {

TEST(ShardStoreInitTest, ValuesComeFromASafetensorsFile) {
  const std::string path = ::testing::TempDir() + "/init.safetensors";
  std::vector<float> values(kSize);
  for (uint64_t i = 0; i < kSize; ++i) values[i] = 0.5f * i;
  ASSERT_TRUE(WriteSafetensors(path, {{"w", {kSize}, values}}).ok());
  ShardStore store;
  CreateShardsRequest create = Create(ASYNC, 1, 40, 100);
  create.set_init_from_safetensors(path);
  ASSERT_TRUE(store.CreateShards(create).ok());
  EXPECT_EQ(PullNow(&store, PullHeader(0, 40, 100)),
            std::vector<float>(values.begin() + 40, values.end()));

  ShardStore other;
  create.set_init_from_safetensors(path + ".missing");
  EXPECT_EQ(other.CreateShards(create).code(), absl::StatusCode::kNotFound);
  ASSERT_TRUE(WriteSafetensors(path, {{"w", {kSize / 2, 2}, values}}).ok());
  create.set_init_from_safetensors(path);
  absl::Status shape = other.CreateShards(create);
  EXPECT_EQ(shape.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(shape.message().find("shape"), std::string::npos) << shape;
  ASSERT_TRUE(WriteSafetensors(path, {{"v", {kSize}, values}}).ok());
  EXPECT_EQ(other.CreateShards(create).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(other.Status("").shards_size(), 0);
}

TEST(ShardStoreCheckpointTest, SyncCheckpointAtAStepAndRestore) {
  const std::string dir = ::testing::TempDir() + "/checkpoints";
  ShardStore store;
  CreateShardsRequest create = Create(SYNC, 1);
  create.mutable_optimizer()->set_kind(MOMENTUM);
  create.mutable_optimizer()->set_momentum(0.9f);
  ASSERT_TRUE(store.CreateShards(create).ok());
  std::vector<float> g(kSize, 1.0f);
  ASSERT_TRUE(Push(&store, PushHeader(1, 0), g).ok());
  // Ask for step 2 while the shard is at 1: answered when step 2 is applied, before step 3.
  SaveCheckpointRequest save;
  save.set_job_id("job");
  save.set_version(2);
  save.set_directory(dir);
  SaveResult at_2;
  store.SaveCheckpoint(save, at_2.callback());
  absl::SleepFor(absl::Milliseconds(50));
  EXPECT_FALSE(at_2.answered());
  ASSERT_TRUE(Push(&store, PushHeader(2, 0), g).ok());
  const absl::StatusOr<SaveCheckpointResponse>& saved = at_2.wait();
  ASSERT_TRUE(saved.ok()) << saved.status();
  ASSERT_EQ(saved->files_size(), 1);
  EXPECT_EQ(saved->files(0).version(), 2u);
  const std::vector<float> at_step_2 = PullNow(&store, PullHeader(3));
  ASSERT_TRUE(Push(&store, PushHeader(3, 0), g).ok());
  const std::vector<float> at_step_3 = PullNow(&store, PullHeader(4));
  // Past the step: refused.
  save.set_version(1);
  SaveResult past;
  store.SaveCheckpoint(save, past.callback());
  EXPECT_EQ(past.wait().status().code(), absl::StatusCode::kFailedPrecondition);

  // A new server restores step 2, values and momentum: its step 3 equals the original's.
  ShardStore restored;
  CreateShardsRequest again = create;
  CheckpointFile file;
  file.set_table("w");
  file.mutable_range()->set_end(kSize);
  file.set_path(dir + "/job/v2/w.0-100.ckpt");
  file.set_crc32(0);  // Not checked against a manifest here.
  *again.add_restore_from() = file;
  ASSERT_TRUE(restored.CreateShards(again).ok());
  EXPECT_EQ(restored.Status("").shards(0).version(), 2u);
  EXPECT_EQ(PullNow(&restored, PullHeader(3)), at_step_2);
  ASSERT_TRUE(Push(&restored, PushHeader(3, 0), g).ok());
  EXPECT_EQ(PullNow(&restored, PullHeader(4)), at_step_3);

  // A corrupt file fails the whole request and creates nothing.
  {
    std::fstream f(file.path(), std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(40);
    f.put('\x7f');
  }
  ShardStore corrupt;
  EXPECT_EQ(corrupt.CreateShards(again).code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(corrupt.Status("").shards_size(), 0);
}

}  // namespace
}  // namespace psrv

namespace psrv {
namespace {

// A clock the tests move by hand.
struct FakeClock {
  absl::Time now = absl::FromUnixSeconds(1700000000);
  std::function<absl::Time()> Function() {
    return [this] { return now; };
  }
};

TEST(ShardStoreStatusTest, SyncShowsTheWorkersAStepWaitsForAndSince) {
  FakeClock clock;
  ShardStore::Options options;
  options.clock = clock.Function();
  ShardStore store(options);
  ASSERT_TRUE(store.CreateShards(Create(SYNC, 3)).ok());
  std::vector<float> g(kSize, 1.0f);
  ShardStatus status = store.Status("").shards(0);
  EXPECT_EQ(status.waiting_for_workers_size(), 0);  // No push yet: nothing to wait for.
  EXPECT_EQ(status.waiting_ms(), 0);

  ASSERT_TRUE(Push(&store, PushHeader(1, 0), g).ok());
  clock.now += absl::Milliseconds(1500);
  // Rank 2 pushes half of the shard: still incomplete.
  ASSERT_TRUE(Push(&store, PushHeader(1, 2, 0, 50), std::vector<float>(50, 1.0f)).ok());
  clock.now += absl::Milliseconds(500);
  status = store.Status("").shards(0);
  EXPECT_EQ(std::vector<uint32_t>(status.waiting_for_workers().begin(),
                                  status.waiting_for_workers().end()),
            (std::vector<uint32_t>{1, 2}));
  EXPECT_EQ(status.waiting_ms(), 2000);
  EXPECT_EQ(status.pending_pushes(), 2u);

  ASSERT_TRUE(Push(&store, PushHeader(1, 2, 50, 100), std::vector<float>(50, 1.0f)).ok());
  ASSERT_TRUE(Push(&store, PushHeader(1, 1), g).ok());
  status = store.Status("").shards(0);
  EXPECT_EQ(status.version(), 1u);
  EXPECT_EQ(status.waiting_for_workers_size(), 0);
  EXPECT_EQ(status.waiting_ms(), 0);
}

TEST(ShardStoreStatusTest, RatesCoverTheLastSeconds) {
  FakeClock clock;
  const absl::Time start = clock.now;
  ShardStore::Options options;
  options.clock = clock.Function();
  ShardStore store(options);
  ASSERT_TRUE(store.CreateShards(Create(ASYNC, 1)).ok());
  std::vector<float> g(kSize, 0.1f);
  // 20 pushes and 40 pulls a second for 4 s.
  for (int i = 0; i < 80; ++i) {
    clock.now = start + absl::Milliseconds(50 * i);
    ASSERT_TRUE(Push(&store, PushHeader(0, 0), g).ok());
    PullNow(&store, PullHeader(0));
    PullNow(&store, PullHeader(0));
  }
  clock.now = start + absl::Seconds(4);
  ShardStatus status = store.Status("").shards(0);
  EXPECT_NEAR(status.push_rate(), 20, 0.5);
  EXPECT_NEAR(status.pull_rate(), 40, 1);
  EXPECT_NEAR(status.bytes_in_rate(), 20 * kSize * 4, 40);
  EXPECT_NEAR(status.bytes_out_rate(), 40 * kSize * 4, 80);
  clock.now = start + absl::Seconds(30);
  status = store.Status("").shards(0);
  EXPECT_EQ(status.push_rate(), 0);
  EXPECT_EQ(status.pull_rate(), 0);
  EXPECT_EQ(status.pushes(), 80u);
}

TEST(ShardStoreStatusTest, TheLastRejectedPushIsKept) {
  FakeClock clock;
  ShardStore::Options options;
  options.clock = clock.Function();
  ShardStore store(options);
  ASSERT_TRUE(store.CreateShards(Create(SYNC, 1)).ok());
  EXPECT_EQ(store.Status("").shards(0).last_error(), "");
  EXPECT_EQ(store.Status("").shards(0).last_error_ms(), 0);
  std::vector<float> g(kSize, 1.0f);
  ASSERT_TRUE(Push(&store, PushHeader(1, 0), g).ok());
  clock.now += absl::Seconds(3);
  EXPECT_FALSE(Push(&store, PushHeader(1, 0), g).ok());  // Step 1 was applied.
  ShardStatus status = store.Status("").shards(0);
  EXPECT_EQ(status.last_error(),
            "ALREADY_EXISTS: step 1 was already applied (the shard is at step 1) "
            "(worker 0, step 1)");
  EXPECT_EQ(status.last_error_ms(), absl::ToUnixMillis(clock.now));
  EXPECT_EQ(status.rejected_pushes(), 1u);
  // Refused by the store before the shard (wrong length): kept too.
  clock.now += absl::Seconds(1);
  EXPECT_FALSE(Push(&store, PushHeader(2, 0), std::vector<float>(3)).ok());
  status = store.Status("").shards(0);
  EXPECT_EQ(status.last_error().rfind("INVALID_ARGUMENT: expected 400 bytes", 0), 0u)
      << status.last_error();
  EXPECT_EQ(status.last_error_ms(), absl::ToUnixMillis(clock.now));
  EXPECT_EQ(status.rejected_pushes(), 2u);
}

// The value of the sample `series` (name and labels exactly as rendered) in `text`; -1 if absent.
double Sample(const std::string& text, const std::string& series) {
  const size_t at = text.find("\n" + series + " ");
  if (at == std::string::npos) return -1;
  return std::stod(text.substr(at + series.size() + 2));
}

TEST(ShardStoreMetricsTest, StalenessWaitsAndShardStatistics) {
  MetricsRegistry metrics;
  FakeClock clock;
  ShardStore::Options options;
  options.metrics = &metrics;
  options.clock = clock.Function();
  ShardStore store(options);
  CreateShardsRequest async = Create(ASYNC, 2);
  async.set_job_id("async");
  ASSERT_TRUE(store.CreateShards(async).ok());
  std::vector<float> g(kSize, 0.1f);
  // Both workers computed from version 0; the second push arrives one update later.
  for (uint32_t rank : {0u, 1u}) {
    PushRequest push = PushHeader(0, rank);
    push.set_job_id("async");
    push.set_base_version(0);
    ASSERT_TRUE(Push(&store, push, g).ok());
  }
  PushRequest unmeasured = PushHeader(0, 0);  // No base version: not measured.
  unmeasured.set_job_id("async");
  ASSERT_TRUE(Push(&store, unmeasured, g).ok());

  ASSERT_TRUE(store.CreateShards(Create(SYNC, 2)).ok());
  PullNow(&store, PullHeader(1));
  PushRequest first = PushHeader(1, 0);
  first.set_base_version(0);
  ASSERT_TRUE(Push(&store, first, g).ok());
  clock.now += absl::Milliseconds(250);
  PushRequest second = PushHeader(1, 1);
  second.set_base_version(0);
  ASSERT_TRUE(Push(&store, second, g).ok());

  const std::string text = metrics.Render();
  EXPECT_EQ(Sample(text, "psrv_push_staleness_count{job=\"async\"}"), 2) << text;
  EXPECT_EQ(Sample(text, "psrv_push_staleness_sum{job=\"async\"}"), 1);
  EXPECT_EQ(Sample(text, "psrv_push_staleness_bucket{job=\"async\",le=\"0\"}"), 1);
  EXPECT_EQ(Sample(text, "psrv_push_staleness_sum{job=\"job\"}"), 0);  // SYNC.
  EXPECT_EQ(Sample(text, "psrv_sync_step_wait_seconds_count{job=\"job\"}"), 1);
  EXPECT_EQ(Sample(text, "psrv_sync_step_wait_seconds_sum{job=\"job\"}"), 0.25);
  EXPECT_EQ(Sample(text, "psrv_sync_pull_wait_seconds_count{job=\"job\"}"), 1);
  EXPECT_EQ(Sample(text, "psrv_shard_pushes_total{job=\"async\",table=\"w\",range=\"[0,100)\"}"),
            3);
  EXPECT_EQ(Sample(text, "psrv_shard_version{job=\"async\",table=\"w\",range=\"[0,100)\"}"), 3);
  EXPECT_EQ(Sample(text, "psrv_shard_pulls_total{job=\"job\",table=\"w\",range=\"[0,100)\"}"), 1);
  EXPECT_EQ(
      Sample(text, "psrv_shard_push_bytes_total{job=\"job\",table=\"w\",range=\"[0,100)\"}"),
      2 * kSize * 4);
  EXPECT_EQ(Sample(text, "psrv_shard_elements{job=\"job\",table=\"w\",range=\"[0,100)\"}"), kSize);
  EXPECT_EQ(Sample(text, "psrv_shard_last_update_timestamp_seconds{job=\"job\",table=\"w\","
                         "range=\"[0,100)\"}"),
            absl::ToUnixMillis(clock.now) / 1000.0);
}

TEST(ShardStoreTest, APullKeepsTheValuesItWasAnsweredWithAfterLaterUpdates) {
  ShardStore store;
  ASSERT_TRUE(store.CreateShards(Create(ASYNC, 1)).ok());
  PullPayload held;
  store.Pull(PullHeader(0), [&](absl::Status s, uint64_t, PullPayload values) {
    ASSERT_TRUE(s.ok());
    held = std::move(values);  // As a reply gRPC has not finished sending.
  });
  ASSERT_EQ(held.size(), kSize * sizeof(float));
  ASSERT_TRUE(Push(&store, PushHeader(1, 0), std::vector<float>(kSize, 1.0f)).ok());
  std::vector<float> seen(kSize);
  std::memcpy(seen.data(), held.data(), held.size());
  EXPECT_EQ(seen, Initial());  // The update went to another buffer.
  const std::vector<float> now = PullNow(&store, PullHeader(0));
  EXPECT_FLOAT_EQ(now[0], Initial()[0] - 0.5f);
  held = PullPayload();  // Released: the next update is in place again, and still right.
  ASSERT_TRUE(Push(&store, PushHeader(2, 0), std::vector<float>(kSize, 1.0f)).ok());
  EXPECT_FLOAT_EQ(PullNow(&store, PullHeader(0))[0], Initial()[0] - 1.0f);
}

TEST(ShardStoreTest, Bf16PullsAreTheNarrowedValuesOfTheirVersion) {
  ShardStore store;
  ASSERT_TRUE(store.CreateShards(Create(SYNC, 1)).ok());
  auto pull_bf16 = [&](uint64_t step) { return PullBf16Now(&store, PullHeader(step)); };
  std::vector<uint16_t> expected(kSize);
  FloatsToBf16(Initial().data(), kSize, expected.data());
  EXPECT_EQ(pull_bf16(1), expected);
  EXPECT_EQ(pull_bf16(1), expected);
  ASSERT_TRUE(Push(&store, PushHeader(1, 0), std::vector<float>(kSize, 1.0f)).ok());
  const std::vector<float> after = PullNow(&store, PullHeader(2));
  FloatsToBf16(after.data(), kSize, expected.data());
  EXPECT_EQ(pull_bf16(2), expected);  // Narrowed again for the new version.
}

// A shard bigger than an optimizer chunk (kApplyGrain) and not a whole number of narrowing
// blocks (kNarrowBlock): the BF16 pull after an AdamW step is still every new value narrowed.
TEST(ShardStoreTest, Bf16PullsOfABigShardAreTheNarrowedValuesOfEveryBlock) {
  const uint64_t size = kApplyGrain + 2 * kNarrowBlock + 5;
  CreateShardsRequest create = Create(SYNC, 1, 0, size);
  create.mutable_shards(0)->mutable_table()->set_shape(0, size);
  create.mutable_optimizer()->set_kind(ADAMW);
  create.mutable_optimizer()->set_learning_rate(0.01f);
  create.mutable_optimizer()->set_beta1(0.9f);
  create.mutable_optimizer()->set_beta2(0.99f);
  create.mutable_optimizer()->set_epsilon(1e-8f);
  create.mutable_optimizer()->set_weight_decay(0.1f);
  ShardStore store;
  const absl::Status created = store.CreateShards(create);
  ASSERT_TRUE(created.ok()) << created;
  auto pull_bf16 = [&](uint64_t step) { return PullBf16Now(&store, PullHeader(step, 0, size)); };
  // A worker pulling BF16 (from then on the shard narrows each update as it applies it).
  ASSERT_EQ(pull_bf16(1).size(), size);
  std::vector<float> g(size);  // Never 0.
  for (uint64_t i = 0; i < size; ++i) g[i] = 0.001f * static_cast<float>(i % 977) - 0.4005f;
  ASSERT_TRUE(Push(&store, PushHeader(1, 0, 0, size), g).ok());
  const std::vector<uint16_t> narrowed = pull_bf16(2);
  const std::vector<float> after = PullNow(&store, PullHeader(2, 0, size));
  ASSERT_EQ(after.size(), size);
  std::vector<uint16_t> expected(size);
  FloatsToBf16(after.data(), size, expected.data());
  EXPECT_EQ(narrowed, expected);
  // And the update moved every value (no block skipped).
  std::vector<float> initial(size);
  InitializeRange(create.shards(0).table(), 0, size, initial.data());
  for (uint64_t i = 0; i < size; ++i) ASSERT_NE(after[i], initial[i]) << i;
}

// A single worker's pushes are read by the optimizer from the buffers they arrived in, block by
// block (BF16 widened, FP32 as it is): two AdamW steps of a shard bigger than an optimizer chunk,
// pushed as chunks whose edges are not block edges, BF16 and FP32, the scale committed after
// them, give the values the optimizer computes on the whole gradient at once, bit for bit, and
// BF16 pulls the same values narrowed.
TEST(ShardStoreTest, ASingleWorkersPushesUpdateABigShardAsTheOptimizerOnTheirValues) {
  const uint64_t size = kApplyGrain + 2 * kNarrowBlock + 5;
  CreateShardsRequest create = Create(SYNC, 1, 0, size);
  create.mutable_shards(0)->mutable_table()->set_shape(0, size);
  OptimizerConfig* adamw = create.mutable_optimizer();
  adamw->set_kind(ADAMW);
  adamw->set_learning_rate(0.01f);
  adamw->set_beta1(0.9f);
  adamw->set_beta2(0.99f);
  adamw->set_epsilon(1e-8f);
  adamw->set_weight_decay(0.1f);
  create.mutable_shards(0)->mutable_table()->set_weight_decay(true);
  ShardStore store;
  const absl::Status created = store.CreateShards(create);
  ASSERT_TRUE(created.ok()) << created;
  ASSERT_EQ(PullBf16Now(&store, PullHeader(1, 0, size)).size(), size);  // Narrow from now on.
  // What the optimizer makes of the same gradients, applied to the whole shard in one call.
  const std::unique_ptr<Optimizer> reference =
      Optimizer::Create(create.optimizer(), create.shards(0).table(), size);
  std::vector<float> expected(size);
  InitializeRange(create.shards(0).table(), 0, size, expected.data());
  struct Chunk {
    uint64_t begin, end;
    DType dtype;
  };
  const std::vector<Chunk> chunks = {
      {kNarrowBlock + 77, kApplyGrain + 3, BF16}, {0, kNarrowBlock + 77, FP32},
      {kApplyGrain + 3, size, BF16}};
  for (uint64_t step = 1; step <= 2; ++step) {
    SCOPED_TRACE(::testing::Message() << "step " << step);
    const float scale = step == 1 ? 0.37f : 1.9f;
    std::vector<float> gradient(size);  // As the optimizer sees it, before the scale.
    for (const Chunk& chunk : chunks) {
      const uint64_t n = chunk.end - chunk.begin;
      PushRequest push = PushHeader(step, 0, chunk.begin, chunk.end);
      push.set_dtype(chunk.dtype);
      push.set_scale_follows(true);
      std::vector<float> values(n);
      for (uint64_t i = 0; i < n; ++i) {
        values[i] = 0.001f * static_cast<float>((chunk.begin + i + 31 * step) % 977) - 0.4005f;
      }
      if (chunk.dtype == BF16) {
        std::vector<uint16_t> wire(n);
        FloatsToBf16(values.data(), n, wire.data());
        ASSERT_TRUE(PushBytes(&store, push, wire.data(), n * sizeof(uint16_t)).ok());
        Bf16ToFloats(wire.data(), n, gradient.data() + chunk.begin);
      } else {
        ASSERT_TRUE(Push(&store, push, values).ok());
        std::copy(values.begin(), values.end(), gradient.begin() + chunk.begin);
      }
    }
    CommitStepRequest commit;
    commit.set_job_id("job");
    commit.set_worker_rank(0);
    commit.set_step(step);
    commit.set_grad_scale(scale);
    ASSERT_TRUE(store.CommitStep(commit).ok());
    reference->ApplyScaled(gradient.data(), scale, expected.data(), expected.data(), 0, size,
                           step);
    const std::vector<float> after = PullNow(&store, PullHeader(step + 1, 0, size));
    ASSERT_EQ(after.size(), size);
    ASSERT_EQ(std::memcmp(after.data(), expected.data(), size * sizeof(float)), 0);
    std::vector<uint16_t> narrowed(size);
    FloatsToBf16(expected.data(), size, narrowed.data());
    EXPECT_EQ(PullBf16Now(&store, PullHeader(step + 1, 0, size)), narrowed);
  }
}

TEST(ShardStoreTest, ACommittedScaleEqualsAGradientScaledBeforeThePush) {
  const std::vector<float> g = [] {
    std::vector<float> v(kSize);
    for (uint64_t i = 0; i < kSize; ++i) v[i] = 0.01f * static_cast<float>(i) - 0.3f;
    return v;
  }();
  const float scale = 0.371f;
  ShardStore scaled_first, scaled_later;
  ASSERT_TRUE(scaled_first.CreateShards(Create(SYNC, 2)).ok());
  ASSERT_TRUE(scaled_later.CreateShards(Create(SYNC, 2)).ok());
  std::vector<float> pre(kSize);
  for (uint64_t i = 0; i < kSize; ++i) pre[i] = g[i] * scale;
  ASSERT_TRUE(Push(&scaled_first, PushHeader(1, 0), pre).ok());
  ASSERT_TRUE(Push(&scaled_first, PushHeader(1, 1), g).ok());

  PushRequest deferred = PushHeader(1, 0);
  deferred.set_scale_follows(true);
  ASSERT_TRUE(Push(&scaled_later, deferred, g).ok());
  ASSERT_TRUE(Push(&scaled_later, PushHeader(1, 1), g).ok());
  EXPECT_EQ(PullNow(&scaled_later, PullHeader(1)), Initial());  // Waiting for rank 0's scale.
  CommitStepRequest commit;
  commit.set_job_id("job");
  commit.set_worker_rank(0);
  commit.set_step(1);
  commit.set_grad_scale(scale);
  ASSERT_TRUE(scaled_later.CommitStep(commit).ok());
  EXPECT_EQ(PullNow(&scaled_later, PullHeader(2)), PullNow(&scaled_first, PullHeader(2)));
  // A resend is recognised.
  EXPECT_EQ(scaled_later.CommitStep(commit).code(), absl::StatusCode::kAlreadyExists);
}

TEST(ShardStoreTest, BadCommitsAreRefusedAndChangeNothing) {
  ShardStore store;
  ASSERT_TRUE(store.CreateShards(Create(SYNC, 1)).ok());
  PushRequest deferred = PushHeader(1, 0);
  deferred.set_scale_follows(true);
  ASSERT_TRUE(Push(&store, deferred, std::vector<float>(kSize, 1.0f)).ok());
  CommitStepRequest commit;
  commit.set_job_id("job");
  commit.set_step(1);
  commit.set_grad_scale(0.5f);
  auto code = [&](const CommitStepRequest& r) { return store.CommitStep(r).code(); };
  CommitStepRequest bad = commit;
  bad.set_job_id("other");
  EXPECT_EQ(code(bad), absl::StatusCode::kNotFound);
  bad = commit;
  bad.set_worker_rank(1);
  EXPECT_EQ(code(bad), absl::StatusCode::kInvalidArgument);
  bad = commit;
  bad.set_grad_scale(-1.0f);
  EXPECT_EQ(code(bad), absl::StatusCode::kInvalidArgument);
  bad.set_grad_scale(std::numeric_limits<float>::infinity());
  EXPECT_EQ(code(bad), absl::StatusCode::kInvalidArgument);
  bad = commit;
  bad.set_step(2);
  EXPECT_EQ(code(bad), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(PullNow(&store, PullHeader(1)), Initial());  // Nothing applied.
  // A push without scale_follows after a commit-style push of the same step is refused.
  PushRequest mixed = PushHeader(1, 0);
  EXPECT_EQ(Push(&store, mixed, std::vector<float>(kSize, 1.0f)).status().code(),
            absl::StatusCode::kAlreadyExists);  // (Overlapping keys: a resend.)

  ShardStore async;
  ASSERT_TRUE(async.CreateShards(Create(ASYNC, 1)).ok());
  EXPECT_EQ(async.CommitStep(commit).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(Push(&async, deferred, std::vector<float>(kSize, 1.0f)).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(PullNow(&async, PullHeader(0)), Initial());
}

}  // namespace
}  // namespace psrv
