// The worker's Prometheus metrics for the job it runs: step time and its phases (pull, compute,
// push, eval), steps, tokens and bytes, the loss, validation loss, throughput and gradient norm,
// each labelled with the job and the worker's rank (docs/METRICS.md).
#ifndef PSRV_WORKER_TRAINING_METRICS_H_
#define PSRV_WORKER_TRAINING_METRICS_H_

#include <cstdint>
#include <string>

#include "absl/time/time.h"
#include "common/metrics.h"

namespace psrv {

// Thread-safe. Without a registry every call does nothing.
class TrainingMetrics {
 public:
  enum Phase { kPull = 0, kCompute, kPush, kEval, kNumPhases };

  TrainingMetrics(MetricsRegistry* registry, const std::string& job_id, uint32_t rank);

  void RecordPhase(Phase phase, absl::Duration duration);
  // One training step done: its wall time (pull to push), the tokens it trained on, the payload
  // bytes it pulled and pushed, and the gradient's L2 norm before clipping.
  void RecordStep(uint64_t step, absl::Duration duration, int tokens, uint64_t pulled_bytes,
                  uint64_t pushed_bytes, double grad_norm);
  // At a progress report: the window's mean loss and tokens per second.
  void RecordWindow(float mean_loss, float tokens_per_sec);
  void RecordValidation(float val_loss);
  // Backup workers: steps the servers applied without this worker, skipped.
  void RecordSkippedSteps(uint64_t steps);

 private:
  Histogram* step_seconds_ = nullptr;
  Histogram* phase_seconds_[kNumPhases] = {};
  Counter* steps_ = nullptr;
  Counter* skipped_steps_ = nullptr;
  Counter* tokens_ = nullptr;
  Counter* pulled_bytes_ = nullptr;
  Counter* pushed_bytes_ = nullptr;
  Gauge* step_ = nullptr;
  Gauge* loss_ = nullptr;
  Gauge* val_loss_ = nullptr;
  Gauge* tokens_per_sec_ = nullptr;
  Gauge* grad_norm_ = nullptr;
};

}  // namespace psrv

#endif  // PSRV_WORKER_TRAINING_METRICS_H_
