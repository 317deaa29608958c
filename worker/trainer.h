// One worker's run of one job: the training loop pull -> compute -> push, progress reports to the
// coordinator, and a generated text sample at the end.
#ifndef PSRV_WORKER_TRAINER_H_
#define PSRV_WORKER_TRAINER_H_

#include <atomic>
#include <string>

#include "absl/status/status.h"
#include "common/metrics.h"
#include "proto/coordinator.grpc.pb.h"

namespace psrv {

// Runs `assignment` to completion, reporting progress, completion or failure to the coordinator
// through `coordinator`. Returns early with CANCELLED once `*cancel` becomes true or the coordinator
// says the job was cancelled. With `metrics` (not owned), records the step times, losses and
// throughput there (worker/training_metrics.h).
absl::Status RunJob(const WorkAssignment& assignment, Coordinator::Stub* coordinator,
                    const std::string& node_id, const std::atomic<bool>* cancel,
                    MetricsRegistry* metrics = nullptr);

}  // namespace psrv

#endif  // PSRV_WORKER_TRAINER_H_
