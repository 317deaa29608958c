// The stages of a pipeline linked over real gRPC (StageExchange on 127.0.0.1): the same gradients
// as the in-process pipeline, bit for bit with FP32 on the wire; BF16 close; bad tensors refused
// with nothing kept; a missing neighbour is a deadline, not a hang.
#include "worker/pipeline/stage_service.h"

#include <cmath>
#include <cstring>
#include <memory>
#include <random>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/channel.h"
#include "common/grpc_server.h"
#include "gtest/gtest.h"
#include "worker/pipeline/stage_model.h"
#include "worker/pipeline/in_process_pipeline.h"
#include "worker/pipeline/pipeline_stage.h"
#include "worker/pipeline/stage_plan.h"

namespace psrv {
namespace {

constexpr int kBatch = 2, kMicro = 3;

GptConfig SmallGpt() {
  GptConfig config;
  config.layers = 4;
  config.heads = 2;
  config.width = 16;
  config.context = 8;
  config.vocab = 13;
  config.dropout = 0.1f;
  config.threads = 1;
  return config;
}

StageStreamKey Key(uint32_t to_stage, StageTensor::Kind kind) {
  return StageStreamKey{"job-1", 1, 0, to_stage, kind};
}

class StageServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    service_ = std::make_unique<StageService>(&inbox_);
    absl::StatusOr<RunningServer> server = StartGrpcServer("127.0.0.1", 0, {service_.get()}, "");
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
    channel_ = CreateChannel(absl::StrCat("127.0.0.1:", server_.port));
    std::mt19937 random(3);
    std::normal_distribution<float> normal(0.0f, 0.2f);
    absl::StatusOr<std::vector<StagePlan>> plans = PlanStages(config_, 2);
    ASSERT_TRUE(plans.ok());
    plans_ = *plans;
    std::vector<float> whole(GptPartSize(WholeGpt(config_.layers), config_.width,
                                         config_.context, config_.vocab));
    for (float& p : whole) p = normal(random);
    for (const StagePlan& plan : plans_) params_.push_back(PartOfWhole(config_, plan.part, whole.data()));
    rows_.resize(static_cast<size_t>(kMicro) * kBatch * (config_.context + 1));
    for (int32_t& token : rows_) token = static_cast<int32_t>(random() % config_.vocab);
  }

  void TearDown() override {
    if (server_.server) server_.server->Shutdown();
  }

  // Two steps of a 2-stage 1F1B pipeline whose stages talk over gRPC with `dtype` on the wire:
  // each stage's gradient of the last step, and the last step's loss.
  void RunOverGrpc(DType dtype, std::vector<std::vector<float>>* grads, float* loss) {
    std::vector<std::unique_ptr<StageModel>> models;
    for (const StagePlan& plan : plans_) {
      absl::StatusOr<std::unique_ptr<StageModel>> model =
          CreateCpuStageModel(config_, plan.part, 2);
      ASSERT_TRUE(model.ok());
      models.push_back(std::move(*model));
    }
    GrpcSendLink activations_out(channel_, Key(1, StageTensor::ACTIVATIONS), dtype);
    GrpcSendLink gradients_out(channel_, Key(0, StageTensor::GRADIENTS), dtype);
    InboxLink activations_in(&inbox_, Key(1, StageTensor::ACTIVATIONS), absl::Seconds(30));
    InboxLink gradients_in(&inbox_, Key(0, StageTensor::GRADIENTS), absl::Seconds(30));
    StageLinks first, last;
    first.to_next = &activations_out;
    first.from_next = &gradients_in;
    last.from_previous = &activations_in;
    last.to_previous = &gradients_out;
    PipelineStage stage0(models[0].get(), 0, 2, PipelineSchedule::kOneFOneB, kMicro, kBatch, first);
    PipelineStage stage1(models[1].get(), 1, 2, PipelineSchedule::kOneFOneB, kMicro, kBatch, last);
    grads->assign(2, {});
    for (uint64_t step = 1; step <= 2; ++step) {
      const std::vector<uint64_t> seeds = {step * 10, step * 10 + 1, step * 10 + 2};
      std::vector<absl::StatusOr<float>> losses(2, 0.0f);
      for (int s = 0; s < 2; ++s) (*grads)[s].assign(models[s]->num_parameters(), 0.0f);
      std::thread other([&] {
        losses[1] = stage1.Step(step, params_[1].data(), rows_.data(), seeds.data(),
                                (*grads)[1].data());
      });
      losses[0] = stage0.Step(step, params_[0].data(), rows_.data(), seeds.data(),
                              (*grads)[0].data());
      other.join();
      ASSERT_TRUE(losses[0].ok()) << losses[0].status();
      ASSERT_TRUE(losses[1].ok()) << losses[1].status();
      *loss = *losses[1];
    }
    EXPECT_TRUE(activations_out.Flush().ok());
    EXPECT_TRUE(gradients_out.Flush().ok());
    EXPECT_EQ(inbox_.bytes_held(), 0u) << "every tensor sent was read";
  }

  GptConfig config_ = SmallGpt();
  StageInbox inbox_;
  std::unique_ptr<StageService> service_;
  RunningServer server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::vector<StagePlan> plans_;
  std::vector<std::vector<float>> params_;
  std::vector<int32_t> rows_;
};

TEST_F(StageServiceTest, StagesOverGrpcGiveTheInProcessGradientsBitForBit) {
  std::vector<std::vector<float>> grads;
  float loss = 0;
  RunOverGrpc(FP32, &grads, &loss);
  absl::StatusOr<std::unique_ptr<InProcessPipeline>> local =
      InProcessPipeline::Create(config_, plans_, PipelineSchedule::kOneFOneB, kMicro, kBatch);
  ASSERT_TRUE(local.ok());
  const std::vector<uint64_t> seeds = {20, 21, 22};  // Step 2's.
  absl::StatusOr<PipelineStepResult> expected =
      (*local)->Step({params_[0].data(), params_[1].data()}, rows_.data(), seeds.data());
  ASSERT_TRUE(expected.ok()) << expected.status();
  EXPECT_EQ(loss, expected->loss);
  for (int s = 0; s < 2; ++s) {
    ASSERT_EQ(grads[s].size(), expected->grads[s].size());
    EXPECT_EQ(std::memcmp(grads[s].data(), expected->grads[s].data(),
                          grads[s].size() * sizeof(float)),
              0)
        << "stage " << s;
  }
}

// BF16 on the wire rounds each activation and gradient once (8 bits of mantissa): the loss moves
// by well under 1%, and the gradients stay close.
TEST_F(StageServiceTest, Bf16OnTheWireStaysClose) {
  std::vector<std::vector<float>> fp32, bf16;
  float fp32_loss = 0, bf16_loss = 0;
  RunOverGrpc(FP32, &fp32, &fp32_loss);
  RunOverGrpc(BF16, &bf16, &bf16_loss);
  EXPECT_NEAR(bf16_loss, fp32_loss, 0.01 * fp32_loss);
  for (int s = 0; s < 2; ++s) {
    double diff = 0, norm = 0;
    for (size_t i = 0; i < fp32[s].size(); ++i) {
      diff += (bf16[s][i] - fp32[s][i]) * (bf16[s][i] - fp32[s][i]);
      norm += fp32[s][i] * fp32[s][i];
    }
    EXPECT_LT(std::sqrt(diff), 0.05 * std::sqrt(norm)) << "stage " << s;
  }
}

StageTensor Good() {
  StageTensor t;
  t.set_job_id("job-1");
  t.set_attempt(1);
  t.set_to_stage(1);
  t.set_kind(StageTensor::ACTIVATIONS);
  t.set_step(1);
  t.set_dtype(FP32);
  t.set_elements(4);
  t.set_values(std::string(16, '\0'));
  return t;
}

TEST(StageInboxTest, BadTensorsAreRefusedAndNothingIsKept) {
  StageInbox::Options options;
  options.max_bytes = 64;
  StageInbox inbox(options);
  struct Case {
    const char* name;
    std::function<void(StageTensor*)> spoil;
    absl::StatusCode code;
  };
  const std::vector<Case> cases = {
      {"values too short", [](StageTensor* t) { t->set_values(std::string(15, '\0')); },
       absl::StatusCode::kInvalidArgument},
      {"bf16 size for fp32", [](StageTensor* t) { t->set_dtype(BF16); },
       absl::StatusCode::kInvalidArgument},
      {"fp16", [](StageTensor* t) { t->set_dtype(FP16); }, absl::StatusCode::kInvalidArgument},
      {"no kind", [](StageTensor* t) { t->set_kind(StageTensor::KIND_UNSPECIFIED); },
       absl::StatusCode::kInvalidArgument},
      {"path in job id", [](StageTensor* t) { t->set_job_id("../x"); },
       absl::StatusCode::kInvalidArgument},
      {"no elements", [](StageTensor* t) {
         t->set_elements(0);
         t->clear_values();
       },
       absl::StatusCode::kInvalidArgument},
      {"2^40 elements", [](StageTensor* t) { t->set_elements(uint64_t{1} << 40); },
       absl::StatusCode::kInvalidArgument},
      {"over the memory limit", [](StageTensor* t) {
         t->set_elements(32);
         t->set_values(std::string(128, '\0'));
       },
       absl::StatusCode::kResourceExhausted},
  };
  for (const Case& c : cases) {
    StageTensor t = Good();
    c.spoil(&t);
    const absl::Status status = inbox.Deposit(t);
    EXPECT_EQ(status.code(), c.code) << c.name << ": " << status;
    EXPECT_FALSE(status.message().empty()) << c.name;
    EXPECT_EQ(inbox.bytes_held(), 0u) << c.name;
  }
  ASSERT_TRUE(inbox.Deposit(Good()).ok());
  ASSERT_TRUE(inbox.Deposit(Good()).ok());  // A resend: kept once.
  EXPECT_EQ(inbox.bytes_held(), 16u);
  // A later run of the same attempt (a re-formed group, run_start 50) is kept when the earlier
  // run's tensors are dropped.
  StageTensor later = Good();
  later.set_run_start(50);
  ASSERT_TRUE(inbox.Deposit(later).ok());
  inbox.DropRuns("job-1", 1, /*run_start=*/0, /*inclusive=*/true);
  EXPECT_EQ(inbox.bytes_held(), 16u);
  StageStreamKey key = Key(1, StageTensor::ACTIVATIONS);
  key.run_start = 50;
  EXPECT_TRUE(inbox.Take(key, later.step(), later.micro_batch(), absl::Milliseconds(10)).ok());
  EXPECT_EQ(inbox.bytes_held(), 0u);
}

TEST(StageInboxTest, AMissingTensorIsADeadlineNamingIt) {
  StageInbox inbox;
  absl::StatusOr<std::vector<float>> got =
      inbox.Take(Key(1, StageTensor::ACTIVATIONS), 7, 2, absl::Milliseconds(50));
  EXPECT_EQ(got.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_NE(got.status().message().find("micro-batch 2 of step 7"), std::string::npos)
      << got.status();
}

// What comes off the wire, before any StageTensor is parsed: malformed bytes are refused with
// nothing kept or reserved, and a well-formed message's values land in the tensor kept.
TEST(StageInboxTest, RawMessagesAreParsedStraightIntoTheTensorOrRefused) {
  StageInbox inbox(StageInbox::Options{64, 1 << 20});
  auto deposit = [&inbox](const std::string& bytes) {
    grpc::Slice slice(bytes);
    grpc::ByteBuffer message(&slice, 1);
    StageTensor header;
    return inbox.Deposit(&message, &header);
  };
  StageTensor good = Good();
  const float values[4] = {1.5f, -2.0f, 3.25f, 1e-3f};
  good.set_values(std::string(reinterpret_cast<const char*>(values), sizeof(values)));
  const std::string wire = good.SerializeAsString();
  const std::vector<std::pair<std::string, std::string>> bad = {
      {"truncated values", wire.substr(0, wire.size() - 3)},
      {"values longer than the message", wire + std::string("\x7a\xff\xff\x03", 4)},
      {"two values fields", wire + wire.substr(wire.size() - 18)},
      {"garbage", std::string("\xff\xff\xff\xff\x0f", 5)},
  };
  for (const auto& [name, bytes] : bad) {
    const absl::Status status = deposit(bytes);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << name << ": " << status;
    EXPECT_EQ(inbox.bytes_held(), 0u) << name;
  }
  ASSERT_TRUE(deposit(wire).ok());
  absl::StatusOr<std::vector<float>> got =
      inbox.Take(Key(1, StageTensor::ACTIVATIONS), good.step(), good.micro_batch(),
                 absl::Seconds(1));
  ASSERT_TRUE(got.ok()) << got.status();
  ASSERT_EQ(got->size(), good.elements());
  EXPECT_EQ(std::memcmp(got->data(), good.values().data(), good.values().size()), 0);
}

TEST_F(StageServiceTest, ABadTensorOnTheStreamEndsItWithInvalidArgument) {
  std::unique_ptr<StageExchange::Stub> stub = StageExchange::NewStub(channel_);
  grpc::ClientContext context;
  SendTensorsResponse response;
  std::unique_ptr<grpc::ClientWriter<StageTensor>> writer = stub->SendTensors(&context, &response);
  ASSERT_TRUE(writer->Write(Good()));
  StageTensor bad = Good();
  bad.set_micro_batch(1);
  bad.set_values("xyz");
  writer->Write(bad);  // (May already see the stream end.)
  writer->WritesDone();
  const grpc::Status status = writer->Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << status.error_message();
  EXPECT_NE(status.error_message().find("values has 3 bytes"), std::string::npos)
      << status.error_message();
  EXPECT_EQ(inbox_.bytes_held(), 16u) << "the good tensor only";
}

}  // namespace
}  // namespace psrv
