#include "worker/pipeline/stage_plan.h"

#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"

namespace psrv {

double GptLayerFlops(const GptConfig& config) {
  const double C = config.width, T = config.context;
  // qkv 3C^2 + proj C^2 + fc 4C^2 + mlp proj 4C^2 multiply-adds; attention scores and the
  // weighted sum ~T/2 positions x C each on average (causal).
  return 2.0 * 12.0 * C * C + 2.0 * T * C;
}

double GptHeadFlops(const GptConfig& config) {
  return 2.0 * static_cast<double>(config.vocab) * config.width;
}

absl::StatusOr<std::vector<StagePlan>> PlanStages(const GptConfig& config, int stages) {
  const int L = config.layers;
  if (stages < 1 || stages > L) {
    return absl::InvalidArgumentError(absl::StrCat(
        "a pipeline of ", stages, " stages needs 1 to ", L,
        " stages for this model (each stage holds at least one of its ", L, " layers)"));
  }
  const size_t C = config.width, T = config.context, V = config.vocab;
  auto plan_of = [&](int first, int end, int stage) {
    StagePlan plan;
    plan.part.first_layer = first;
    plan.part.layers = end - first;
    plan.part.embeddings = stage == 0;
    plan.part.head = stage == stages - 1;
    plan.parameters = GptPartSize(plan.part, C, T, V);
    plan.flops_per_token =
        GptLayerFlops(config) * (end - first) + (plan.part.head ? GptHeadFlops(config) : 0.0);
    return plan;
  };
  // cost[s][e]: the best (max FLOPs, max parameters) of stages 0..s covering layers [0, e).
  using Cost = std::pair<double, uint64_t>;
  const Cost kInf{std::numeric_limits<double>::infinity(), 0};
  std::vector<std::vector<Cost>> cost(stages, std::vector<Cost>(L + 1, kInf));
  std::vector<std::vector<int>> cut(stages, std::vector<int>(L + 1, -1));
  for (int e = 1; e <= L; ++e) {
    const StagePlan p = plan_of(0, e, 0);
    cost[0][e] = {p.flops_per_token, p.parameters};
  }
  for (int s = 1; s < stages; ++s) {
    for (int e = s + 1; e <= L; ++e) {
      for (int b = s; b < e; ++b) {  // Stage s holds layers [b, e).
        if (cost[s - 1][b].first == kInf.first) continue;
        const StagePlan p = plan_of(b, e, s);
        const Cost c{std::max(cost[s - 1][b].first, p.flops_per_token),
                     std::max(cost[s - 1][b].second, p.parameters)};
        if (c < cost[s][e]) {
          cost[s][e] = c;
          cut[s][e] = b;
        }
      }
    }
  }
  std::vector<StagePlan> plans(stages);
  int end = L;
  for (int s = stages - 1; s >= 0; --s) {
    const int begin = s == 0 ? 0 : cut[s][end];
    plans[s] = plan_of(begin, end, s);
    end = begin;
  }
  return plans;
}

}  // namespace psrv
