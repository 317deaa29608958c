// The CUDA GPT as a LanguageModel (worker/model/language_model.h): fp32 parameters from the host
// (the worker's pulled buffer) are uploaded on every call, computed in bf16 on the GPU, and the
// fp32 gradients copied back, so the rest of the worker is the same as with the CPU model.
#ifndef PSRV_WORKER_CUDA_GPT_CUDA_MODEL_H_
#define PSRV_WORKER_CUDA_GPT_CUDA_MODEL_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "worker/cuda/gpt_cuda.h"
#include "worker/model/gpt_model.h"
#include "worker/model/language_model.h"

namespace psrv {
namespace cuda {

// LanguageModel's calls return no Status: a CUDA or cuBLAS failure is kept in status() (the first
// one; later calls then fail at once), and the call returns a NaN loss with zero gradients (NaN
// logits). Owns the GptCuda. Thread-compatible.
class GptCudaModel : public LanguageModel {
 public:
  // INVALID_ARGUMENT for a config the CPU model would reject; CUDA errors (no device, out of
  // memory) as their Status.
  // The device and how to compute (attention path, GELU): see GptCudaConfig.
  static absl::StatusOr<std::unique_ptr<GptCudaModel>> Create(const GptCudaConfig& config);
  // GptCudaConfig's defaults on device 0.
  static absl::StatusOr<std::unique_ptr<GptCudaModel>> Create(const GptConfig& config);

  int window() const override { return gpt_->config().context + 1; }
  int predictions_per_row() const override { return gpt_->config().context; }
  int vocab_size() const override { return gpt_->config().vocab; }
  int max_context() const override { return gpt_->config().context; }
  size_t num_parameters() const override { return gpt_->num_parameters(); }

  float ForwardBackward(const float* params, const int32_t* rows, int batch, uint64_t seed,
                        float* grads) override;
  // The parameters go up once and the micro-batches' gradients are summed on the GPU
  // (GptCuda::AccumulateGrads): one upload and one download per step instead of one per
  // micro-batch. `scratch` is unused. With a parameter stream, a single micro-batch overlaps the
  // transfers with compute layer by layer (GptCuda::ForwardBackwardStreamed); several await
  // every parameter before the upload and report every gradient after the download.
  float AccumulateGradients(const float* params, const int32_t* rows, int batch, int micro_batches,
                            const uint64_t* seeds, float* grads, float* scratch) override;
  float Loss(const float* params, const int32_t* rows, int batch) override;
  // The parameters go up once for all the batches.
  float MeanLoss(const float* params, int batch, int batches,
                 const std::function<void(int32_t* rows)>& next_rows) override;
  void NextTokenLogits(const float* params, const int32_t* tokens, int length,
                       float* logits) override;

  // OK, or the first CUDA/cuBLAS error of any call.
  const absl::Status& status() const { return status_; }
  GptCuda& gpt() { return *gpt_; }

 private:
  explicit GptCudaModel(std::unique_ptr<GptCuda> gpt) : gpt_(std::move(gpt)) {}
  // AccumulateGradients without the stream.
  float AccumulateOnDevice(const float* params, const int32_t* rows, int batch, int micro_batches,
                           const uint64_t* seeds, float* grads, float* scratch);

  std::unique_ptr<GptCuda> gpt_;
  absl::Status status_;
  std::vector<int32_t> rows_;  // MeanLoss's batch
};

}  // namespace cuda
}  // namespace psrv

#endif  // PSRV_WORKER_CUDA_GPT_CUDA_MODEL_H_
