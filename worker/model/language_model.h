// The interface every language model of the worker implements: the CPU MLP and GPT
// (worker/model/), the CUDA GPT (worker/cuda/), the synthetic model. Built from a job's ModelSpec
// by model_factory.h; text is sampled from one by sampling.h.
#ifndef PSRV_WORKER_MODEL_LANGUAGE_MODEL_H_
#define PSRV_WORKER_MODEL_LANGUAGE_MODEL_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/model/parameter_stream.h"

namespace psrv {

// A language model over a flat fp32 parameter buffer (its tables concatenated in layout order, each
// row-major). Token ids are int32 in [0, vocab_size()).
//
// Implementations own only scratch buffers, which grow to the largest batch seen and are then
// reused: no allocation per call after warm-up. Thread-compatible: one instance per thread; the
// parameters may be shared read-only between instances.
class LanguageModel {
 public:
  virtual ~LanguageModel() = default;

  // Tokens per training row: the model's inputs followed by its last target (GPT: T+1, MLP: k+1).
  virtual int window() const = 0;
  // Tokens predicted (and trained) per row (GPT: T, MLP: 1).
  virtual int predictions_per_row() const = 0;
  virtual int vocab_size() const = 0;
  // Longest input NextTokenLogits uses (GPT: T, MLP: k).
  virtual int max_context() const = 0;
  virtual size_t num_parameters() const = 0;
  // Bytes of activations a training step of `batch` rows keeps (one micro-batch); 0: unknown
  // (small next to the parameters).
  virtual size_t ActivationBytes(int batch) const { return 0; }

  // Training step. `params`: (num_parameters). `rows`: (batch, window()) token ids. Writes
  // d(loss)/d(params) into `grads` (num_parameters; overwritten, not accumulated) and returns the
  // mean loss over the batch's predictions (nats per token). Training mode: `seed` alone decides
  // the dropout masks, so the same arguments give the same loss and gradients. batch >= 1. A token
  // id outside [0, vocab_size()) gives a NaN loss and zero gradients.
  virtual float ForwardBackward(const float* params, const int32_t* rows, int batch, uint64_t seed,
                                float* grads) = 0;

  // Gradient accumulation over `micro_batches` (>= 1) batches of `batch` rows, one after another
  // in `rows` (micro_batches * batch, window()), micro-batch m with dropout seed seeds[m]: writes
  // the mean of their ForwardBackward gradients into `grads` (overwritten) and returns the mean of
  // their losses. `scratch` (num_parameters) is working memory, needed when micro_batches > 1.
  // This default runs ForwardBackward per micro-batch and sums on the host (g0 + g1 + ..., then
  // times 1/micro_batches; with a parameter stream, the last micro-batch's ranges are summed as
  // they are reported, and only then passed on); the CUDA model keeps the sum on the GPU, with
  // the same result.
  virtual float AccumulateGradients(const float* params, const int32_t* rows, int batch,
                                    int micro_batches, const uint64_t* seeds, float* grads,
                                    float* scratch);

  // Mean of Loss over `batches` (>= 1) batches of `batch` rows, each written by `next_rows` into
  // its argument ((batch, window())) just before it is used: a validation loss. This default calls
  // Loss per batch; the CUDA model uploads the parameters once for all of them.
  virtual float MeanLoss(const float* params, int batch, int batches,
                         const std::function<void(int32_t* rows)>& next_rows);

  // Mean loss of `rows` (batch, window()) in evaluation mode (no dropout), forward only. Same loss
  // as ForwardBackward when dropout is 0. NaN for an out-of-range token id.
  virtual float Loss(const float* params, const int32_t* rows, int batch) = 0;

  // Writes the logits (vocab_size) of the token after `tokens` (length >= 1; only the last
  // max_context() are used), in evaluation mode.
  virtual void NextTokenLogits(const float* params, const int32_t* tokens, int length,
                               float* logits) = 0;

  // Overlap with the parameter servers during ForwardBackward and AccumulateGradients (not owned;
  // null: every parameter is in place before the call, and the gradient is handed over when it
  // returns). Models that support it (the GPTs, the synthetic model) await each group of
  // parameters just before forward reads it and report each group of gradients as soon as it is
  // final; the others await everything first and report everything at the end. Loss, MeanLoss
  // and NextTokenLogits never use it: their parameters must all be in place.
  void set_parameter_stream(ParameterStream* stream) { stream_ = stream; }
  // Whether ForwardBackward itself awaits and reports groups (else AccumulateGradients awaits the
  // whole buffer first and reports it whole at the end).
  virtual bool streams_parameters() const { return false; }
  ParameterStream* parameter_stream() const { return stream_; }

 protected:
  // For implementations: no-ops without a stream.
  void AwaitParameters(const ParameterGroup& group) {
    if (stream_ != nullptr) {
      for (const FlatRange& range : group) stream_->AwaitParameters(range);
    }
  }
  void GradientsReady(const ParameterGroup& group) {
    if (stream_ != nullptr) {
      for (const FlatRange& range : group) stream_->GradientsReady(range);
    }
  }

 private:
  ParameterStream* stream_ = nullptr;
};

}  // namespace psrv

#endif  // PSRV_WORKER_MODEL_LANGUAGE_MODEL_H_
