#include "worker/pipeline/schedule.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace psrv {

std::vector<StageOp> StageOps(PipelineSchedule schedule, int stages, int stage,
                              int micro_batches) {
  std::vector<StageOp> ops;
  const int M = micro_batches;
  if (schedule == PipelineSchedule::kGpipe) {
    for (int m = 0; m < M; ++m) ops.push_back({StageOp::kForward, m});
    for (int m = 0; m < M; ++m) ops.push_back({StageOp::kBackward, m});
    return ops;
  }
  const int warmup = std::min(stages - stage - 1, M);
  for (int m = 0; m < warmup; ++m) ops.push_back({StageOp::kForward, m});
  int backward = 0;
  for (int m = warmup; m < M; ++m) {
    ops.push_back({StageOp::kForward, m});
    ops.push_back({StageOp::kBackward, backward++});
  }
  while (backward < M) ops.push_back({StageOp::kBackward, backward++});
  return ops;
}

int MaxInFlight(const std::vector<StageOp>& ops) {
  int now = 0, most = 0;
  for (const StageOp& op : ops) {
    now += op.kind == StageOp::kForward ? 1 : -1;
    most = std::max(most, now);
  }
  return most;
}

std::string OpsString(const std::vector<StageOp>& ops) {
  std::string s;
  for (const StageOp& op : ops) {
    absl::StrAppend(&s, s.empty() ? "" : " ", op.kind == StageOp::kForward ? "F" : "B",
                    op.micro_batch);
  }
  return s;
}

double TheoreticalBubble(int stages, int micro_batches) {
  return static_cast<double>(stages - 1) / (micro_batches + stages - 1);
}

}  // namespace psrv
