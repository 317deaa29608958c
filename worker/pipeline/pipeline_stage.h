// Pipeline parallelism, part 3: one stage's training step. The stage runs its schedule's ops
// (schedule.h) over the step's M micro-batches: a forward takes the previous stage's activations
// (the first stage: the token rows), runs its layers and sends its output on; a backward takes
// the gradient of that output from the next stage (the last stage: from its loss), runs its layers
// backwards, sends the gradient of its input back, and adds the micro-batch's parameter gradient
// to the step's sum. One push per step follows (the caller's), of the mean over the micro-batches.
#ifndef PSRV_WORKER_PIPELINE_PIPELINE_STAGE_H_
#define PSRV_WORKER_PIPELINE_PIPELINE_STAGE_H_

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "worker/pipeline/schedule.h"
#include "worker/pipeline/stage_model.h"

namespace psrv {

// One direction of the link between two adjacent stages: activations forward, or their gradients
// backward, each a (batch, T, C) fp32 tensor tagged with its micro-batch. Implementations:
// in-process mailboxes (in_process_pipeline.h); between worker processes, a gRPC stream.
class StageLink {
 public:
  virtual ~StageLink() = default;
  // The step the next Sends and Receives belong to (tensors are tagged with it).
  virtual void BeginStep(uint64_t step) {}
  virtual absl::Status Send(int micro_batch, std::vector<float> tensor) = 0;
  // Blocks until micro-batch `micro_batch`'s tensor has arrived (or the link failed).
  virtual absl::StatusOr<std::vector<float>> Receive(int micro_batch) = 0;
};

// The links of one stage; those it has no neighbour for are null.
struct StageLinks {
  StageLink* from_previous = nullptr;  // Activations in (not the first stage).
  StageLink* to_next = nullptr;        // Activations out (not the last stage).
  StageLink* from_next = nullptr;      // Gradients of its output in (not the last stage).
  StageLink* to_previous = nullptr;    // Gradients of its input out (not the first stage).
};

// Where a stage's time went in its last step.
struct StageTimes {
  double busy_seconds = 0;     // Running forwards and backwards (and summing gradients).
  double waiting_seconds = 0;  // Waiting for a neighbour's tensor.
  int peak_in_flight = 0;      // Micro-batches whose activations it held at once.
};

class PipelineStage {
 public:
  // `model` (not owned) is the stage's part, created with at least MaxInFlight(ops) slots.
  PipelineStage(StageModel* model, int stage, int stages, PipelineSchedule schedule,
                int micro_batches, int batch, StageLinks links);

  // One step (`step`: what its tensors are tagged with). `rows`: the step's micro-batches, (micro_batches * batch, T+1) token ids, micro-batch
  // m with dropout seed seeds[m]. Writes the mean over the micro-batches of the gradient of the
  // stage's parameters into `grads` (num_parameters; overwritten). Returns the mean loss (the
  // last stage; others 0), NaN for a bad token id. Sums g0 + g1 + ... in micro-batch order, then
  // times 1/M: as LanguageModel::AccumulateGradients (StageModel).
  absl::StatusOr<float> Step(uint64_t step, const float* params, const int32_t* rows,
                             const uint64_t* seeds, float* grads);

  const StageTimes& times() const { return times_; }

 private:
  StageModel* const model_;
  const int stage_;
  const int stages_;
  const int micro_batches_;
  const int batch_;
  const StageLinks links_;
  const std::vector<StageOp> ops_;
  StageTimes times_;
};

}  // namespace psrv

#endif  // PSRV_WORKER_PIPELINE_PIPELINE_STAGE_H_
