// Compute: the second step of a training iteration. A minibatch of token rows from this worker's
// part of the corpus goes forward and backward through the model; the gradients fill the flat
// buffer, clipped to a global norm if asked.
#ifndef PSRV_WORKER_COMPUTE_H_
#define PSRV_WORKER_COMPUTE_H_

#include <cstdint>
#include <random>
#include <vector>

#include "worker/data/corpus.h"
#include "worker/model/language_model.h"
#include "worker/model/tokenizer.h"

namespace psrv {

// Not thread-safe (owns scratch buffers).
class GradientComputer {
 public:
  // `seed` drives this worker's minibatch draws and dropout masks (each worker its own stream).
  GradientComputer(LanguageModel* model, const Corpus* corpus, const ByteToToken* vocabulary,
                   int batch_size, float grad_clip, uint64_t seed);

  // params, grads: (num_parameters). Returns the minibatch's mean loss (nats per token). With
  // grad_clip > 0, grads are scaled so that their global L2 norm is at most grad_clip.
  float Compute(const float* params, float* grads);

  // L2 norm of the last gradient, before clipping.
  double last_grad_norm() const { return last_grad_norm_; }

  // Tokens predicted (trained on) per Compute call.
  int tokens_per_step() const { return batch_size_ * model_->predictions_per_row(); }

 private:
  LanguageModel* const model_;
  const Corpus* const corpus_;
  const ByteToToken* const vocabulary_;
  const int batch_size_;
  const float grad_clip_;
  const uint64_t seed_;
  std::mt19937_64 rng_;
  uint64_t calls_ = 0;
  double last_grad_norm_ = 0;
  std::vector<int32_t> rows_;  // (batch, window)
};

// Each byte's token (-1 if the tokenizer has none), for sampling token rows from raw text.
ByteToToken ByteToTokenTable(const Tokenizer& tokenizer);

// Mean loss (evaluation mode) over `batches` minibatches of the validation corpus. The batches are
// drawn from a fixed seed, so successive evaluations see the same text.
float ValidationLoss(LanguageModel* model, const float* params, const Corpus& validation,
                     const ByteToToken& vocabulary, int batch_size, int batches);

}  // namespace psrv

#endif  // PSRV_WORKER_COMPUTE_H_
