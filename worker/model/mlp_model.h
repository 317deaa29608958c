// The "mlp" model kind: an MLP language model (Bengio et al. 2003) on the CPU whose parameters
// live in one flat float buffer laid out as MlpTables() lists.
#ifndef PSRV_WORKER_MODEL_MLP_MODEL_H_
#define PSRV_WORKER_MODEL_MLP_MODEL_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/model_layout.h"
#include "proto/job.pb.h"
#include "proto/types.pb.h"
#include "worker/model/language_model.h"

namespace psrv {

// The tables of the "mlp" kind over `vocab_size` tokens, in the order of the flat buffer
// (k = context, E = embedding_dim, H = hidden_dim, V = vocab_size):
//   "embedding"     (V, E)      N(0, 1)
//   "hidden.weight" (k*E, H)    N(0, 1/(k*E))
//   "hidden.bias"   (H)         zeros
//   "output.weight" (H, V)      N(0, 0.01/H)
//   "output.bias"   (V)         zeros

// Forward, backward and sampling of the "mlp" model kind. With k = context, E = embedding_dim,
// H = hidden_dim, V = vocab size and x the concatenated embeddings of the k previous tokens:
//   h = tanh(x @ Wh + bh)   (B, H)
//   logits = h @ Wo + bo    (B, V)
//   loss = mean over the batch of -log softmax(logits)[target]   (nats per token)
// The flat parameter buffer (num_parameters() floats) is the concatenation, each row-major, of
//   embedding (V, E), hidden.weight (k*E, H), hidden.bias (H), output.weight (H, V),
//   output.bias (V),
// i.e. the tables of MlpTables() in order. A training row is k+1 tokens: k inputs, then the target.
// It has no dropout (ForwardBackward ignores its seed). NextTokenLogits left-pads an input shorter
// than k with token 0.
//
// The byte API (uint8_t windows, Generate) predates LanguageModel and treats bytes as token ids.
//
// Owns only scratch activations, which grow to the largest batch seen and are then reused, so
// ForwardBackward and Loss allocate nothing once warmed up. Thread-compatible: one instance per
// thread (the parameters may be shared read-only between instances). The matrix products run on
// OpenBLAS, whose own thread count is set by OPENBLAS_NUM_THREADS.
class MlpModel : public LanguageModel {
 public:
  // INVALID_ARGUMENT if spec.kind() != "mlp" or a size is outside its documented range
  // (context 1..64, embedding_dim 1..1024, hidden_dim 1..16384, vocab_size 1..2^24).
  static absl::StatusOr<MlpModel> Create(const ModelSpec& spec, int vocab_size);
  // Byte-level: vocab_size 256.
  static absl::StatusOr<MlpModel> Create(const ModelSpec& spec);

  int context() const { return context_; }

  int window() const override { return context_ + 1; }
  int predictions_per_row() const override { return 1; }
  int vocab_size() const override { return vocab_; }
  int max_context() const override { return context_; }
  size_t num_parameters() const override { return num_parameters_; }

  // LanguageModel: rows (batch, k+1) of token ids; `seed` is unused (no dropout).
  float ForwardBackward(const float* params, const int32_t* rows, int batch, uint64_t seed,
                        float* grads) override;
  float Loss(const float* params, const int32_t* rows, int batch) override;
  void NextTokenLogits(const float* params, const int32_t* tokens, int length,
                       float* logits) override;

  // `params`: (num_parameters). `windows`: (batch, context+1) bytes, the first `context` of each row
  // are the inputs and the last one the target. Writes d(loss)/d(params) into `grads`
  // (num_parameters, overwritten, not accumulated) and returns the mean loss. batch >= 1. A byte
  // >= vocab_size() gives a NaN loss and zero gradients.
  float ForwardBackward(const float* params, const uint8_t* windows, int batch, float* grads);

  // Mean loss of `windows` (batch, context+1), forward only. batch >= 1. NaN for a byte
  // >= vocab_size().
  float Loss(const float* params, const uint8_t* windows, int batch);

  // Samples `length` bytes one at a time after `prompt` (left-padded with '\n' to the context; only
  // its last `context` bytes matter) from softmax(logits / temperature); temperature <= 0 picks the
  // most likely byte. Returns only the sampled bytes. The same (params, prompt, length, temperature,
  // seed) give the same text. For byte-level models (vocab_size 256); with a smaller vocabulary the
  // prompt's bytes must be below it.
  std::string Generate(const float* params, const std::string& prompt, int length,
                       float temperature, uint64_t seed);

 private:
  // Offsets of each table in the flat buffer.
  struct Layout {
    size_t embedding;       // (V, E)
    size_t hidden_weight;   // (k*E, H)
    size_t hidden_bias;     // (H)
    size_t output_weight;   // (H, V)
    size_t output_bias;     // (V)
  };

  MlpModel(int context, int embedding_dim, int hidden_dim, int vocab, const Layout& layout,
           size_t num_parameters);

  // Grows the scratch buffers to hold `batch` rows.
  void Reserve(int batch);
  // Whether every token of `windows` (batch, k+1) is below the vocabulary size.
  template <typename Token>
  bool ValidTokens(const Token* windows, int batch) const;
  // Fills x_, h_ and logits_ for the first `context_` tokens of each window (stride
  // `window_stride`).
  template <typename Token>
  void ComputeLogits(const float* params, const Token* windows, int window_stride, int batch);
  // Turns logits_ into probabilities in place and returns the mean loss against the targets.
  template <typename Token>
  float SoftmaxLoss(const Token* windows, int batch);
  template <typename Token>
  float LossOf(const float* params, const Token* windows, int batch);
  template <typename Token>
  float ForwardBackwardOf(const float* params, const Token* windows, int batch, float* grads);

  int context_;        // k
  int embedding_dim_;  // E
  int hidden_dim_;     // H
  int vocab_;          // V
  int input_dim_;      // D = k*E
  Layout layout_;
  size_t num_parameters_;

  int reserved_batch_ = 0;    // Rows the scratch buffers hold.
  std::vector<float> x_;      // (B, D) concatenated context embeddings
  std::vector<float> h_;      // (B, H) tanh activations
  std::vector<float> logits_; // (B, V) logits, then probabilities, then d(loss)/d(logits)
  std::vector<float> dh_;     // (B, H) d(loss)/d(h), then d(loss)/d(pre-activation)
  std::vector<float> dx_;     // (B, D) d(loss)/d(x)
};

}  // namespace psrv

#endif  // PSRV_WORKER_MODEL_MLP_MODEL_H_
