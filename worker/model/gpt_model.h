// The "gpt" model kind: a GPT-2 style decoder-only transformer (nanoGPT, llm.c) on the CPU, over
// one flat parameter buffer laid out as GptTables() lists.
#ifndef PSRV_WORKER_MODEL_GPT_MODEL_H_
#define PSRV_WORKER_MODEL_GPT_MODEL_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/model_layout.h"
#include "proto/types.pb.h"
#include "worker/model/gpt_config.h"
#include "worker/model/gpt_views.h"
#include "worker/model/language_model.h"
#include "common/thread_pool.h"

namespace psrv {

// The parameter tables of `config` in the order of the flat buffer: common/model_layout.h's
// GptTables (the single definition the coordinator shards and the servers initialise).
std::vector<TableSpec> GptTables(const GptConfig& config, uint64_t seed);

// Forward, backward and next-token logits of the GPT. With x the residual stream (B, T, C):
//   x = dropout(wte[tokens] + wpe[positions])
//   per layer:  x += dropout(attn_proj(attention(ln1(x))))
//               x += dropout(mlp_proj(gelu(fc(ln2(x)))))
//   logits = lnf(x) @ wte^T
//   loss = mean cross-entropy of the B*T next-token predictions
// with causal multi-head attention whose weights also pass through dropout. A training row is T+1
// tokens: inputs row[0..T), targets row[1..T].
//
// Threads: the loops run on the model's own ThreadPool (config.threads). The matrix products run
// on OpenBLAS: with OPENBLAS_NUM_THREADS=1 (recommended; ~10% faster and steadier under load on a
// 2-core VM) they are split over the same pool, otherwise each is one call threaded by OpenBLAS.
// Results do not depend on config.threads, and are bitwise reproducible for a given OpenBLAS
// setting. Thread-compatible; owns its pool and scratch activations sized for the largest batch
// seen.
class GptModel : public LanguageModel {
 public:
  // INVALID_ARGUMENT if ValidateGptConfig fails.
  static absl::StatusOr<std::unique_ptr<GptModel>> Create(const GptConfig& config);

  const GptConfig& config() const { return config_; }

  int window() const override { return config_.context + 1; }
  int predictions_per_row() const override { return config_.context; }
  int vocab_size() const override { return config_.vocab; }
  int max_context() const override { return config_.context; }
  size_t num_parameters() const override { return num_parameters_; }

  // With a parameter stream: awaits the embeddings, each layer and the final LayerNorm (the
  // groups of GptParameterGroups) just before forward reads them, and reports them in the
  // opposite order as backward finishes them.
  float ForwardBackward(const float* params, const int32_t* rows, int batch, uint64_t seed,
                        float* grads) override;
  bool streams_parameters() const override { return true; }
  float Loss(const float* params, const int32_t* rows, int batch) override;
  void NextTokenLogits(const float* params, const int32_t* tokens, int length,
                       float* logits) override;

 private:
  // Views of a flat buffer (parameters or gradients), one per table (worker/model/gpt_views.h).
  template <typename Float>
  using Tables = GptTableViews<Float>;

  explicit GptModel(const GptConfig& config);

  template <typename Float>
  Tables<Float> View(Float* buffer) const;
  // Grows the activations to `batch` rows of T tokens.
  void Reserve(int batch);
  // Splits rows (batch, T+1) into inputs_ and targets_ (batch, T); false for an out-of-range id.
  bool LoadRows(const int32_t* rows, int batch);
  // Runs inputs_ (B, t) through the blocks and the final LayerNorm into lnf_; `training` applies
  // dropout with masks from `seed` and awaits each group of parameters (parameter stream).
  void Forward(const Tables<const float>& p, int B, int t, bool training, uint64_t seed);
  // Logits of all B*T positions and the mean loss against targets_; probs_ keeps the softmax.
  float HeadLoss(const Tables<const float>& p, int B);

  GptConfig config_;
  size_t num_parameters_;
  std::vector<ParameterGroup> groups_;  // (L + 2) GptParameterGroups, in forward order.
  std::unique_ptr<ThreadPool> pool_;
  bool dropout_ = false;  // config_.dropout > 0

  // Activations for B = reserved_batch_ rows (training uses the full T; NextTokenLogits fewer).
  int reserved_batch_ = 0;
  std::vector<int32_t> inputs_;     // (B, T)
  std::vector<int32_t> targets_;    // (B, T)
  std::vector<float> encoded_;      // (B, T, C) embeddings after dropout: the first residual
  std::vector<float> ln1_;          // (L, B, T, C)
  std::vector<float> ln1_mean_;     // (L, B, T)
  std::vector<float> ln1_rstd_;     // (L, B, T)
  std::vector<float> qkv_;          // (L, B, T, 3C)
  std::vector<float> att_;          // (L, B, NH, T, T) softmax weights
  std::vector<float> att_dropped_;  // (L, B, NH, T, T) att * dropout mask (dropout only)
  std::vector<float> atty_;         // (L, B, T, C) attention output, heads side by side
  std::vector<float> residual2_;    // (L, B, T, C) residual after the attention
  std::vector<float> ln2_;          // (L, B, T, C)
  std::vector<float> ln2_mean_;     // (L, B, T)
  std::vector<float> ln2_rstd_;     // (L, B, T)
  std::vector<float> fch_;          // (L, B, T, 4C) fc output
  std::vector<float> fch_tanh_;     // (L, B, T, 4C) the tanh inside the GELU
  std::vector<float> fch_gelu_;     // (L, B, T, 4C)
  std::vector<float> residual3_;    // (L, B, T, C) residual after the MLP: the layer's output
  std::vector<float> lnf_;          // (B, T, C)
  std::vector<float> lnf_mean_;     // (B, T)
  std::vector<float> lnf_rstd_;     // (B, T)
  std::vector<float> probs_;        // (B, T, V) logits, then probabilities, then d(loss)/d(logits)
  std::vector<float> losses_;       // (B, T)
  // Dropout masks (0 or 1/(1-p)), dropout only.
  std::vector<float> embed_mask_;      // (B, T, C)
  std::vector<float> att_mask_;        // (L, B, NH, T, T)
  std::vector<float> attn_proj_mask_;  // (L, B, T, C)
  std::vector<float> mlp_proj_mask_;   // (L, B, T, C)
  // Scratch of the forward and the backward.
  std::vector<float> proj_;       // (B, T, C) an output projection before its residual add
  std::vector<float> dresidual_;  // (B, T, C) d(loss)/d(residual stream)
  std::vector<float> dbtc_;       // (B, T, C)
  std::vector<float> datty_;      // (B, T, C)
  std::vector<float> dqkv_;       // (B, T, 3C)
  std::vector<float> dfch_;       // (B, T, 4C)
  std::vector<float> datt_;       // (B, NH, T, T)
};

// The GPT as a LanguageModel (what CreateLanguageModel builds for kind "gpt").
absl::StatusOr<std::unique_ptr<LanguageModel>> CreateGptModel(const GptConfig& config);

}  // namespace psrv

#endif  // PSRV_WORKER_MODEL_GPT_MODEL_H_
