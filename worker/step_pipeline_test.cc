// StepPipeline driven as Train drives it (Start; per step BeginStep, compute, FinishStep;
// FinishRun) over a ResilientClient and in-process parameter servers (real ShardStores, fake
// transport), with a model whose gradient the test knows: overlap on and off give the same
// parameters, bit for bit, and the ones computed here; clipping applies the clipped gradient; a
// refused push fails the run.
#include "worker/step_pipeline.h"

#include <cmath>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/initializer.h"
#include "common/status_macros.h"
#include "gtest/gtest.h"
#include "worker/model/language_model.h"
#include "worker/resilient_client.h"
#include "worker/testing/fake_cluster.h"
#include "worker/testing/test_job.h"

namespace psrv {
namespace {

constexpr float kLearningRate = 0.5f;
constexpr size_t kParameters = 400 + 300;  // Tables "emb" then "head".

std::vector<TableSpec> Tables() {
  return {NormalTable("emb", {40, 10}, 11), NormalTable("head", {300}, 12)};
}

// "emb" over both servers, "head" on "a".
ShardMap Map() {
  return TestShardMap(Tables(), {ShardOn("emb", 0, 250, "a"), ShardOn("emb", 250, 400, "b"),
                                 ShardOn("head", 0, 300, "a")});
}

float Target(size_t i) { return 0.01f * static_cast<float>(i % 17); }

// Loss 0.5 * |params - target|^2, so the gradient is params - Target. Forward awaits its three
// groups in order and backward reports them last first, as a GPT's layers; their edges are not the
// chunks' (a chunk is final only once all its keys are).
class QuadraticModel : public LanguageModel {
 public:
  uint64_t nan_step = 0;  // A step whose gradient has a NaN (the servers refuse it); 0: none.
  // If set, called after each group's gradients were reported: step, and the first key of the
  // gradient final so far (backward goes from the last key down).
  std::function<void(uint64_t step, size_t final_from)> reported;

  int window() const override { return 2; }
  int predictions_per_row() const override { return 1; }
  int vocab_size() const override { return 2; }
  int max_context() const override { return 1; }
  size_t num_parameters() const override { return kParameters; }
  bool streams_parameters() const override { return true; }

  // `seed`: the step (the driver passes it).
  float ForwardBackward(const float* params, const int32_t*, int, uint64_t seed,
                        float* grads) override {
    double loss = 0;
    for (const ParameterGroup& group : groups_) {
      AwaitParameters(group);
      for (const FlatRange& range : group) loss += HalfSquares(params, range);
    }
    for (auto group = groups_.rbegin(); group != groups_.rend(); ++group) {
      for (const FlatRange& range : *group) {
        for (size_t i = range.offset; i < range.offset + range.count; ++i) {
          grads[i] = params[i] - Target(i);
        }
        if (seed == nan_step && range.offset == 0) grads[5] = NAN;
      }
      GradientsReady(*group);
      if (reported) reported(seed, group->front().offset);
    }
    return static_cast<float>(loss);
  }
  float Loss(const float* params, const int32_t*, int) override {
    return static_cast<float>(HalfSquares(params, FlatRange{0, kParameters}));
  }
  void NextTokenLogits(const float*, const int32_t*, int, float* logits) override {
    logits[0] = logits[1] = 0;
  }

 private:
  static double HalfSquares(const float* params, const FlatRange& range) {
    double sum = 0;
    for (size_t i = range.offset; i < range.offset + range.count; ++i) {
      const double d = params[i] - Target(i);
      sum += 0.5 * d * d;
    }
    return sum;
  }

  // Chunks (of at most 64 keys) [187, 250) and [520, 580) straddle group edges.
  const std::vector<ParameterGroup> groups_ = {
      {{0, 230}}, {{230, 170}, {400, 150}}, {{550, 150}}};
};

// The parameters after `steps` SYNC steps of one worker, as the servers should compute them: the
// gradient's norm in double, its clipping factor, then SGD (w - lr * (g * factor)).
std::vector<float> Expected(int steps, float clip, double* last_norm = nullptr) {
  std::vector<float> w = InitializeTables(Tables());
  std::vector<float> g(kParameters);
  for (int step = 1; step <= steps; ++step) {
    double squares = 0;
    for (size_t i = 0; i < kParameters; ++i) {
      g[i] = w[i] - Target(i);
      squares += static_cast<double>(g[i]) * g[i];
    }
    const double norm = std::sqrt(squares);
    if (last_norm != nullptr) *last_norm = norm;
    const float factor = clip > 0 && norm > clip ? static_cast<float>(clip / norm) : 1.0f;
    for (size_t i = 0; i < kParameters; ++i) w[i] -= kLearningRate * (g[i] * factor);
  }
  return w;
}

// Counts the pushes the servers received, by step.
class PushLog {
 public:
  void Record(uint64_t step) {
    absl::MutexLock lock(&mu_);
    ++pushes_[step];
  }
  // False if fewer than `count` pushes of `step` arrived within a few seconds.
  bool AwaitAtLeast(uint64_t step, int count) {
    absl::MutexLock lock(&mu_);
    struct Wanted {
      PushLog* log;
      uint64_t step;
      int count;
    } wanted{this, step, count};
    return mu_.AwaitWithTimeout(
        absl::Condition(
            +[](Wanted* w) ABSL_NO_THREAD_SAFETY_ANALYSIS {
              return w->log->pushes_[w->step] >= w->count;
            },
            &wanted),
        absl::Seconds(5));
  }

 private:
  absl::Mutex mu_;
  std::map<uint64_t, int> pushes_ ABSL_GUARDED_BY(mu_);
};

struct RunResult {
  absl::Status status;
  std::vector<float> params;  // (kParameters) after the run, if it succeeded.
  double grad_norm = 0;       // Of the last step, before clipping.
  bool done = false;          // The run got as far as reporting done (after FinishRun).
  // Overlap: every chunk whose keys were all final reached its server before backward went on.
  bool pushed_during_backward = true;
  std::map<std::string, uint64_t> versions_a;  // By table: the shards on "a", at the end.
  int calls = 0;         // Calls to the servers.
  int corked_calls = 0;  // Of which started corked (free to travel together).
};

// The training loop of Train (worker/trainer.cc), without its metrics and reports.
absl::Status TrainSteps(StepPipeline* pipeline, LanguageModel* model, bool overlap, int steps) {
  const std::vector<int32_t> rows(model->window(), 0);
  pipeline->Start(1);
  for (uint64_t step = 1; step <= static_cast<uint64_t>(steps); ++step) {
    pipeline->BeginStep(step);
    if (!overlap) RETURN_IF_ERROR(pipeline->AwaitAllParameters());
    model->AccumulateGradients(pipeline->params(), rows.data(), 1, 1, &step, pipeline->grads(),
                               nullptr);
    RETURN_IF_ERROR(pipeline->status());
    RETURN_IF_ERROR(pipeline->FinishStep());
  }
  return pipeline->FinishRun();
}

RunResult Train(bool overlap, float grad_clip, int steps, uint64_t nan_step = 0) {
  PushLog pushes;  // Before the cluster, whose servers record in it.
  FakeCluster cluster;
  for (const std::string server : {"a", "b"}) {
    FakeServer* fake = cluster.Add(server);
    EXPECT_TRUE(fake->store.CreateShards(CreateSgdShards(Map(), server, kLearningRate)).ok());
    fake->on_push = [&pushes](const PushRequest& request) { pushes.Record(request.step()); };
  }
  ResilientClient::Options client_options;
  client_options.targets.max_chunk_bytes = 64 * sizeof(float);  // Several chunks a shard.
  auto client =
      ResilientClient::Create(Map(), 0, client_options, {}, cluster.Factory(), nullptr);
  EXPECT_TRUE(client.ok()) << client.status();
  if (!client.ok()) return {client.status()};
  StepPipeline::Options options;
  options.overlap = overlap;
  options.grad_clip = grad_clip;
  options.consistency = SYNC;
  RunResult result;
  {
    QuadraticModel model;
    model.nan_step = nan_step;
    StepPipeline pipeline(client->get(), options);
    model.set_parameter_stream(&pipeline);
    if (overlap) {
      // Backward goes on only once the chunks it finished were pushed (and so copied): a chunk
      // pushed before all its keys are final would carry stale values. (After an error the
      // pipeline pushes nothing more.)
      const std::vector<ShardTarget>& targets = (*client)->targets();
      model.reported = [&](uint64_t step, size_t final_from) {
        if (!pipeline.status().ok()) return;
        int final_chunks = 0;
        for (const ShardTarget& target : targets) final_chunks += target.flat_offset >= final_from;
        if (!pushes.AwaitAtLeast(step, final_chunks)) result.pushed_during_backward = false;
      };
    }
    result.status = TrainSteps(&pipeline, &model, overlap, steps);
    result.done = result.status.ok();
    if (result.done) result.params.assign(pipeline.params(), pipeline.params() + kParameters);
    result.grad_norm = pipeline.grad_norm();
  }
  for (const std::string server : {"a", "b"}) {
    result.calls += cluster.at(server)->calls;
    result.corked_calls += cluster.at(server)->corked_calls;
  }
  const ServerStatus status = cluster.at("a")->store.Status("job");
  for (const ShardStatus& shard : status.shards()) {
    result.versions_a[shard.table()] = shard.version();
  }
  return result;
}

TEST(StepPipelineTest, SyncStepsGiveTheSameParametersWithAndWithoutOverlap) {
  constexpr int kSteps = 4;
  const RunResult overlapped = Train(/*overlap=*/true, /*grad_clip=*/0, kSteps);
  const RunResult in_sequence = Train(/*overlap=*/false, /*grad_clip=*/0, kSteps);
  ASSERT_TRUE(overlapped.status.ok()) << overlapped.status;
  ASSERT_TRUE(in_sequence.status.ok()) << in_sequence.status;
  EXPECT_EQ(overlapped.params, in_sequence.params);
  EXPECT_EQ(overlapped.params, Expected(kSteps, 0));
  EXPECT_NE(overlapped.params, Expected(kSteps - 1, 0));  // Every step counted, once.
  EXPECT_TRUE(overlapped.pushed_during_backward);
  EXPECT_EQ(overlapped.versions_a, (std::map<std::string, uint64_t>{{"emb", kSteps},
                                                                     {"head", kSteps}}));
  // In sequence, every call (the first pulls; each step's pushes and the next step's pulls)
  // leaves corked, so that a transport may batch them; overlapped, the pushes during backward
  // go one by one as their gradients are final.
  EXPECT_GT(in_sequence.calls, 0);
  EXPECT_EQ(in_sequence.corked_calls, in_sequence.calls);
  EXPECT_LT(overlapped.corked_calls, overlapped.calls);
}

TEST(StepPipelineTest, WithClippingTheClippedGradientIsApplied) {
  constexpr int kSteps = 3;
  constexpr float kClip = 2.0f;
  double norm = 0;
  const std::vector<float> expected = Expected(kSteps, kClip, &norm);
  ASSERT_GT(norm, 4 * kClip);  // Every step is clipped (the norm shrinks by lr * clip a step).
  for (const bool overlap : {true, false}) {
    SCOPED_TRACE(overlap ? "overlap" : "in sequence");
    const RunResult run = Train(overlap, kClip, kSteps);
    ASSERT_TRUE(run.status.ok()) << run.status;
    EXPECT_EQ(run.params, expected);
    EXPECT_NEAR(run.grad_norm, norm, 1e-9 * norm);
    EXPECT_TRUE(run.pushed_during_backward);
  }
}

TEST(StepPipelineTest, ARefusedPushFailsTheRunAndNothingIsDone) {
  // Step 2's gradient has a NaN in a shard of "a", which refuses that push. SYNC pushes are not
  // awaited: the error comes with the next step's pulls, or with FinishRun after the last step.
  for (const int steps : {3, 2}) {
    for (const bool overlap : {true, false}) {
      SCOPED_TRACE(absl::StrCat(steps, " steps, ", overlap ? "overlap" : "in sequence"));
      const RunResult run = Train(overlap, /*grad_clip=*/0, steps, /*nan_step=*/2);
      EXPECT_EQ(run.status.code(), absl::StatusCode::kInvalidArgument) << run.status;
      EXPECT_FALSE(run.done);
      // That shard never applied step 2 ("head", also on "a", did: its push was fine).
      EXPECT_EQ(run.versions_a, (std::map<std::string, uint64_t>{{"emb", 1}, {"head", 2}}));
    }
  }
}

}  // namespace
}  // namespace psrv
