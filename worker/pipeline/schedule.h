// Pipeline parallelism, part 2: the order in which a stage runs the forwards and backwards of a
// step's M micro-batches. Both schedules flush at the end of the step (every micro-batch's
// gradient is accumulated, then the stage pushes once), and both run the backwards in micro-batch
// order 0, 1, ..., M-1, so the accumulated gradient is the same sum in the same order as a single
// worker's gradient accumulation.
#ifndef PSRV_WORKER_PIPELINE_SCHEDULE_H_
#define PSRV_WORKER_PIPELINE_SCHEDULE_H_

#include <string>
#include <vector>

namespace psrv {

enum class PipelineSchedule {
  kGpipe,     // GPipe: all M forwards, then all M backwards. Holds M micro-batches' activations.
  kOneFOneB,  // 1F1B (PipeDream-flush): P-s-1 forwards to fill the pipe, then one forward and one
              // backward in turn, then the remaining backwards. Holds at most P-s.
};

struct StageOp {
  enum Kind { kForward, kBackward } kind;
  int micro_batch;
};

// The ops stage `stage` (0-based) of `stages` runs for `micro_batches` micro-batches.
std::vector<StageOp> StageOps(PipelineSchedule schedule, int stages, int stage,
                              int micro_batches);

// The most micro-batches whose activations the stage holds at once under `ops`.
int MaxInFlight(const std::vector<StageOp>& ops);

// "F0 F1 B0 ..." (tests, logs).
std::string OpsString(const std::vector<StageOp>& ops);

// The idle fraction of each stage in theory when every op of every stage takes the same time
// (forward f, backward 2f): (P-1)/(M+P-1) for both schedules.
double TheoreticalBubble(int stages, int micro_batches);

}  // namespace psrv

#endif  // PSRV_WORKER_PIPELINE_SCHEDULE_H_
