#include "worker/training_metrics.h"

#include "absl/strings/str_cat.h"

namespace psrv {

TrainingMetrics::TrainingMetrics(MetricsRegistry* registry, const std::string& job_id,
                                 uint32_t rank) {
  if (registry == nullptr) return;
  const std::vector<std::string> labels = {job_id, absl::StrCat(rank)};
  const std::vector<std::string> names = {"job", "rank"};
  step_seconds_ = registry
                      ->AddHistogram("psrv_worker_step_seconds",
                                     "Wall time of a training step, from its pull to the end of "
                                     "its push, in seconds.",
                                     names, LatencyBuckets())
                      ->Get(labels);
  HistogramFamily* phases = registry->AddHistogram(
      "psrv_worker_phase_seconds",
      "Wall time of each phase of a step (pull: waiting for parameters, also inside an "
      "overlapped forward; compute, less those waits; push: after compute; eval: a validation "
      "loss), in seconds.",
      {"job", "rank", "phase"}, LatencyBuckets());
  const char* phase_names[kNumPhases] = {"pull", "compute", "push", "eval"};
  for (int p = 0; p < kNumPhases; ++p) {
    phase_seconds_[p] = phases->Get({job_id, labels[1], phase_names[p]});
  }
  steps_ = registry->AddCounter("psrv_worker_steps_total", "Training steps completed.", names)
               ->Get(labels);
  skipped_steps_ =
      registry
          ->AddCounter("psrv_worker_skipped_steps_total",
                       "Backup workers (training.aggregate_first): steps the servers applied "
                       "without this worker, which it skipped to catch up.",
                       names)
          ->Get(labels);
  tokens_ = registry
                ->AddCounter("psrv_worker_tokens_total",
                             "Tokens trained on (predictions per row times rows).", names)
                ->Get(labels);
  pulled_bytes_ = registry
                      ->AddCounter("psrv_worker_pulled_bytes_total",
                                   "Parameter payload bytes received by pulls.", names)
                      ->Get(labels);
  pushed_bytes_ = registry
                      ->AddCounter("psrv_worker_pushed_bytes_total",
                                   "Gradient payload bytes sent by pushes.", names)
                      ->Get(labels);
  step_ = registry->AddGauge("psrv_worker_step", "The last step completed.", names)->Get(labels);
  loss_ = registry
              ->AddGauge("psrv_worker_loss",
                         "Mean training loss over the last reporting window, nats per token.",
                         names)
              ->Get(labels);
  val_loss_ = registry
                  ->AddGauge("psrv_worker_val_loss",
                             "The last validation loss, nats per token (rank 0 only).", names)
                  ->Get(labels);
  tokens_per_sec_ = registry
                        ->AddGauge("psrv_worker_tokens_per_second",
                                   "Training tokens per second over the last reporting window.",
                                   names)
                        ->Get(labels);
  grad_norm_ = registry
                   ->AddGauge("psrv_worker_grad_norm",
                              "L2 norm of the last step's gradient, before clipping.", names)
                   ->Get(labels);
}

void TrainingMetrics::RecordPhase(Phase phase, absl::Duration duration) {
  if (phase_seconds_[phase] != nullptr) {
    phase_seconds_[phase]->Observe(absl::ToDoubleSeconds(duration));
  }
}

void TrainingMetrics::RecordSkippedSteps(uint64_t steps) {
  if (skipped_steps_ != nullptr) skipped_steps_->Increment(static_cast<double>(steps));
}

void TrainingMetrics::RecordStep(uint64_t step, absl::Duration duration, int tokens,
                                 uint64_t pulled_bytes, uint64_t pushed_bytes, double grad_norm) {
  if (steps_ == nullptr) return;
  step_seconds_->Observe(absl::ToDoubleSeconds(duration));
  steps_->Increment();
  tokens_->Increment(tokens);
  pulled_bytes_->Increment(static_cast<double>(pulled_bytes));
  pushed_bytes_->Increment(static_cast<double>(pushed_bytes));
  step_->Set(static_cast<double>(step));
  grad_norm_->Set(grad_norm);
}

void TrainingMetrics::RecordWindow(float mean_loss, float tokens_per_sec) {
  if (loss_ == nullptr) return;
  loss_->Set(mean_loss);
  tokens_per_sec_->Set(tokens_per_sec);
}

void TrainingMetrics::RecordValidation(float val_loss) {
  if (val_loss_ != nullptr) val_loss_->Set(val_loss);
}

}  // namespace psrv
