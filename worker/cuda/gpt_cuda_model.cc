// GptCuda behind the LanguageModel interface (see gpt_cuda_model.h).
#include "worker/cuda/gpt_cuda_model.h"

#include <cmath>

#include <algorithm>
#include <limits>

#include "worker/cuda/cuda_status.h"

namespace psrv {
namespace cuda {
namespace {

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

}  // namespace

absl::StatusOr<std::unique_ptr<GptCudaModel>> GptCudaModel::Create(const GptCudaConfig& config) {
  RETURN_IF_ERROR(ValidateGptConfig(config));
  if (!config.tie_embeddings) {
    return absl::UnimplementedError("the CUDA GPT has tied embeddings only (use the CPU backend)");
  }
  ASSIGN_OR_RETURN(std::unique_ptr<GptCuda> gpt, GptCuda::Create(config));
  return std::unique_ptr<GptCudaModel>(new GptCudaModel(std::move(gpt)));
}

absl::StatusOr<std::unique_ptr<GptCudaModel>> GptCudaModel::Create(const GptConfig& config) {
  GptCudaConfig cuda_config;
  static_cast<GptConfig&>(cuda_config) = config;
  return Create(cuda_config);
}

float GptCudaModel::ForwardBackward(const float* params, const int32_t* rows, int batch,
                                    uint64_t seed, float* grads) {
  float loss = kNaN;
  if (status_.ok()) status_ = gpt_->UploadParams(params);
  if (status_.ok()) {
    absl::StatusOr<float> result = gpt_->ForwardBackward(rows, batch, seed);
    if (result.ok()) {
      loss = *result;
    } else {
      status_ = result.status();
    }
  }
  if (status_.ok()) status_ = gpt_->DownloadGrads(grads);
  if (!status_.ok()) {
    std::fill(grads, grads + num_parameters(), 0.0f);
    return kNaN;
  }
  return loss;
}

float GptCudaModel::AccumulateGradients(const float* params, const int32_t* rows, int batch,
                                        int micro_batches, const uint64_t* seeds, float* grads,
                                        float* scratch) {
  ParameterStream* const stream = parameter_stream();
  if (stream != nullptr && micro_batches == 1) {
    // Parameters go up and gradients come down layer by layer (GptCuda::ForwardBackwardStreamed).
    if (status_.ok()) {
      absl::StatusOr<float> loss =
          gpt_->ForwardBackwardStreamed(params, rows, batch, seeds[0], grads, stream);
      if (loss.ok()) return *loss;
      status_ = loss.status();
    }
    // The step fails (NaN; status() says why): what it did not report is never pushed.
    return kNaN;
  }
  // Several micro-batches: every parameter awaited before the upload, every gradient reported
  // after the download of their sum.
  const FlatRange all{0, num_parameters()};
  if (stream != nullptr) stream->AwaitParameters(all);
  const float loss = AccumulateOnDevice(params, rows, batch, micro_batches, seeds, grads, scratch);
  if (stream != nullptr && std::isfinite(loss)) stream->GradientsReady(all);  // A NaN step fails.
  return loss;
}

float GptCudaModel::AccumulateOnDevice(const float* params, const int32_t* rows, int batch,
                                       int micro_batches, const uint64_t* seeds, float* grads,
                                       float* /*scratch*/) {
  if (micro_batches == 1) return ForwardBackward(params, rows, batch, seeds[0], grads);
  const size_t rows_per_micro = static_cast<size_t>(batch) * window();
  double loss = 0;
  if (status_.ok()) status_ = gpt_->UploadParams(params);
  for (int micro = 0; micro < micro_batches && status_.ok(); ++micro) {
    absl::StatusOr<float> result =
        gpt_->ForwardBackward(rows + micro * rows_per_micro, batch, seeds[micro]);
    if (!result.ok()) {
      status_ = result.status();
      break;
    }
    loss += *result;
    status_ = gpt_->AccumulateGrads(/*first=*/micro == 0);
  }
  if (status_.ok()) {
    status_ = gpt_->DownloadGradSum(grads, 1.0f / static_cast<float>(micro_batches));
  }
  if (!status_.ok()) {
    std::fill(grads, grads + num_parameters(), 0.0f);
    return kNaN;
  }
  return static_cast<float>(loss / micro_batches);
}

float GptCudaModel::Loss(const float* params, const int32_t* rows, int batch) {
  if (status_.ok()) status_ = gpt_->UploadParams(params);
  if (!status_.ok()) return kNaN;
  absl::StatusOr<float> loss = gpt_->Loss(rows, batch);
  if (!loss.ok()) {
    status_ = loss.status();
    return kNaN;
  }
  return *loss;
}

float GptCudaModel::MeanLoss(const float* params, int batch, int batches,
                             const std::function<void(int32_t* rows)>& next_rows) {
  if (status_.ok()) status_ = gpt_->UploadParams(params);
  if (!status_.ok()) return kNaN;
  rows_.resize(static_cast<size_t>(batch) * window());
  double total = 0;
  for (int b = 0; b < batches; ++b) {
    next_rows(rows_.data());
    absl::StatusOr<float> loss = gpt_->Loss(rows_.data(), batch);
    if (!loss.ok()) {
      status_ = loss.status();
      return kNaN;
    }
    total += *loss;
  }
  return static_cast<float>(total / batches);
}

void GptCudaModel::NextTokenLogits(const float* params, const int32_t* tokens, int length,
                                   float* logits) {
  if (status_.ok()) status_ = gpt_->UploadParams(params);
  if (status_.ok()) status_ = gpt_->NextTokenLogits(tokens, length, logits);
  if (!status_.ok()) std::fill(logits, logits + vocab_size(), kNaN);
}

}  // namespace cuda
}  // namespace psrv
