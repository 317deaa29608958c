// ParameterClient against real parameter servers in this process (ParameterService over a
// ShardStore, gRPC on 127.0.0.1): the flat buffer's layout, pulls in FP32 and BF16, one SYNC step,
// resent pushes, and the errors a worker acts on (a shard map that does not cover its tables, a
// server down, a deadline).
#include "worker/parameter_client.h"
#include "worker/shard_targets.h"

#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/bf16.h"
#include "common/channel.h"
#include "common/initializer.h"
#include "gtest/gtest.h"
#include "server/parameter_service.h"
#include "server/shard_store.h"
#include "worker/testing/test_job.h"
#include "worker/testing/test_server.h"

namespace psrv {
namespace {

constexpr float kLearningRate = 0.25f;
constexpr size_t kParameters = 1200 + 700;  // Tables "z" then "a".

// In shard-map order "z" comes first: the flat buffer follows the map, not the names.
std::vector<TableSpec> Tables() {
  return {NormalTable("z", {300, 4}, 7), NormalTable("a", {700}, 8)};
}

ShardMap MapOf(const std::vector<ShardAssignment>& shards) {
  return TestShardMap(Tables(), shards);
}

// An address where nothing listens: a server's port, after it stopped.
std::string DeadAddress() {
  TestServer server;
  std::string address = server.address;
  server.Stop();
  return address;
}

class ParameterClientTest : public ::testing::Test {
 protected:
  // "z" over both servers, "a" too, each shard several chunks (of at most 64 keys). The shards
  // are listed out of table order.
  void SetUp() override {
    for (auto& server : servers_) ASSERT_NE(server.server, nullptr);
    const std::string& first = servers_[0].address;
    const std::string& second = servers_[1].address;
    shards_ = {ShardOn("a", 350, 700, first), ShardOn("z", 0, 500, first),
               ShardOn("z", 500, 1200, second), ShardOn("a", 0, 350, second)};
    for (auto& server : servers_) {
      ASSERT_TRUE(
          server.store.CreateShards(CreateSgdShards(MapOf(shards_), server.address, kLearningRate))
              .ok());
    }
  }

  void TearDown() override {
    for (auto& server : servers_) server.Stop();
  }

  std::unique_ptr<ParameterClient> Client(DType wire_dtype = FP32) {
    return ClientFor(MapOf(shards_), wire_dtype);
  }

  static std::unique_ptr<ParameterClient> ClientFor(const ShardMap& map,
                                                    DType wire_dtype = FP32) {
    ParameterClient::Options options;
    options.max_chunk_bytes = 64 * sizeof(float);
    options.wire_dtype = wire_dtype;
    absl::StatusOr<std::unique_ptr<ParameterClient>> client =
        ParameterClient::Create(map, /*worker_rank=*/0, options);
    EXPECT_TRUE(client.ok()) << client.status();
    return client.ok() ? std::move(*client) : nullptr;
  }

  // Step 1 of the job: pull, push `grads`, and pull step 2's values into `after`.
  static void StepOne(ParameterClient* client, const std::vector<float>& grads,
                      std::vector<float>* after) {
    after->assign(kParameters, 0.0f);
    ASSERT_TRUE(client->Pull(1, after->data(), absl::Seconds(5)).ok());
    ASSERT_TRUE(client->Push(1, grads.data(), absl::Seconds(5)).ok());
    ASSERT_TRUE(client->Pull(2, after->data(), absl::Seconds(5)).ok());
  }

  TestServer servers_[2];
  std::vector<ShardAssignment> shards_;
};

// A gradient with positive, negative and zero entries.
std::vector<float> Gradient(float base) {
  std::vector<float> g(kParameters);
  for (size_t i = 0; i < g.size(); ++i) g[i] = base * (static_cast<float>(i % 11) - 5.0f);
  return g;
}

// A pipeline stage's part: the ranges of tables it holds, packed table by table; shards outside
// it are skipped, one straddling its ends refused; pull-only tables marked.
TEST_F(ParameterClientTest, APartPlansOnlyItsKeysPackedTableByTable) {
  auto on = [address = servers_[0].address](const std::string& table, uint64_t begin,
                                             uint64_t end) {
    return ShardOn(table, begin, end, address);
  };
  const ShardMap map = MapOf({on("z", 0, 400), on("z", 400, 800), on("z", 800, 1200),
                              on("a", 0, 700)});
  TargetOptions options;
  options.part["z"] = MakeRange(400, 1200);
  options.part["a"] = MakeRange(0, 700);
  options.pull_only = {"a"};
  absl::StatusOr<TargetPlan> plan = PlanTargets(map, options);
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->num_parameters, 800u + 700u);
  ASSERT_EQ(plan->targets.size(), 3u);
  EXPECT_EQ(plan->targets[0].range.begin(), 400u);
  EXPECT_EQ(plan->targets[0].flat_offset, 0u);
  EXPECT_EQ(plan->targets[1].flat_offset, 400u);
  EXPECT_EQ(plan->targets[2].table, "a");
  EXPECT_EQ(plan->targets[2].flat_offset, 800u);
  EXPECT_FALSE(plan->targets[0].pull_only);
  EXPECT_TRUE(plan->targets[2].pull_only);
  // Only "z": "a" is another stage's.
  options.part.erase("a");
  plan = PlanTargets(map, options);
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->num_parameters, 800u);
  options.part["z"] = MakeRange(300, 1200);  // A shard straddles 300.
  EXPECT_EQ(PlanTargets(map, options).status().code(), absl::StatusCode::kInvalidArgument);
  options.part["z"] = MakeRange(0, 1300);  // Past the table.
  EXPECT_EQ(PlanTargets(map, options).status().code(), absl::StatusCode::kInvalidArgument);
  options.part = {{"y", MakeRange(0, 1)}};  // No such table.
  EXPECT_EQ(PlanTargets(map, options).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(ParameterClientTest, CreateRefusesAShardMapThatDoesNotCoverItsTablesExactly) {
  auto on = [address = servers_[0].address](const std::string& table, uint64_t begin,
                                             uint64_t end) {
    return ShardOn(table, begin, end, address);
  };
  const std::vector<std::pair<std::string, std::vector<ShardAssignment>>> bad = {
      {"a gap", {on("z", 0, 1100), on("a", 0, 700)}},
      {"a table without shards", {on("z", 0, 1200)}},
      {"overlapping shards", {on("z", 0, 700), on("z", 600, 1200), on("a", 0, 700)}},
      {"an overlap that makes up for a gap", {on("z", 0, 600), on("z", 0, 600), on("a", 0, 700)}},
      {"a shard past its table's end", {on("z", 0, 1200), on("a", 0, 701)}},
      {"a shard of an unknown table", {on("z", 0, 1200), on("a", 0, 700), on("b", 0, 1)}},
      {"an empty shard", {on("z", 0, 1200), on("a", 0, 700), on("a", 5, 5)}},
  };
  for (const auto& [what, shards] : bad) {
    absl::StatusOr<std::unique_ptr<ParameterClient>> client =
        ParameterClient::Create(MapOf(shards), 0);
    EXPECT_EQ(client.status().code(), absl::StatusCode::kInvalidArgument) << what;
  }

  std::unique_ptr<ParameterClient> client = Client();
  ASSERT_NE(client, nullptr);
  EXPECT_EQ(client->num_parameters(), kParameters);
  EXPECT_EQ(client->TableOffset("z"), 0);
  EXPECT_EQ(client->TableOffset("a"), 1200);
  EXPECT_EQ(client->TableOffset("b"), -1);

  ParameterClient::Options fp16;
  fp16.wire_dtype = FP16;
  EXPECT_EQ(ParameterClient::Create(MapOf(shards_), 0, fp16).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(ParameterClientTest, PullFillsTheBufferInTableOrderWithTheInitialValues) {
  std::unique_ptr<ParameterClient> client = Client(FP32);
  ASSERT_NE(client, nullptr);
  std::vector<float> params(kParameters, -1.0f);
  ASSERT_TRUE(client->Pull(1, params.data(), absl::Seconds(5)).ok());
  EXPECT_EQ(params, InitializeTables(Tables()));
}

TEST_F(ParameterClientTest, Bf16PullGivesTheRoundedInitialValues) {
  std::unique_ptr<ParameterClient> client = Client(BF16);
  ASSERT_NE(client, nullptr);
  std::vector<float> params(kParameters, -1.0f);
  ASSERT_TRUE(client->Pull(1, params.data(), absl::Seconds(5)).ok());
  std::vector<float> expected = InitializeTables(Tables());
  size_t rounded = 0;
  for (float& x : expected) {
    const float bf16 = Bf16ToFloat(FloatToBf16(x));
    rounded += bf16 != x;
    x = bf16;
  }
  EXPECT_GT(rounded, kParameters / 2);  // The comparison tells bf16 from fp32.
  EXPECT_EQ(params, expected);
}

TEST_F(ParameterClientTest, PushThenPullAppliesOneSgdStep) {
  std::unique_ptr<ParameterClient> client = Client();
  ASSERT_NE(client, nullptr);
  const std::vector<float> grads = Gradient(0.1f);
  std::vector<float> params;
  ASSERT_NO_FATAL_FAILURE(StepOne(client.get(), grads, &params));

  // SGD, one worker: w - lr * g (the servers compute the mean times 1, in float).
  std::vector<float> expected = InitializeTables(Tables());
  for (size_t i = 0; i < kParameters; ++i) expected[i] -= kLearningRate * grads[i];
  EXPECT_EQ(params, expected);
  EXPECT_EQ(servers_[0].version(), 1);
  EXPECT_EQ(servers_[1].version(), 1);
}

TEST_F(ParameterClientTest, PushingAnAppliedStepAgainIsAcceptedAndChangesNothing) {
  std::unique_ptr<ParameterClient> client = Client();
  ASSERT_NE(client, nullptr);
  std::vector<float> after;
  ASSERT_NO_FATAL_FAILURE(StepOne(client.get(), Gradient(0.1f), &after));

  // The same client again, and another one (it has no record of what was accepted: every chunk
  // is sent, and every shard answers ALREADY_EXISTS), with another gradient.
  const std::vector<float> other = Gradient(1.0f);
  EXPECT_TRUE(client->Push(1, other.data(), absl::Seconds(5)).ok());
  std::unique_ptr<ParameterClient> resender = Client();
  ASSERT_NE(resender, nullptr);
  absl::Status resent = resender->Push(1, other.data(), absl::Seconds(5));
  EXPECT_TRUE(resent.ok()) << resent;

  std::vector<float> again(kParameters);
  ASSERT_TRUE(client->Pull(2, again.data(), absl::Seconds(5)).ok());
  EXPECT_EQ(again, after);
  EXPECT_EQ(servers_[0].version(), 1);
  EXPECT_EQ(servers_[1].version(), 1);
}

TEST_F(ParameterClientTest, AServerThatIsDownIsUnavailableAndNamed) {
  const std::string dead = DeadAddress();
  std::vector<ShardAssignment> shards = shards_;
  for (ShardAssignment& shard : shards) {
    if (shard.server_address() == servers_[1].address) shard.set_server_address(dead);
  }
  std::unique_ptr<ParameterClient> client = ClientFor(MapOf(shards));
  ASSERT_NE(client, nullptr);
  std::vector<float> params(kParameters);
  absl::Status pulled = client->Pull(1, params.data(), absl::Seconds(5));
  EXPECT_EQ(pulled.code(), absl::StatusCode::kUnavailable) << pulled;
  EXPECT_EQ(client->unreachable(), std::set<std::string>{dead});

  const std::vector<float> grads = Gradient(0.1f);
  absl::Status pushed = client->Push(1, grads.data(), absl::Seconds(5));
  EXPECT_EQ(pushed.code(), absl::StatusCode::kUnavailable) << pushed;
  EXPECT_EQ(client->unreachable(), std::set<std::string>{dead});
}

TEST_F(ParameterClientTest, APullThatIsNeverAnsweredEndsAtItsDeadline) {
  std::unique_ptr<ParameterClient> client = Client();
  ASSERT_NE(client, nullptr);
  std::vector<float> params(kParameters);
  ASSERT_TRUE(client->Pull(1, params.data(), absl::Seconds(5)).ok());
  // SYNC: step 2's values wait for step 1, which nobody pushes.
  const absl::Time start = absl::Now();
  absl::Status status = client->Pull(2, params.data(), absl::Milliseconds(300));
  const absl::Duration took = absl::Now() - start;
  EXPECT_EQ(status.code(), absl::StatusCode::kDeadlineExceeded) << status;
  EXPECT_GE(took, absl::Milliseconds(250));
  EXPECT_LT(took, absl::Seconds(3));
}

}  // namespace
}  // namespace psrv
