// Compute: the second step of a training iteration. Minibatches of token rows from this worker's
// part of the corpus go forward and backward through the model (several micro-batches with gradient
// accumulation); their mean gradient fills the flat buffer. (Clipping it to a global norm is the
// step pipeline's: worker/step_pipeline.h.)
#ifndef PSRV_WORKER_COMPUTE_H_
#define PSRV_WORKER_COMPUTE_H_

#include <cstdint>
#include <random>
#include <vector>

#include "worker/data/corpus.h"
#include "worker/model/language_model.h"
#include "worker/model/tokenizer.h"

namespace psrv {

// The rows and dropout seeds of training step `step` for a worker (or pipeline group) drawing from
// stream `seed`: `micro_batches` micro-batches of `batch` rows of `window` tokens into `rows`
// ((micro_batches * batch, window)), their seeds into `seeds` (micro_batches). A function of
// (seed, step) alone. GradientComputer and a pipeline group's stages draw with it, so they train
// on the same data.
void SampleStepRows(const Corpus& corpus, const ByteToToken& vocabulary, uint64_t seed,
                    uint64_t step, int micro_batches, int batch, int window, int32_t* rows,
                    uint64_t* seeds);

// The validation batches are drawn from this seed: successive evaluations see the same text.
inline constexpr uint64_t kValidationSeed = 0x5eed;

// Not thread-safe (owns scratch buffers).
class GradientComputer {
 public:
  // `seed` drives this worker's minibatch draws and dropout masks (each worker its own stream).
  // Each Compute runs `micro_batches` micro-batches of `batch_size` rows.
  // The batches and masks of a step are a function of (seed, step) alone: the step is the whole
  // data position, so a worker resumed from a checkpoint, or one taking over a dead worker's rank,
  // trains on exactly the data the original would have.
  GradientComputer(LanguageModel* model, const Corpus* corpus, const ByteToToken* vocabulary,
                   int batch_size, uint64_t seed, int micro_batches = 1);

  // Computes training step `step` (1-based). params, grads: (num_parameters). Returns the mean
  // loss (nats per token) over the micro-batches; grads is the mean of their gradients.
  float Compute(uint64_t step, const float* params, float* grads);

  // The distinct token ids step `step`'s rows read as inputs (each window but its last token),
  // sorted: the rows of an untied input embedding the step uses. Thread-safe (its own buffers).
  std::vector<uint32_t> InputTokens(uint64_t step) const;

  // Tokens predicted (trained on) per Compute call.
  int tokens_per_step() const {
    return micro_batches_ * batch_size_ * model_->predictions_per_row();
  }

 private:
  LanguageModel* const model_;
  const Corpus* const corpus_;
  const ByteToToken* const vocabulary_;
  const int batch_size_;
  const uint64_t seed_;
  const int micro_batches_;
  std::vector<int32_t> rows_;           // (micro_batches * batch, window)
  std::vector<uint64_t> seeds_;         // (micro_batches) dropout seeds
  std::vector<float> micro_grads_;      // (num_parameters) with micro_batches > 1.
};

// The data `spec` trains on (DataSpec: text, or token ids in data.format), as worker `rank` of
// `num_workers` sees it: its part of the training split, or the whole validation split (from
// data.validation_path when a token format names one); with tokenizer "bpe", LoadBpeCorpus.
// Corpus::Load and LoadTokens' errors.
absl::StatusOr<Corpus> LoadCorpus(const JobSpec& spec, int rank, int num_workers, Split split);

// Tokenizer "bpe": the text part LoadCorpus would read, encoded with the job's BPE model. The split
// is by byte, as for text, so each worker's tokens are its own bytes'. INVALID_ARGUMENT for text
// that is not UTF-8 (naming the file and offset) or a bad model; FAILED_PRECONDITION if the part
// is shorter than 2 tokens.
absl::StatusOr<Corpus> LoadBpeCorpus(const JobSpec& spec, int rank, int num_workers, Split split);

// Each byte's token (-1 if the tokenizer has none), for sampling token rows from raw text.
ByteToToken ByteToTokenTable(const Tokenizer& tokenizer);

// Mean loss (evaluation mode) over `batches` minibatches of the validation corpus. The batches are
// drawn from a fixed seed, so successive evaluations see the same text.
float ValidationLoss(LanguageModel* model, const float* params, const Corpus& validation,
                     const ByteToToken& vocabulary, int batch_size, int batches);

}  // namespace psrv

#endif  // PSRV_WORKER_COMPUTE_H_
