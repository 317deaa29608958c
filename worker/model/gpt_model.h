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
  // One stage of a pipeline: `part` (layers [first_layer, first_layer + layers) of `config`,
  // with the embeddings and/or the head or neither) over its own buffer (GptPartLayout), with
  // activations for up to `slots` micro-batches in flight at once (StageForward/StageBackward).
  // INVALID_ARGUMENT if the config or the part is invalid (no layer, past the last one).
  static absl::StatusOr<std::unique_ptr<GptModel>> CreateStage(const GptConfig& config,
                                                               const GptPart& part, int slots);

  const GptConfig& config() const { return config_; }
  const GptPart& part() const { return part_; }
  int slots() const { return static_cast<int>(slots_.size()); }

  int window() const override { return config_.context + 1; }
  int predictions_per_row() const override { return config_.context; }
  int vocab_size() const override { return config_.vocab; }
  int max_context() const override { return config_.context; }
  // Of the part (the whole model: all of them).
  size_t num_parameters() const override { return num_parameters_; }

  // The whole model only (CreateStage of the whole model too). With a parameter stream: awaits
  // the embeddings, each layer and the final LayerNorm (the groups of GptParameterGroups) just
  // before forward reads them, and reports them in the opposite order as backward finishes them.
  float ForwardBackward(const float* params, const int32_t* rows, int batch, uint64_t seed,
                        float* grads) override;
  bool streams_parameters() const override { return true; }
  float Loss(const float* params, const int32_t* rows, int batch) override;
  void NextTokenLogits(const float* params, const int32_t* tokens, int length,
                       float* logits) override;

  // Pipeline stages (any part). Training forward of one micro-batch into activation `slot`
  // (0 <= slot < slots): `rows` (batch, T+1) are the micro-batch's rows (the stage with the
  // embeddings reads their inputs, the one with the head their targets); `input` (batch, T, C)
  // is the previous stage's output (ignored by the stage with the embeddings); `seed` decides the
  // dropout masks (layer l of the whole model draws the same mask in any part). Writes `output`
  // (batch, T, C), the residual stream after the part's last layer, unless the part has the head;
  // returns the micro-batch's mean loss if it has the head, else 0 (NaN for a token id out of
  // range).
  // `training` false: evaluation (no dropout, no parameter stream; not for StageBackward).
  float StageForward(const float* params, int slot, const int32_t* rows, const float* input,
                     int batch, uint64_t seed, float* output, bool training = true);
  // Backward of the micro-batch StageForward put in `slot`: `doutput` (batch, T, C) is
  // d(loss)/d(output) from the next stage (ignored by the stage with the head, which starts from
  // its loss). Writes d(loss)/d(the part's parameters) into `grads` (num_parameters, overwritten)
  // and, unless the part has the embeddings, d(loss)/d(input) into `dinput` (batch, T, C). The
  // slot is free again afterwards. With the head and the embeddings (the whole model) this is
  // ForwardBackward's gradient bit for bit.
  void StageBackward(const float* params, int slot, const float* doutput, float* grads,
                     float* dinput);
  // Bytes of activations one micro-batch of `batch` rows holds from its forward to its backward.
  size_t ActivationBytes(int batch) const override;

 private:
  // Views of a flat buffer (parameters or gradients), one per table (worker/model/gpt_views.h).
  template <typename Float>
  using Tables = GptTableViews<Float>;

  // What forward keeps for backward, for one micro-batch of the part's layers.
  struct Activations {
    int capacity = 0;  // Rows the vectors are sized for.
    int batch = 0;     // Rows (B) and positions (B * t) of the last forward.
    size_t positions = 0;
    std::vector<int32_t> inputs;     // (B, T)
    std::vector<int32_t> targets;    // (B, T)
    std::vector<float> encoded;      // (B, T, C) the part's input: embeddings after dropout, or
                                     // the previous stage's output
    std::vector<float> ln1;          // (L, B, T, C)
    std::vector<float> ln1_mean;     // (L, B, T)
    std::vector<float> ln1_rstd;     // (L, B, T)
    std::vector<float> qkv;          // (L, B, T, 3C)
    std::vector<float> att;          // (L, B, NH, T, T) softmax weights
    std::vector<float> att_dropped;  // (L, B, NH, T, T) att * dropout mask (dropout only)
    std::vector<float> atty;         // (L, B, T, C) attention output, heads side by side
    std::vector<float> residual2;    // (L, B, T, C) residual after the attention
    std::vector<float> ln2;          // (L, B, T, C)
    std::vector<float> ln2_mean;     // (L, B, T)
    std::vector<float> ln2_rstd;     // (L, B, T)
    std::vector<float> fch;          // (L, B, T, 4C) fc output
    std::vector<float> fch_tanh;     // (L, B, T, 4C) the tanh inside the GELU
    std::vector<float> fch_gelu;     // (L, B, T, 4C)
    std::vector<float> residual3;    // (L, B, T, C) residual after the MLP: the layer's output
    // Head only.
    std::vector<float> lnf;        // (B, T, C)
    std::vector<float> lnf_mean;   // (B, T)
    std::vector<float> lnf_rstd;   // (B, T)
    std::vector<float> probs;      // (B, T, V) logits, then probabilities, then d(loss)/d(logits)
    std::vector<float> losses;     // (B, T)
    // Dropout masks (0 or 1/(1-p)), dropout only.
    std::vector<float> embed_mask;      // (B, T, C)
    std::vector<float> att_mask;        // (L, B, NH, T, T)
    std::vector<float> attn_proj_mask;  // (L, B, T, C)
    std::vector<float> mlp_proj_mask;   // (L, B, T, C)
  };

  GptModel(const GptConfig& config, const GptPart& part, int slots);

  template <typename Float>
  Tables<Float> View(Float* buffer) const;
  // Grows slot `a`'s activations and the scratch to `batch` rows of T tokens.
  void Reserve(Activations* a, int batch);
  // Splits rows (batch, T+1) into a->inputs and a->targets (batch, T); false for an out-of-range
  // id.
  bool LoadRows(Activations* a, const int32_t* rows, int batch);
  // Runs a->encoded (the part's input; with the embeddings: made here from a->inputs) (B, t)
  // through the part's layers, and with the head through the final LayerNorm into a->lnf;
  // `training` applies dropout with masks from `seed` and awaits each group of parameters
  // (parameter stream).
  void Forward(const Tables<const float>& p, Activations* a, int B, int t, bool training,
               uint64_t seed);
  // The part's last output (B, T, C) in `a`.
  const float* Output(const Activations& a) const;
  // Logits of all B*T positions and the mean loss against a->targets; a->probs keeps the softmax.
  float HeadLoss(const Tables<const float>& p, Activations* a, int B);
  // Backward of the training forward in `a` (B rows): from the loss (head) or from `doutput`;
  // gradients into `g`; with the embeddings to wte and wpe, else d(input) left in dresidual_.
  void Backward(const Tables<const float>& p, const Tables<float>& g, Activations* a,
                const float* doutput);

  GptConfig config_;
  GptPart part_;
  size_t num_parameters_;
  std::vector<ParameterGroup> groups_;  // GptPartParameterGroups, in forward order.
  std::unique_ptr<ThreadPool> pool_;
  bool dropout_ = false;  // config_.dropout > 0

  // Activations, one set per micro-batch in flight (training uses the full T; NextTokenLogits
  // fewer). The whole model's LanguageModel calls use slot 0.
  std::vector<Activations> slots_;
  // Scratch of the forward and the backward, for `scratch_batch_` rows.
  int scratch_batch_ = 0;
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
