// LanguageModel's default gradient accumulation and mean loss (language_model.h).
#include <cstddef>
#include <cmath>
#include <cstdint>
#include <vector>

#include "worker/model/language_model.h"

namespace psrv {

namespace {

// What a micro-batch's ForwardBackward reports goes on to the step's stream: only the first
// micro-batch awaits parameters, and only the last one's gradients are final, once the earlier
// ones' sum is added to them (range by range, as they are reported) and scaled.
class MicroBatchRelay : public ParameterStream {
 public:
  MicroBatchRelay(ParameterStream* step, bool first, bool last, float* grads,
                  const float* scratch, float scale)
      : step_(step), first_(first), last_(last), grads_(grads), scratch_(scratch),
        scale_(scale) {}

  void AwaitParameters(const FlatRange& range) override {
    if (first_) step_->AwaitParameters(range);
  }
  void GradientsReady(const FlatRange& range) override {
    if (!last_) return;
    float* g = grads_ + range.offset;
    if (scratch_ != nullptr) {  // This micro-batch wrote scratch: add it to the sum in grads.
      const float* s = scratch_ + range.offset;
      for (size_t i = 0; i < range.count; ++i) g[i] += s[i];
    }
    if (scale_ != 1.0f) {
      for (size_t i = 0; i < range.count; ++i) g[i] *= scale_;
    }
    step_->GradientsReady(range);
  }

 private:
  ParameterStream* const step_;
  const bool first_;
  const bool last_;
  float* const grads_;
  const float* const scratch_;
  const float scale_;
};

}  // namespace

float LanguageModel::AccumulateGradients(const float* params, const int32_t* rows, int batch,
                                         int micro_batches, const uint64_t* seeds, float* grads,
                                         float* scratch) {
  const size_t n = num_parameters();
  ParameterStream* const stream = stream_;
  if (stream != nullptr && !streams_parameters()) {
    // This model reads and writes everything at once: all parameters first, all gradients last.
    stream->AwaitParameters(FlatRange{0, n});
    stream_ = nullptr;
    const float loss =
        AccumulateGradients(params, rows, batch, micro_batches, seeds, grads, scratch);
    stream_ = stream;
    if (std::isfinite(loss)) stream->GradientsReady(FlatRange{0, n});  // A NaN step fails.
    return loss;
  }
  const size_t rows_per_micro = static_cast<size_t>(batch) * window();
  const float scale = micro_batches > 1 ? 1.0f / static_cast<float>(micro_batches) : 1.0f;
  double loss = 0;
  for (int micro = 0; micro < micro_batches; ++micro) {
    float* out = micro == 0 ? grads : scratch;
    const bool last = micro == micro_batches - 1;
    MicroBatchRelay relay(stream, micro == 0, last, grads, micro > 0 ? scratch : nullptr, scale);
    if (stream != nullptr) stream_ = &relay;
    loss += ForwardBackward(params, rows + micro * rows_per_micro, batch, seeds[micro], out);
    stream_ = stream;
    if (stream != nullptr && last) continue;  // The relay summed and scaled the last one.
    if (micro > 0) {
      for (size_t i = 0; i < n; ++i) grads[i] += out[i];
    }
    if (last && scale != 1.0f) {
      for (size_t i = 0; i < n; ++i) grads[i] *= scale;
    }
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
