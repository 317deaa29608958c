// The GPT's hyperparameters, shared by the CPU (worker/model/gpt_model.h) and the CUDA
// (worker/cuda/gpt_cuda.h) backends: one validation and one set of dropout stream ids, so that
// both backends accept the same models and draw the same masks bit for bit. Plain Abseil (the GPU
// benchmark links it without protobuf); a job's ModelSpec becomes a GptConfig in
// worker/model/model_factory.h.
#ifndef PSRV_WORKER_MODEL_GPT_CONFIG_H_
#define PSRV_WORKER_MODEL_GPT_CONFIG_H_

#include <cstdint>

#include "absl/status/status.h"

namespace psrv {

// Hyperparameters of the "gpt" kind.
struct GptConfig {
  int layers = 4;    // L, 1..256
  int heads = 4;     // NH, divides width
  int width = 128;   // C, channels of the residual stream, 1..65536
  int context = 64;  // T, tokens per row the model reads, 1..65536
  int vocab = 65;    // V, 1..2^30
  // p in [0, 1): dropout on the embeddings, the attention weights and both residual projections.
  float dropout = 0.0f;
  // The output head reuses wte (true) or has a table of its own, lm_head (V, C), after lnf_bias
  // (false; gpt_views.h). CPU backend only, whole models only (not pipeline stages).
  bool tie_embeddings = true;
  // CPU backend: threads of the model's pool, the caller included; 0: one per core. Results do
  // not depend on it. The CUDA backend ignores it.
  int threads = 0;
};

// INVALID_ARGUMENT naming the first field outside its range (see GptConfig).
absl::Status ValidateGptConfig(const GptConfig& config);

// Dropout streams (the `stream` argument of the masks' counter-based generator): one per dropout
// site, so that each site of each layer draws its own mask.
namespace gpt_dropout {
constexpr uint64_t EmbedStream() { return 0; }
constexpr uint64_t AttentionStream(int layer) { return 1 + 3 * static_cast<uint64_t>(layer); }
constexpr uint64_t AttnProjStream(int layer) { return 2 + 3 * static_cast<uint64_t>(layer); }
constexpr uint64_t MlpProjStream(int layer) { return 3 + 3 * static_cast<uint64_t>(layer); }
}  // namespace gpt_dropout

}  // namespace psrv

#endif  // PSRV_WORKER_MODEL_GPT_CONFIG_H_
