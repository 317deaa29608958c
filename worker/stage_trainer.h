// One worker's run of a pipeline job (JobSpec.parallelism.pipeline > 1): it is stage s of
// pipeline group g (rank = g * P + s). The same pull -> compute -> push step as trainer.cc, over
// the stage's part of the model only: it pulls and pushes its own layers' shards (as data-parallel
// rank g), computes its layers for the group's M micro-batches (worker/pipeline/), exchanging
// activations and their gradients with its neighbours over StageExchange.
#ifndef PSRV_WORKER_STAGE_TRAINER_H_
#define PSRV_WORKER_STAGE_TRAINER_H_

#include <atomic>
#include <string>

#include "absl/status/status.h"
#include "proto/coordinator.grpc.pb.h"
#include "worker/cuda/device_model.h"
#include "worker/pipeline/stage_service.h"
#include "worker/progress_reporter.h"
#include "worker/training_metrics.h"

namespace psrv {

struct StageRunOptions {
  StageInbox* inbox = nullptr;  // Where this worker's StageExchange service puts what it receives.
  // How long a stage waits for a neighbour's tensor before the run fails (StageReceiveTimeout).
  absl::Duration receive_timeout = absl::Minutes(2);
  uint64_t max_memory_bytes = 0;  // TrainerOptions::max_memory_bytes.
  Device device = Device::kAuto;  // Where the stage's layers run (TrainerOptions::device).
  CudaModelOptions cuda;          // How, on a GPU.
  // A run that fails because a neighbouring stage went away (its stream broke, or its tensors
  // stopped coming) waits this long for the coordinator to stop it (the neighbour's loss is the
  // job's to handle: its group is re-formed, or the job restarts) before it reports the error.
  absl::Duration neighbour_grace = absl::Seconds(30);
};

// How long a stage of a job with `spec` waits for a neighbour's tensor: a minute past
// training.step_timeout_seconds, so that a hung stage is the coordinator's to find first (the
// servers' step waits for the group's push; the coordinator then drops the whole group, as for a
// lost stage); for ever when the step timeout is 0 ("never"). A lost stage is found sooner, by its
// heartbeats.
absl::Duration StageReceiveTimeout(const JobSpec& spec);

// Runs stage `assignment.rank() % P` of the job to its end (or an error); reports progress with
// `reporter` (the last stage reports the group's loss; the last stage of group 0 the validation
// loss at the end).
absl::Status RunStage(const WorkAssignment& assignment, ProgressReporter* reporter,
                      const std::atomic<bool>* cancel, const StageRunOptions& options,
                      TrainingMetrics* metrics);

}  // namespace psrv

#endif  // PSRV_WORKER_STAGE_TRAINER_H_
