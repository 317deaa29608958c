// Pipeline-parallel jobs on a real local cluster (ps_coordinator, ps_server and ps_worker
// processes on 127.0.0.1): D pipeline groups of P stages, each stage a ps_worker holding a block of
// the GPT's layers, stages linked over StageExchange, the servers seeing one pusher per group.
#include <signal.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <sstream>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "client/coordinator_client.h"
#include "client/local_cluster.h"
#include "common/job_spec.h"
#include "common/model_layout.h"
#include "common/subprocess.h"
#include "gtest/gtest.h"
#include "tests/test_util.h"

namespace psrv {
namespace {

class PipelineJobTest : public ::testing::Test {
 protected:
  void StartCluster(int servers, int workers, const std::vector<std::string>& worker_args = {}) {
    log_dir_ = TempDir("pipeline");
    LocalClusterOptions options = TestClusterOptions(log_dir_, servers, workers);
    options.worker_args = worker_args;
    options.heartbeat_interval_ms = 100;
    options.worker_max_jobs = 0;  // Several jobs each.
    cluster_ = std::make_unique<LocalCluster>(options);
    ASSERT_TRUE(cluster_->Start().ok());
    CoordinatorClientOptions client_options;
    client_options.address = cluster_->coordinator_address();
    client_ = std::make_unique<CoordinatorClient>(client_options);
  }

  void TearDown() override {
    if (cluster_) cluster_->Stop(absl::Seconds(2));
  }

  JobStatus RunJob(const JobSpec& spec) {
    absl::StatusOr<std::string> id = client_->SubmitJob(spec);
    EXPECT_TRUE(id.ok()) << id.status();
    if (!id.ok()) return JobStatus();
    return WaitForJob(
        client_.get(), *id, [](const JobStatus& s) { return IsTerminal(s.state()); },
        absl::Seconds(240), log_dir_);
  }

  std::string log_dir_;
  std::unique_ptr<LocalCluster> cluster_;
  std::unique_ptr<CoordinatorClient> client_;
};

// A 4-layer GPT on Shakespeare, `data` groups of `pipeline` stages, `micro_batches` micro-batches
// of 4 rows per group and step.
JobSpec GptJob(uint32_t data, uint32_t pipeline, uint32_t micro_batches, uint64_t steps) {
  JobSpec spec;
  spec.set_name("gpt-pipeline");
  spec.set_num_servers(2);
  spec.set_num_workers(data * pipeline);
  spec.mutable_data()->set_path(Runfile("tests/testdata/shakespeare_200k.txt"));
  ModelSpec* model = spec.mutable_model();
  model->set_kind("gpt");
  model->set_tokenizer("char");
  model->set_layers(4);
  model->set_heads(2);
  model->set_width(32);
  model->set_context(16);
  model->set_dropout(0.1f);
  TrainingSpec* t = spec.mutable_training();
  t->set_steps(steps);
  t->set_batch_size(4);
  t->set_report_every(5);
  t->set_sample_length(0);
  t->set_eval_batches(4);
  if (pipeline > 1) {
    spec.mutable_parallelism()->set_pipeline(pipeline);
    spec.mutable_parallelism()->set_micro_batches(micro_batches);
  } else {
    t->set_grad_accumulation_steps(micro_batches);
  }
  ApplyJobDefaults(&spec);
  EXPECT_TRUE(FillVocabulary(&spec).ok());
  return spec;
}

// One SGD step of 2 groups x 2 stages (both schedules) against 2 single workers accumulating the
// same 3 micro-batches (dropout on, FP32 on the wire): every parameter but the tied token
// embedding is bit for bit the same (on the CPU backend, and with --define=cuda=simt on the CUDA
// one); wte's gradient is the sum of its two stages' parts, added
// in another order than inside one worker (fp32 rounding: within 1e-6 of the largest update).
TEST_F(PipelineJobTest, OneStepOfTwoGroupsOfTwoStagesEqualsTwoWorkers) {
  StartCluster(/*servers=*/2, /*workers=*/4);
  auto spec_of = [](uint32_t pipeline, PipelineScheduleKind schedule) {
    JobSpec spec = GptJob(2, pipeline, 3, 1);
    spec.mutable_training()->mutable_optimizer()->set_kind(SGD);
    spec.mutable_training()->mutable_optimizer()->set_learning_rate(0.5f);
    spec.mutable_training()->set_wire_dtype(FP32);
    if (pipeline > 1) spec.mutable_parallelism()->set_schedule(schedule);
    return spec;
  };
  const JobStatus reference = RunJob(spec_of(1, ONE_F_ONE_B));
  ASSERT_EQ(reference.state(), SUCCEEDED) << reference.message() << "; logs in " << log_dir_;
  const std::vector<float> expected = ServedParameters(reference);
  ASSERT_FALSE(expected.empty());
  // The initial parameters (the same seed): to measure the updates.
  JobSpec zero_steps = spec_of(1, ONE_F_ONE_B);
  zero_steps.mutable_training()->mutable_optimizer()->set_learning_rate(1e-30f);
  const JobStatus initial_job = RunJob(zero_steps);
  ASSERT_EQ(initial_job.state(), SUCCEEDED) << initial_job.message();
  const std::vector<float> initial = ServedParameters(initial_job);
  const JobSpec spec = spec_of(1, ONE_F_ONE_B);
  const size_t wte = static_cast<size_t>(VocabSize(spec.model())) * spec.model().width();
  for (PipelineScheduleKind schedule : {ONE_F_ONE_B, GPIPE}) {
    const JobStatus piped = RunJob(spec_of(2, schedule));
    ASSERT_EQ(piped.state(), SUCCEEDED) << piped.message() << "; logs in " << log_dir_;
    const std::vector<float> got = ServedParameters(piped);
    ASSERT_EQ(got.size(), expected.size());
    float largest = 0;
    for (size_t i = 0; i < wte; ++i) largest = std::max(largest, std::fabs(expected[i] - initial[i]));
    size_t off = 0, wte_off = 0;
    for (size_t i = 0; i < got.size(); ++i) {
      if (i < wte) {
        wte_off += std::fabs(got[i] - expected[i]) > 1e-6f * largest + 1e-7f;
      } else {
        off += std::memcmp(&got[i], &expected[i], sizeof(float)) != 0;
      }
    }
    EXPECT_EQ(off, 0u) << PipelineScheduleKind_Name(schedule) << ": of " << got.size() - wte;
    EXPECT_EQ(wte_off, 0u) << PipelineScheduleKind_Name(schedule) << ": of " << wte
                           << " (largest update " << largest << ")";
    EXPECT_EQ(piped.workers_size(), 4);
  }
#ifdef PSRV_WORKERS_ON_SIMULATED_GPU
  // --define=cuda=simt: the single workers' model and the stages were the CUDA ones.
  std::stringstream logs;
  for (int w = 0; w < 4; ++w) {
    logs << std::ifstream(absl::StrCat(log_dir_, "/worker-", w, ".log")).rdbuf();
  }
  EXPECT_NE(logs.str().find("model on cuda:0 (psrv SIMT simulator (CPU))"), std::string::npos)
      << "see the worker logs in " << log_dir_;
  EXPECT_NE(logs.str().find("micro-batches, on cuda:0 (psrv SIMT simulator (CPU))"),
            std::string::npos)
      << "see the worker logs in " << log_dir_;
#endif
}

// 60 AdamW steps of 1 group of 2 stages with gradient clipping (the group's norm: each stage's
// squares added up the chain), BF16 pushes and BF16 activations between the stages (the control
// values on FP32 links of their own): it trains (the loss falls), the last stage reports the loss
// and the validation loss computed through the pipeline, and the curve stays close to one
// worker's on the same data.
TEST_F(PipelineJobTest, ATwoStagePipelineTrainsLikeOneWorker) {
  StartCluster(/*servers=*/2, /*workers=*/2);
  JobSpec one = GptJob(1, 1, 2, 60);
  one.mutable_training()->set_grad_clip(1.0f);
  one.mutable_training()->mutable_optimizer()->set_learning_rate(3e-3f);
  JobSpec two = GptJob(1, 2, 2, 60);
  two.mutable_training()->set_grad_clip(1.0f);
  two.mutable_training()->mutable_optimizer()->set_learning_rate(3e-3f);
  two.mutable_parallelism()->set_schedule(GPIPE);
  two.mutable_parallelism()->set_activation_dtype(BF16);
  const JobStatus alone = RunJob(one);
  ASSERT_EQ(alone.state(), SUCCEEDED) << alone.message() << "; logs in " << log_dir_;
  const JobStatus piped = RunJob(two);
  ASSERT_EQ(piped.state(), SUCCEEDED) << piped.message() << "; logs in " << log_dir_;
  ASSERT_GE(piped.loss_history_size(), 2);
  EXPECT_LT(piped.loss(), piped.loss_history(0).loss() - 0.5f);
  EXPECT_GT(piped.val_loss(), 0.0f);
  std::cout << "val loss after 60 steps: one worker " << alone.val_loss() << ", 2 stages "
            << piped.val_loss() << "\n";
  EXPECT_NEAR(piped.val_loss(), alone.val_loss(), 0.05f);
}

// Workers with 13 MB each (ps_worker --max_memory_bytes): a 4-layer GPT of width 128 (~0.8M
// parameters: ~16 MB of fp32 buffers) does not fit one of them, and its job fails saying so; with
// its layers split over 2 workers (~8 MB each) it trains.
TEST_F(PipelineJobTest, AModelTooBigForOneWorkerTrainsOnTwoStages) {
  StartCluster(/*servers=*/2, /*workers=*/2, {"--max_memory_bytes=13000000"});
  JobSpec spec = GptJob(1, 1, 2, 5);
  spec.mutable_model()->set_width(128);
  spec.mutable_model()->set_heads(4);
  const JobStatus alone = RunJob(spec);
  EXPECT_EQ(alone.state(), FAILED);
  EXPECT_NE(alone.message().find("--max_memory_bytes is 13000000"), std::string::npos)
      << alone.message();
  spec = GptJob(1, 2, 2, 5);
  spec.mutable_model()->set_width(128);
  spec.mutable_model()->set_heads(4);
  const JobStatus piped = RunJob(spec);
  EXPECT_EQ(piped.state(), SUCCEEDED) << piped.message() << "; logs in " << log_dir_;
}

// 2 groups x 2 stages, a stage killed (SIGKILL) mid-job (parallelism.on_stage_loss REFORM_GROUP,
// the default; no checkpoints, so nothing could restart): its group stops, the other goes on
// alone, and as soon as a new worker joins, it and the lost stage's cancelled neighbour re-form
// the group from a later step. The job ends SUCCEEDED with every step done and no restart.
TEST_F(PipelineJobTest, AKilledStageStopsItsGroupAndIdleWorkersReformIt) {
  StartCluster(/*servers=*/2, /*workers=*/4);
  const JobSpec spec = GptJob(2, 2, 2, 400);
  const std::string id = client_->SubmitJob(spec).value();
  const JobStatus running = WaitForJob(
      client_.get(), id,
      [](const JobStatus& s) { return (s.state() == RUNNING && s.step() >= 20) || IsTerminal(s.state()); },
      absl::Seconds(120), log_dir_);
  ASSERT_EQ(running.state(), RUNNING) << running.message() << "; logs in " << log_dir_;
  ASSERT_TRUE(cluster_->Kill("worker 0", SIGKILL).ok());
  // The group stops and the job goes on with the other one.
  const JobStatus stopped = WaitForJob(
      client_.get(), id,
      [](const JobStatus& s) {
        return s.message().find("stops and the job goes on") != std::string::npos ||
               IsTerminal(s.state());
      },
      absl::Seconds(60), log_dir_);
  ASSERT_EQ(stopped.state(), RUNNING) << stopped.message() << "; logs in " << log_dir_;
  ASSERT_TRUE(cluster_->AddWorker().ok());
  const JobStatus final = WaitForJob(
      client_.get(), id, [](const JobStatus& s) { return IsTerminal(s.state()); },
      absl::Seconds(300), log_dir_);
  ASSERT_EQ(final.state(), SUCCEEDED) << final.message() << "; logs in " << log_dir_;
  EXPECT_EQ(final.restarts(), 0u);
  EXPECT_EQ(final.step(), 400u);
  int reformed = 0;  // Ranks whose workers started after step 1: the re-formed group's two.
  for (const WorkerProgress& w : final.workers()) {
    EXPECT_FALSE(w.vacant());
    reformed += w.start_step() > 1;
  }
  EXPECT_EQ(reformed, 2) << "logs in " << log_dir_;
}

// A stage killed (SIGKILL) mid-job in a single group: there is no other group to go on with, so
// the job restarts from its latest checkpoint on the workers it has (the killed one's place taken
// by a new worker); the surviving stage, waiting for its neighbour, is cancelled and takes part in
// the next run. The job ends SUCCEEDED.
TEST_F(PipelineJobTest, AKilledStageRestartsTheJobFromItsCheckpoint) {
  StartCluster(/*servers=*/2, /*workers=*/2);
  JobSpec spec = GptJob(1, 2, 2, 600);
  spec.mutable_checkpoint()->set_directory(log_dir_ + "/checkpoints");
  spec.mutable_checkpoint()->set_every_steps(20);
  const std::string id = client_->SubmitJob(spec).value();
  const JobStatus running = WaitForJob(
      client_.get(), id,
      [](const JobStatus& s) {
        return (s.state() == RUNNING && s.checkpoints_size() >= 2) || IsTerminal(s.state());
      },
      absl::Seconds(120), log_dir_);
  ASSERT_EQ(running.state(), RUNNING) << running.message() << "; logs in " << log_dir_;
  ASSERT_TRUE(cluster_->Kill("worker 0", SIGKILL).ok());
  ASSERT_TRUE(cluster_->AddWorker().ok());
  const JobStatus final = WaitForJob(
      client_.get(), id, [](const JobStatus& s) { return IsTerminal(s.state()); },
      absl::Seconds(240), log_dir_);
  ASSERT_EQ(final.state(), SUCCEEDED) << final.message() << "; logs in " << log_dir_;
  EXPECT_GE(final.restarts(), 1u);
  EXPECT_GE(final.resumed_from_step(), running.checkpoints(0).step());
  EXPECT_EQ(final.step(), 600u);
}

// `psctl local --pipeline 2`: no worker holds the whole model, so psctl generates the job's text
// sample itself, from the servers' final parameters, as it ends.
TEST(PipelineLocalTest, PsctlLocalPrintsASampleOfAPipelineJob) {
  const std::string dir = TempDir("pipeline-local");
  const std::string out_path = dir + "/psctl.out";
  Subprocess psctl;
  ASSERT_TRUE(psctl
                  .Start({Runfile("client/psctl"), "local", "--data",
                          Runfile("tests/testdata/shakespeare_200k.txt"), "--pipeline", "2",
                          "--micro-batches", "2", "--layers", "2", "--width", "32", "--heads",
                          "2", "--context", "32", "--steps", "20", "--servers", "1",
                          "--log-dir", dir + "/logs"},
                         out_path)
                  .ok());
  absl::StatusOr<int> code = psctl.Wait(absl::Seconds(180));
  const std::string out = ReadFile(out_path);
  ASSERT_TRUE(code.ok() && *code == 0) << out;
  const std::string header =
      "Sample of generated text (a pipeline job: generated here, on the CPU, from the servers' "
      "final parameters):\n";
  const size_t at = out.find(header);
  ASSERT_NE(at, std::string::npos) << out;
  // The prompt ("\n") and 200 generated bytes (training.sample_length's default), before the
  // curves' line.
  const size_t end = out.find("training curves:", at);
  ASSERT_NE(end, std::string::npos) << out;
  EXPECT_GE(end - (at + header.size()), 200u) << out;
  EXPECT_EQ(out.find("no sample"), std::string::npos) << out;
}

}  // namespace
}  // namespace psrv
