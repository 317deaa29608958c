// Pipeline parallelism, part 1: which layers each stage of a pipeline group holds. The GPT's
// layers are cut into P blocks of consecutive layers, balanced by compute (FLOPs per token) with
// the parameter count as the tie-break; the first stage also has the embeddings, the last the final
// LayerNorm and the head (which reads the token embedding: a tied table both stages hold).
#ifndef PSRV_WORKER_PIPELINE_STAGE_PLAN_H_
#define PSRV_WORKER_PIPELINE_STAGE_PLAN_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/model/gpt_config.h"
#include "worker/model/gpt_views.h"

namespace psrv {

// What one stage holds and what it costs.
struct StagePlan {
  GptPart part;
  uint64_t parameters = 0;      // Elements of its buffer (GptPartSize).
  double flops_per_token = 0;   // Forward; backward is about twice that.
};

// Forward FLOPs per token of one transformer layer of `config` (matrix products 24 C^2, causal
// attention ~2 T C on average), of the head (2 V C) and of the embeddings (~0).
double GptLayerFlops(const GptConfig& config);
double GptHeadFlops(const GptConfig& config);

// P stages for `config`: consecutive blocks of at least one layer that minimise the most FLOPs any
// one stage has (the head counts on the last stage), ties broken by the most parameters; exact
// (dynamic programming over the cut points). INVALID_ARGUMENT unless 1 <= stages <= layers.
absl::StatusOr<std::vector<StagePlan>> PlanStages(const GptConfig& config, int stages);

}  // namespace psrv

#endif  // PSRV_WORKER_PIPELINE_STAGE_PLAN_H_
