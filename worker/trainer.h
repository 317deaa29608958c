// One worker's run of one job: the training loop pull -> compute -> push, progress reports to the
// coordinator, and a generated text sample at the end.
#ifndef PSRV_WORKER_TRAINER_H_
#define PSRV_WORKER_TRAINER_H_

#include <atomic>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "common/metrics.h"
#include "proto/coordinator.grpc.pb.h"
#include "worker/cuda/device_model.h"
#include "worker/pipeline/stage_service.h"
#include "worker/progress_reporter.h"

namespace psrv {

struct TrainerOptions {
  Device device = Device::kAuto;        // Where the model runs (worker/cuda/device_model.h).
  CudaModelOptions cuda;                // How it computes there, on a GPU.
  MetricsRegistry* metrics = nullptr;   // Not owned; step times, losses, throughput if set.
  // Overlap communication with compute (worker/step_pipeline.h), or pull, compute and push one
  // after another (the same results, bit for bit). Auto: overlap when the model computes off the
  // CPU (a GPU, or synthetic compute); a CPU model uses every core itself.
  enum class Overlap { kAuto, kOn, kOff };
  Overlap overlap = Overlap::kAuto;
  // >= 0: the model is a SyntheticModel taking this long per step (benchmarks); < 0: the real one.
  absl::Duration synthetic_compute = -absl::InfiniteDuration();
  // Straggler experiments (ps_worker --slowdown): each step, with probability `probability`, the
  // step's compute is made `factor` times as long by sleeping (factor - 1) times what it took,
  // before the push. The draws come from the job's seed and the worker's rank. factor 1: off.
  struct Slowdown {
    double factor = 1;
    double probability = 1;
  };
  Slowdown slowdown;
  // Untied GPTs (model.tie_embeddings false): push only the input embedding's rows with a gradient
  // (ps_worker --row_sparse_pushes). false: dense pushes, for comparisons (bench/train_bench).
  bool row_sparse_pushes = true;
  // ... and pull only the rows of each step's batch (ps_worker --row_sparse_pulls).
  bool row_sparse_pulls = true;
  // The final report's patience and where it goes when the coordinator stays away
  // (ps_worker --final_report_patience; ProgressReporter::Options).
  ProgressReporter::Options reports;
  // Pipeline jobs: where this worker's StageExchange service keeps what other stages send it
  // (worker/stage_trainer.h). Not owned; null: the worker cannot run a pipeline stage.
  StageInbox* stage_inbox = nullptr;
  // The most memory this worker's part of a job may take (ps_worker --max_memory_bytes): its
  // parameters and gradients (double-buffered, and a gradient-accumulation buffer) and its
  // activations. A job that needs more fails with RESOURCE_EXHAUSTED naming both. 0: no limit.
  uint64_t max_memory_bytes = 0;
};

// What a worker holding `parameters` parameters of a model needs for a step whose activations
// take `activation_bytes`: 5 fp32 copies of the parameters (2 parameter and 2 gradient buffers,
// the accumulation buffer) plus the activations. RESOURCE_EXHAUSTED past `limit` (0: none),
// naming both and suggesting a pipeline.
absl::Status CheckWorkerMemory(uint64_t parameters, uint64_t activation_bytes, uint64_t limit);

// "auto", "on" or "off" (ps_worker --overlap; also true/false) into options->overlap;
// INVALID_ARGUMENT otherwise.
absl::Status ParseOverlap(absl::string_view text, TrainerOptions* options);

// "model" or "synthetic:MS" (ps_worker --compute) into options->synthetic_compute;
// INVALID_ARGUMENT otherwise.
absl::Status ParseCompute(absl::string_view text, TrainerOptions* options);

// "FACTOR" or "FACTOR@PROBABILITY" (ps_worker --slowdown; e.g. "4@0.1": a step in ten takes 4
// times as long; "3": every step 3 times) into options->slowdown, with FACTOR in [1, 1000] and
// PROBABILITY in [0, 1]; INVALID_ARGUMENT otherwise.
absl::Status ParseSlowdown(absl::string_view text, TrainerOptions* options);

// Runs `assignment` to completion, reporting progress, completion or failure to the coordinator
// through `coordinator`. Returns early with CANCELLED once `*cancel` becomes true or the coordinator
// says the job was cancelled.
absl::Status RunJob(const WorkAssignment& assignment, Coordinator::Stub* coordinator,
                    const std::string& node_id, const std::atomic<bool>* cancel,
                    const TrainerOptions& options);

}  // namespace psrv

#endif  // PSRV_WORKER_TRAINER_H_
