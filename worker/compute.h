// Compute: the second step of a training iteration. A minibatch of windows from this worker's part
// of the corpus goes forward and backward through the model; the gradients fill the flat buffer.
#ifndef PSRV_WORKER_COMPUTE_H_
#define PSRV_WORKER_COMPUTE_H_

#include <cstdint>
#include <random>
#include <vector>

#include "worker/data/corpus.h"
#include "worker/model/mlp_model.h"

namespace psrv {

// Not thread-safe (owns scratch buffers).
class GradientComputer {
 public:
  GradientComputer(MlpModel* model, const Corpus* corpus, int batch_size, uint64_t seed)
      : model_(model),
        corpus_(corpus),
        batch_size_(batch_size),
        rng_(seed),
        windows_(static_cast<size_t>(batch_size) * (model->context() + 1)) {}

  // params, grads: (num_parameters). Returns the minibatch's mean loss (nats per byte).
  float Compute(const float* params, float* grads) {
    corpus_->SampleBatch(rng_, batch_size_, model_->context() + 1, windows_.data());
    return model_->ForwardBackward(params, windows_.data(), batch_size_, grads);
  }

  // Predicted tokens per Compute call.
  int tokens_per_step() const { return batch_size_; }

 private:
  MlpModel* const model_;
  const Corpus* const corpus_;
  const int batch_size_;
  std::mt19937_64 rng_;
  std::vector<uint8_t> windows_;  // (batch, context + 1)
};

}  // namespace psrv

#endif  // PSRV_WORKER_COMPUTE_H_
