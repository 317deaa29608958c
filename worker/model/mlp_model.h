// The worker's CPU model: a byte-level MLP language model (Bengio et al. 2003) whose parameters live in
// one flat float buffer laid out as common/model_layout.h describes.
#ifndef PSRV_WORKER_MODEL_MLP_MODEL_H_
#define PSRV_WORKER_MODEL_MLP_MODEL_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "proto/job.pb.h"

namespace psrv {

// Forward, backward and sampling of the "mlp" model kind. With k = context, E = embedding_dim,
// H = hidden_dim, V = 256 and x the concatenated embeddings of the k previous bytes:
//   h = tanh(x @ Wh + bh)   (B, H)
//   logits = h @ Wo + bo    (B, V)
//   loss = mean over the batch of -log softmax(logits)[target]   (nats per byte)
// The flat parameter buffer (num_parameters() floats) is the concatenation, each row-major, of
//   embedding (V, E), hidden.weight (k*E, H), hidden.bias (H), output.weight (H, V), output.bias (V),
// i.e. the tables of ModelTables() in order.
//
// Owns only scratch activations, which grow to the largest batch seen and are then reused, so
// ForwardBackward and Loss allocate nothing once warmed up. Thread-compatible: one instance per
// thread (the parameters may be shared read-only between instances). The matrix products run on
// OpenBLAS, whose own thread count is set by OPENBLAS_NUM_THREADS.
class MlpModel {
 public:
  // INVALID_ARGUMENT if spec.kind() != "mlp" or a size is outside its documented range
  // (context 1..64, embedding_dim 1..1024, hidden_dim 1..16384).
  static absl::StatusOr<MlpModel> Create(const ModelSpec& spec);

  int context() const { return context_; }
  size_t num_parameters() const { return num_parameters_; }

  // `params`: (num_parameters). `windows`: (batch, context+1) bytes, the first `context` of each row
  // are the inputs and the last one the target. Writes d(loss)/d(params) into `grads`
  // (num_parameters, overwritten, not accumulated) and returns the mean loss. batch >= 1.
  float ForwardBackward(const float* params, const uint8_t* windows, int batch, float* grads);

  // Mean loss of `windows` (batch, context+1), forward only. batch >= 1.
  float Loss(const float* params, const uint8_t* windows, int batch);

  // Samples `length` bytes one at a time after `prompt` (left-padded with '\n' to the context; only
  // its last `context` bytes matter) from softmax(logits / temperature); temperature <= 0 picks the
  // most likely byte. Returns only the sampled bytes. The same (params, prompt, length, temperature,
  // seed) give the same text.
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

  MlpModel(int context, int embedding_dim, int hidden_dim, const Layout& layout,
           size_t num_parameters);

  // Grows the scratch buffers to hold `batch` rows.
  void Reserve(int batch);
  // Fills x_, h_ and logits_ for the first `context_` bytes of each window (stride `window_stride`).
  void ComputeLogits(const float* params, const uint8_t* windows, int window_stride, int batch);
  // Turns logits_ into probabilities in place and returns the mean loss against the targets.
  float SoftmaxLoss(const uint8_t* windows, int batch);

  int context_;        // k
  int embedding_dim_;  // E
  int hidden_dim_;     // H
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
