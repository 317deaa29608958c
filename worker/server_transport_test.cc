// The gRPC ServerTransport against a real parameter server in this process (worker/testing/
// test_server.h): corked pulls and pushes travel as one PullBatch / PushBatch call per connection
// (a step's big ones spread over both connections) and each keeps its own answer; held calls that are cancelled are never sent. And the batch
// methods of ps_server against hostile requests: a batch that cannot be framed is refused whole
// and changes nothing; a bad item is refused alone.
#include "worker/server_transport.h"

#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include <grpcpp/generic/generic_stub.h>

#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "common/bf16.h"
#include "common/channel.h"
#include "common/initializer.h"
#include "common/key_range.h"
#include "common/wire.h"
#include "gtest/gtest.h"
#include "worker/testing/test_job.h"
#include "worker/testing/test_server.h"

namespace psrv {
namespace {

constexpr float kLearningRate = 0.25f;
constexpr char kPull[] = "/psrv.ParameterServer/Pull";
constexpr char kPush[] = "/psrv.ParameterServer/Push";
constexpr char kPullBatch[] = "/psrv.ParameterServer/PullBatch";
constexpr char kPushBatch[] = "/psrv.ParameterServer/PushBatch";
constexpr char kCommit[] = "/psrv.ParameterServer/CommitStep";

// Tables d to g are big enough that four of them held for one step are spread over both
// connections (80 KB each in FP32, 320 KB together).
constexpr uint64_t kBigKeys = 20000;

std::vector<TableSpec> Tables() {
  return {NormalTable("a", {300}, 1),      NormalTable("b", {200}, 2),
          NormalTable("c", {100}, 3),      NormalTable("d", {kBigKeys}, 4),
          NormalTable("e", {kBigKeys}, 5), NormalTable("f", {kBigKeys}, 6),
          NormalTable("g", {kBigKeys}, 7)};
}

std::vector<float> Initial(const std::string& table) {
  for (const TableSpec& spec : Tables()) {
    if (spec.name() != table) continue;
    std::vector<float> values(spec.shape(0));
    InitializeRange(spec, 0, values.size(), values.data());
    return values;
  }
  return {};
}

template <typename Request>
Request For(const std::string& table, uint64_t end, uint64_t step, DType dtype) {
  Request request;
  request.set_job_id("job");
  request.set_table(table);
  *request.mutable_range() = MakeRange(0, end);
  request.set_dtype(dtype);
  request.set_step(step);
  return request;
}

// One call's end, as its callbacks saw it.
struct Outcome {
  absl::Notification done;
  absl::Status status;
  uint64_t version = 0;
  std::atomic<bool> released{false};
};

class ServerTransportTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_NE(server_.server, nullptr);
    std::vector<ShardAssignment> shards = {ShardOn("a", 0, 300, server_.address),
                                           ShardOn("b", 0, 200, server_.address),
                                           ShardOn("c", 0, 100, server_.address)};
    for (const char* table : {"d", "e", "f", "g"}) {
      shards.push_back(ShardOn(table, 0, kBigKeys, server_.address));
    }
    const ShardMap map = TestShardMap(Tables(), shards);
    ASSERT_TRUE(server_.store.CreateShards(CreateSgdShards(map, server_.address, kLearningRate))
                    .ok());
    transport_ = CreateGrpcServerTransport(server_.address, 2);
  }

  void TearDown() override {
    transport_.reset();
    server_.Stop();
  }

  // Starts a dense pull of `table` into `out` (its size), over `connection`.
  Outcome* Pull(const std::string& table, uint64_t step, DType dtype, int connection,
                std::vector<float>* out) {
    outcomes_.push_back(std::make_unique<Outcome>());
    Outcome* outcome = outcomes_.back().get();
    transport_->Pull(For<PullRequest>(table, out->size(), step, dtype), connection,
                     absl::Now() + absl::Seconds(10),
                     out->size() * (dtype == BF16 ? sizeof(uint16_t) : sizeof(float)),
                     FloatsInto(out->data(), dtype == BF16),
                     [outcome](absl::Status status, uint64_t version) {
                       outcome->status = status;
                       outcome->version = version;
                       outcome->done.Notify();
                     });
    return outcome;
  }

  // Starts a dense push of `bytes` at `payload` (unchanged until released) for `table`'s first
  // `keys` keys.
  Outcome* Push(const std::string& table, uint64_t keys, uint64_t step, DType dtype,
                const void* payload, size_t bytes) {
    outcomes_.push_back(std::make_unique<Outcome>());
    Outcome* outcome = outcomes_.back().get();
    transport_->Push(
        For<PushRequest>(table, keys, step, dtype), 0, absl::Now() + absl::Seconds(10), payload,
        bytes,
        [outcome](absl::Status status) {
          outcome->status = status;
          outcome->done.Notify();
        },
        [outcome] { outcome->released = true; });
    return outcome;
  }

  void AwaitAll() {
    for (auto& outcome : outcomes_) {
      ASSERT_TRUE(outcome->done.WaitForNotificationWithTimeout(absl::Seconds(20)));
    }
  }

  int64_t VersionOf(const std::string& table) {
    const ServerStatus status = server_.store.Status("job");
    for (const auto& shard : status.shards()) {
      if (shard.table() == table) return static_cast<int64_t>(shard.version());
    }
    return -1;
  }

  TestServer server_;
  std::unique_ptr<ServerTransport> transport_;
  std::vector<std::unique_ptr<Outcome>> outcomes_;
};

TEST_F(ServerTransportTest, CorkedCallsTravelAsOneBatchCallPerConnection) {
  // Pulls: a (FP32) and b (BF16) on connection 0 go as one batch; c alone on connection 1 goes
  // as a plain Pull.
  std::vector<float> a(300), b(200), c(100);
  transport_->Cork();
  Outcome* pa = Pull("a", 1, FP32, 0, &a);
  Outcome* pb = Pull("b", 1, BF16, 0, &b);
  Outcome* pc = Pull("c", 1, FP32, 1, &c);
  transport_->Uncork();
  AwaitAll();
  for (Outcome* outcome : {pa, pb, pc}) {
    EXPECT_TRUE(outcome->status.ok()) << outcome->status;
    EXPECT_EQ(outcome->version, 0u);
  }
  EXPECT_EQ(server_.calls->count(kPullBatch), 1);
  EXPECT_EQ(server_.calls->count(kPull), 1);
  EXPECT_EQ(a, Initial("a"));
  EXPECT_EQ(c, Initial("c"));
  const std::vector<float> b0 = Initial("b");
  for (size_t i = 0; i < b.size(); ++i) ASSERT_EQ(b[i], Bf16ToFloat(FloatToBf16(b0[i]))) << i;

  // Pushes of all three (b in BF16) and the commit-free SYNC step they complete: one PushBatch.
  std::vector<float> ga(300), gc(100);
  std::vector<uint16_t> gb(200);
  for (size_t i = 0; i < ga.size(); ++i) ga[i] = 0.01f * static_cast<float>(i % 17) - 0.05f;
  for (size_t i = 0; i < gb.size(); ++i) gb[i] = FloatToBf16(0.003f * static_cast<float>(i));
  for (size_t i = 0; i < gc.size(); ++i) gc[i] = -0.02f * static_cast<float>(i % 5);
  outcomes_.clear();
  transport_->Cork();
  transport_->Cork();  // Corks nest: nothing goes until the outer Uncork.
  Push("a", 300, 1, FP32, ga.data(), ga.size() * sizeof(float));
  Push("b", 200, 1, BF16, gb.data(), gb.size() * sizeof(uint16_t));
  Push("c", 100, 1, FP32, gc.data(), gc.size() * sizeof(float));
  transport_->Uncork();
  EXPECT_EQ(server_.calls->count(kPushBatch), 0);
  transport_->Uncork();
  AwaitAll();
  for (auto& outcome : outcomes_) EXPECT_TRUE(outcome->status.ok()) << outcome->status;
  EXPECT_EQ(server_.calls->count(kPushBatch), 1);
  EXPECT_EQ(server_.calls->count(kPush), 0);
  for (const char* table : {"a", "b", "c"}) EXPECT_EQ(VersionOf(table), 1) << table;

  // The step's values: w - lr * g, as a push of each alone would have made them.
  outcomes_.clear();
  transport_->Cork();
  Pull("a", 2, FP32, 1, &a);
  Pull("b", 2, FP32, 1, &b);
  Pull("c", 2, FP32, 1, &c);
  transport_->Uncork();
  AwaitAll();
  for (auto& outcome : outcomes_) {
    EXPECT_TRUE(outcome->status.ok()) << outcome->status;
    EXPECT_EQ(outcome->version, 1u);
  }
  EXPECT_EQ(server_.calls->count(kPullBatch), 2);
  const std::vector<float> a0 = Initial("a"), c0 = Initial("c");
  for (size_t i = 0; i < a.size(); ++i) ASSERT_EQ(a[i], a0[i] - kLearningRate * ga[i]) << i;
  for (size_t i = 0; i < b.size(); ++i) {
    ASSERT_EQ(b[i], b0[i] - kLearningRate * Bf16ToFloat(gb[i])) << i;
  }
  for (size_t i = 0; i < c.size(); ++i) ASSERT_EQ(c[i], c0[i] - kLearningRate * gc[i]) << i;
}

TEST_F(ServerTransportTest, AStepsBigHeldCallsAreSpreadOverTheConnections) {
  // Four pulls and four pushes of 80 KB, all for connection 0 (320 KB each way): one batch per
  // connection each way, and every item's values as its own call would have them.
  const std::vector<std::string> tables = {"d", "e", "f", "g"};
  std::vector<std::vector<float>> values(tables.size(), std::vector<float>(kBigKeys));
  transport_->Cork();
  for (size_t i = 0; i < tables.size(); ++i) Pull(tables[i], 1, FP32, 0, &values[i]);
  transport_->Uncork();
  AwaitAll();
  for (auto& outcome : outcomes_) EXPECT_TRUE(outcome->status.ok()) << outcome->status;
  EXPECT_EQ(server_.calls->count(kPullBatch), 2);
  EXPECT_EQ(server_.calls->count(kPull), 0);
  for (size_t i = 0; i < tables.size(); ++i) EXPECT_EQ(values[i], Initial(tables[i])) << i;

  std::vector<std::vector<float>> grads(tables.size(), std::vector<float>(kBigKeys));
  for (size_t i = 0; i < tables.size(); ++i) {
    for (size_t k = 0; k < kBigKeys; ++k) {
      grads[i][k] = 0.001f * static_cast<float>((k * (i + 3)) % 23) - 0.01f;
    }
  }
  outcomes_.clear();
  transport_->Cork();
  for (size_t i = 0; i < tables.size(); ++i) {
    Push(tables[i], kBigKeys, 1, FP32, grads[i].data(), kBigKeys * sizeof(float));
  }
  transport_->Uncork();
  AwaitAll();
  for (auto& outcome : outcomes_) EXPECT_TRUE(outcome->status.ok()) << outcome->status;
  EXPECT_EQ(server_.calls->count(kPushBatch), 2);
  EXPECT_EQ(server_.calls->count(kPush), 0);

  outcomes_.clear();
  transport_->Cork();
  for (size_t i = 0; i < tables.size(); ++i) Pull(tables[i], 2, FP32, 0, &values[i]);
  transport_->Uncork();
  AwaitAll();
  for (auto& outcome : outcomes_) {
    EXPECT_TRUE(outcome->status.ok()) << outcome->status;
    EXPECT_EQ(outcome->version, 1u);
  }
  for (size_t i = 0; i < tables.size(); ++i) {
    const std::vector<float> initial = Initial(tables[i]);
    for (size_t k = 0; k < kBigKeys; ++k) {
      ASSERT_EQ(values[i][k], initial[k] - kLearningRate * grads[i][k]) << tables[i] << " " << k;
    }
  }
}

TEST_F(ServerTransportTest, EachItemOfABatchIsAnsweredAsItsOwnCallWouldBe) {
  std::vector<float> ga(300, 0.5f), gz(10, 1.0f), gb(200, 1.0f);
  transport_->Cork();
  Outcome* good = Push("a", 300, 1, FP32, ga.data(), ga.size() * sizeof(float));
  Outcome* unknown = Push("zz", 10, 1, FP32, gz.data(), gz.size() * sizeof(float));
  Outcome* step0 = Push("b", 200, 0, FP32, gb.data(), gb.size() * sizeof(float));
  transport_->Uncork();
  AwaitAll();
  EXPECT_EQ(server_.calls->count(kPushBatch), 1);
  EXPECT_TRUE(good->status.ok()) << good->status;
  EXPECT_EQ(unknown->status.code(), absl::StatusCode::kNotFound) << unknown->status;
  EXPECT_NE(unknown->status.message().find("push zz to " + server_.address), std::string::npos)
      << unknown->status;
  EXPECT_EQ(step0->status.code(), absl::StatusCode::kInvalidArgument) << step0->status;
  EXPECT_EQ(VersionOf("a"), 1);
  EXPECT_EQ(VersionOf("b"), 0);
  for (Outcome* outcome : {good, unknown, step0}) EXPECT_TRUE(outcome->released);

  outcomes_.clear();
  std::vector<float> a(300), z(10), c(100);
  transport_->Cork();
  Outcome* pa = Pull("a", 2, FP32, 0, &a);
  Outcome* pz = Pull("zz", 1, FP32, 0, &z);
  Outcome* pc = Pull("c", 1, FP32, 0, &c);
  transport_->Uncork();
  AwaitAll();
  EXPECT_EQ(server_.calls->count(kPullBatch), 1);
  EXPECT_TRUE(pa->status.ok()) << pa->status;
  EXPECT_EQ(pa->version, 1u);
  EXPECT_EQ(pz->status.code(), absl::StatusCode::kNotFound) << pz->status;
  EXPECT_TRUE(pc->status.ok()) << pc->status;
  EXPECT_EQ(c, Initial("c"));  // After the failed item's (absent) values, c's are in place.
  EXPECT_EQ(a[7], Initial("a")[7] - kLearningRate * 0.5f);
}

TEST_F(ServerTransportTest, CancelledHeldCallsEndAtOnceAndAreNeverSent) {
  std::vector<float> ga(300, 0.5f), c(100);
  transport_->Cork();
  Outcome* push = Push("a", 300, 1, FP32, ga.data(), ga.size() * sizeof(float));
  Outcome* pull = Pull("c", 1, FP32, 0, &c);
  outcomes_.push_back(std::make_unique<Outcome>());
  Outcome* commit = outcomes_.back().get();
  CommitStepRequest request;
  request.set_job_id("job");
  request.set_step(1);
  request.set_grad_scale(1.0f);
  transport_->CommitStep(request, absl::Now() + absl::Seconds(10), [commit](absl::Status status) {
    commit->status = status;
    commit->done.Notify();
  });
  transport_->CancelAll();
  AwaitAll();
  for (Outcome* outcome : {push, pull, commit}) {
    EXPECT_EQ(outcome->status.code(), absl::StatusCode::kCancelled) << outcome->status;
  }
  EXPECT_TRUE(push->released);
  transport_->Uncork();
  // A call after them goes through, alone: the cancelled ones did not travel with it.
  outcomes_.clear();
  Outcome* later = Pull("c", 1, FP32, 0, &c);
  AwaitAll();
  EXPECT_TRUE(later->status.ok()) << later->status;
  for (const char* method : {kPush, kPushBatch, kPullBatch, kCommit}) {
    EXPECT_EQ(server_.calls->count(method), 0) << method;
  }
  EXPECT_EQ(server_.calls->count(kPull), 1);
  EXPECT_EQ(VersionOf("a"), 0);
}

void NoRelease(void*) {}

// Raw calls to the batch methods, as any gRPC client could make them.
class BatchMethodsTest : public ServerTransportTest {
 protected:
  grpc::Status Call(const char* method, grpc::ByteBuffer* message, grpc::ByteBuffer* reply) {
    grpc::GenericStub stub(CreateChannel(server_.address));
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
    absl::Notification done;
    grpc::Status result;
    stub.UnaryCall(&context, method, grpc::StubOptions(), message, reply,
                   [&](grpc::Status status) {
                     result = status;
                     done.Notify();
                   });
    done.WaitForNotification();
    return result;
  }

  // A PushBatch of `header`'s items with `bytes` of `payload`; fills `reply` when OK.
  grpc::Status PushBatch(const PushBatchRequest& header, const void* payload, size_t bytes,
                         PushBatchResponse* reply = nullptr) {
    grpc::ByteBuffer message, response;
    SerializeWithPayloads(header, {PayloadSlice{payload, bytes, &NoRelease, nullptr}}, &message);
    const grpc::Status status = Call(kPushBatch, &message, &response);
    if (status.ok() && reply != nullptr) {
      EXPECT_TRUE(ParseWithoutPayload(&response, reply, "values in the reply").ok());
    }
    return status;
  }

  bool NothingApplied() {
    return VersionOf("a") == 0 && VersionOf("b") == 0 && VersionOf("c") == 0;
  }
};

TEST_F(BatchMethodsTest, APushBatchThatCannotBeFramedIsRefusedWholeAndChangesNothing) {
  const std::vector<float> values(1000, 0.25f);
  PushBatchRequest two;
  *two.add_pushes() = For<PushRequest>("a", 300, 1, FP32);
  *two.add_pushes() = For<PushRequest>("c", 100, 1, FP32);
  // One byte short, one byte over.
  EXPECT_EQ(PushBatch(two, values.data(), 1599).error_code(), grpc::INVALID_ARGUMENT);
  EXPECT_EQ(PushBatch(two, values.data(), 1601).error_code(), grpc::INVALID_ARGUMENT);
  // No items; too many.
  EXPECT_EQ(PushBatch(PushBatchRequest(), values.data(), 0).error_code(), grpc::INVALID_ARGUMENT);
  PushBatchRequest many;
  for (int i = 0; i < 4097; ++i) *many.add_pushes() = For<PushRequest>("c", 0, 1, FP32);
  EXPECT_EQ(PushBatch(many, values.data(), 0).error_code(), grpc::INVALID_ARGUMENT);
  // An item that is not FP32 or BF16, or whose range ends before it begins.
  PushBatchRequest fp16 = two;
  fp16.mutable_pushes(1)->set_dtype(FP16);
  EXPECT_EQ(PushBatch(fp16, values.data(), 1400).error_code(), grpc::INVALID_ARGUMENT);
  PushBatchRequest backwards = two;
  *backwards.mutable_pushes(1)->mutable_range() = MakeRange(100, 0);
  EXPECT_EQ(PushBatch(backwards, values.data(), 1200).error_code(), grpc::INVALID_ARGUMENT);
  // A range whose byte count overflows.
  PushBatchRequest huge = two;
  huge.mutable_pushes(1)->mutable_range()->set_end(uint64_t{1} << 62);
  EXPECT_EQ(PushBatch(huge, values.data(), 1600).error_code(), grpc::INVALID_ARGUMENT);
  EXPECT_TRUE(NothingApplied());
  EXPECT_EQ(server_.version(), 0);
}

TEST_F(BatchMethodsTest, ABadItemIsRefusedAloneAndTheOthersApplied) {
  // a: a sparse item (indices) is refused; b: a NaN among its values; c: fine.
  std::vector<float> values(600, 0.5f);
  values[300 + 17] = std::numeric_limits<float>::quiet_NaN();
  PushBatchRequest batch;
  *batch.add_pushes() = For<PushRequest>("a", 300, 1, FP32);
  batch.mutable_pushes(0)->add_indices(3);
  *batch.add_pushes() = For<PushRequest>("b", 200, 1, FP32);
  *batch.add_pushes() = For<PushRequest>("c", 100, 1, FP32);
  PushBatchResponse reply;
  const grpc::Status status =
      PushBatch(batch, values.data(), values.size() * sizeof(float), &reply);
  ASSERT_TRUE(status.ok()) << status.error_message();
  ASSERT_EQ(reply.results_size(), 3);
  EXPECT_EQ(reply.results(0).code(), static_cast<int>(absl::StatusCode::kInvalidArgument));
  EXPECT_EQ(reply.results(1).code(), static_cast<int>(absl::StatusCode::kInvalidArgument));
  EXPECT_NE(reply.results(1).message().find("NaN"), std::string::npos)
      << reply.results(1).message();
  EXPECT_EQ(reply.results(2).code(), 0) << reply.results(2).message();
  EXPECT_EQ(reply.results(2).version(), 1u);
  EXPECT_EQ(VersionOf("a"), 0);
  EXPECT_EQ(VersionOf("b"), 0);
  EXPECT_EQ(VersionOf("c"), 1);
}

TEST_F(BatchMethodsTest, APullBatchWithValuesOrWithoutItemsIsRefused) {
  PullBatchRequest one;
  *one.add_pulls() = For<PullRequest>("c", 100, 1, FP32);
  const float value = 1.0f;
  grpc::ByteBuffer message, reply;
  SerializeWithPayloads(one, {PayloadSlice{&value, sizeof(value), &NoRelease, nullptr}}, &message);
  EXPECT_EQ(Call(kPullBatch, &message, &reply).error_code(), grpc::INVALID_ARGUMENT);
  grpc::ByteBuffer empty;
  SerializeWithPayloads(PullBatchRequest(), {}, &empty);
  EXPECT_EQ(Call(kPullBatch, &empty, &reply).error_code(), grpc::INVALID_ARGUMENT);
}

}  // namespace
}  // namespace psrv
