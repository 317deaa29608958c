// A pipeline group whose stages are threads of one process, linked by mailboxes: what the tests
// compare with a single worker, and what bench/pipeline_bench measures the bubble and the memory
// of the schedules with. (Between processes, the stages are ps_workers linked over gRPC.)
#ifndef PSRV_WORKER_PIPELINE_IN_PROCESS_PIPELINE_H_
#define PSRV_WORKER_PIPELINE_IN_PROCESS_PIPELINE_H_

#include <functional>
#include <map>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "worker/model/gpt_config.h"
#include "worker/pipeline/pipeline_stage.h"
#include "worker/pipeline/schedule.h"
#include "worker/pipeline/stage_model.h"
#include "worker/pipeline/stage_plan.h"

namespace psrv {

// A StageLink within one process. Thread-safe.
class Mailbox : public StageLink {
 public:
  absl::Status Send(int micro_batch, std::vector<float> tensor) override;
  absl::StatusOr<std::vector<float>> Receive(int micro_batch) override;
  // From now on Receive of a tensor not yet sent answers `why` (a stage failed: its neighbours
  // must not wait for it forever).
  void Close(const absl::Status& why);

 private:
  absl::Mutex mu_;
  std::map<int, std::vector<float>> tensors_ ABSL_GUARDED_BY(mu_);
  absl::Status closed_ ABSL_GUARDED_BY(mu_);
};

struct PipelineStepResult {
  float loss = 0;  // The mean over the micro-batches (the last stage's).
  // Per stage: its parameters' mean gradient (its own layout, GptPartLayout of plans[s].part).
  std::vector<std::vector<float>> grads;
  std::vector<StageTimes> times;
  double wall_seconds = 0;
};

// Makes stage models: `part` of the pipeline's config with `slots` activation slots.
using StageModelFactory = std::function<absl::StatusOr<std::unique_ptr<StageModel>>(
    const GptPart& part, int slots)>;

class InProcessPipeline {
 public:
  // P = plans.size() stages of `config` (each with its own model: `factory`'s, by default the CPU
  // model with a thread pool of config.threads), running `schedule` over `micro_batches`
  // micro-batches of `batch` rows.
  static absl::StatusOr<std::unique_ptr<InProcessPipeline>> Create(
      const GptConfig& config, std::vector<StagePlan> plans, PipelineSchedule schedule,
      int micro_batches, int batch, const StageModelFactory& factory = nullptr);

  // One step on every stage at once (a thread each). `params[s]`: stage s's parameters (its own
  // layout); `rows` and `seeds` as PipelineStage::Step.
  absl::StatusOr<PipelineStepResult> Step(const std::vector<const float*>& params,
                                          const int32_t* rows, const uint64_t* seeds);

  // Bytes of activations stage s holds at most (its peak micro-batches in flight).
  size_t PeakActivationBytes(int stage) const;

 private:
  InProcessPipeline() = default;

  std::vector<StagePlan> plans_;
  int batch_ = 0;
  std::vector<std::unique_ptr<StageModel>> models_;
  std::vector<std::unique_ptr<Mailbox>> forward_, backward_;  // Between stages s and s+1.
  std::vector<std::unique_ptr<PipelineStage>> stages_;
  uint64_t step_ = 0;
};

// Stage s's gradient or parameters (GptPartLayout of part) scattered into the whole model's
// layout (GptLayout, L layers): copied, except wte, which is added (the tied table's two parts).
void AddPartToWhole(const GptConfig& config, const GptPart& part, const float* part_buffer,
                    float* whole);
// The whole model's parameters cut into `part`'s layout.
std::vector<float> PartOfWhole(const GptConfig& config, const GptPart& part, const float* whole);

}  // namespace psrv

#endif  // PSRV_WORKER_PIPELINE_IN_PROCESS_PIPELINE_H_
