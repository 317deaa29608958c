// LanguageModel's default gradient accumulation and mean loss (language_model.h).
#include <cstddef>
#include <cstdint>
#include <vector>

#include "worker/model/language_model.h"

namespace psrv {

float LanguageModel::AccumulateGradients(const float* params, const int32_t* rows, int batch,
                                         int micro_batches, const uint64_t* seeds, float* grads,
                                         float* scratch) {
  const size_t n = num_parameters();
  const size_t rows_per_micro = static_cast<size_t>(batch) * window();
  double loss = 0;
  for (int micro = 0; micro < micro_batches; ++micro) {
    float* out = micro == 0 ? grads : scratch;
    loss += ForwardBackward(params, rows + micro * rows_per_micro, batch, seeds[micro], out);
    if (micro > 0) {
      for (size_t i = 0; i < n; ++i) grads[i] += out[i];
    }
  }
  if (micro_batches > 1) {
    const float scale = 1.0f / static_cast<float>(micro_batches);
    for (size_t i = 0; i < n; ++i) grads[i] *= scale;
  }
  return static_cast<float>(loss / micro_batches);
}

float LanguageModel::MeanLoss(const float* params, int batch, int batches,
                              const std::function<void(int32_t* rows)>& next_rows) {
  std::vector<int32_t> rows(static_cast<size_t>(batch) * window());
  double total = 0;
  for (int b = 0; b < batches; ++b) {
    next_rows(rows.data());
    total += Loss(params, rows.data(), batch);
  }
  return static_cast<float>(total / batches);
}

}  // namespace psrv
