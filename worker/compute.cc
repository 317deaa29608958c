#include "worker/compute.h"

#include <algorithm>
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace psrv {

GradientComputer::GradientComputer(LanguageModel* model, const Corpus* corpus,
                                   const ByteToToken* vocabulary, int batch_size, uint64_t seed,
                                   int micro_batches)
    : model_(model),
      corpus_(corpus),
      vocabulary_(vocabulary),
      batch_size_(batch_size),
      seed_(seed),
      micro_batches_(micro_batches < 1 ? 1 : micro_batches),
      rows_(static_cast<size_t>(micro_batches_) * batch_size * model->window()),
      seeds_(micro_batches_) {
  if (micro_batches_ > 1) micro_grads_.resize(model->num_parameters());
}

float GradientComputer::Compute(uint64_t step, const float* params, float* grads) {
  SampleStepRows(*corpus_, *vocabulary_, seed_, step, micro_batches_, batch_size_,
                 model_->window(), rows_.data(), seeds_.data());
  return model_->AccumulateGradients(params, rows_.data(), batch_size_, micro_batches_,
                                    seeds_.data(), grads, micro_grads_.data());
}

std::vector<uint32_t> GradientComputer::InputTokens(uint64_t step) const {
  const int window = model_->window();
  std::vector<int32_t> rows(static_cast<size_t>(micro_batches_) * batch_size_ * window);
  std::vector<uint64_t> seeds(micro_batches_);
  SampleStepRows(*corpus_, *vocabulary_, seed_, step, micro_batches_, batch_size_, window,
                 rows.data(), seeds.data());
  std::vector<uint32_t> tokens;
  tokens.reserve(rows.size());
  for (size_t i = 0; i < rows.size(); ++i) {
    if (i % window != static_cast<size_t>(window - 1) && rows[i] >= 0) {
      tokens.push_back(static_cast<uint32_t>(rows[i]));
    }
  }
  std::sort(tokens.begin(), tokens.end());
  tokens.erase(std::unique(tokens.begin(), tokens.end()), tokens.end());
  return tokens;
}

void SampleStepRows(const Corpus& corpus, const ByteToToken& vocabulary, uint64_t seed,
                    uint64_t step, int micro_batches, int batch, int window, int32_t* rows,
                    uint64_t* seeds) {
  // One stream per (seed, step): the micro-batches draw from it in turn.
  std::seed_seq step_seed{static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32),
                          static_cast<uint32_t>(step), static_cast<uint32_t>(step >> 32)};
  std::mt19937_64 rng(step_seed);
  const size_t rows_per_micro = static_cast<size_t>(batch) * window;
  for (int micro = 0; micro < micro_batches; ++micro) {
    corpus.SampleTokens(rng, batch, window, vocabulary, rows + micro * rows_per_micro);
    seeds[micro] =
        seed * 0x9e3779b97f4a7c15ULL + step * micro_batches + static_cast<uint64_t>(micro);
  }
}

absl::StatusOr<Corpus> LoadCorpus(const JobSpec& spec, int rank, int num_workers, Split split) {
  const DataSpec& data = spec.data();
  if (spec.model().tokenizer() == "bpe") return LoadBpeCorpus(spec, rank, num_workers, split);
  if (data.format().empty() || data.format() == "text") {
    return Corpus::Load(data.path(), rank, num_workers, split, data.validation_fraction());
  }
  const Corpus::TokenFormat format = data.format() == "llmc_bin" ? Corpus::TokenFormat::kLlmcBin
                                                                  : Corpus::TokenFormat::kNanoGptBin;
  const int vocab = static_cast<int>(spec.model().vocab_size());
  if (data.validation_path().empty()) {
    return Corpus::LoadTokens(data.path(), format, vocab, rank, num_workers, split,
                              data.validation_fraction());
  }
  // A file of its own for validation: all of data.path trains.
  return split == Split::kTrain
             ? Corpus::LoadTokens(data.path(), format, vocab, rank, num_workers)
             : Corpus::LoadTokens(data.validation_path(), format, vocab, 0, 1);
}

absl::StatusOr<Corpus> LoadBpeCorpus(const JobSpec& spec, int rank, int num_workers,
                                     Split split) {
  ASSIGN_OR_RETURN(const Corpus text, Corpus::Load(spec.data().path(), rank, num_workers, split,
                                                   spec.data().validation_fraction()));
  ASSIGN_OR_RETURN(const std::unique_ptr<Tokenizer> tokenizer, CreateTokenizer(spec.model()));
  absl::StatusOr<std::vector<int32_t>> ids = tokenizer->Encode(text.text());
  if (!ids.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(spec.data().path(), ", bytes from ",
                                                   text.begin_offset(), ": ",
                                                   ids.status().message()));
  }
  if (ids->size() < 2) {
    return absl::FailedPreconditionError(absl::StrCat(
        spec.data().path(), ": worker ", rank, "'s part is ", ids->size(),
        " BPE token(s); it needs at least 2 (one input token and one target)"));
  }
  // BpeModel keeps ids below 65536.
  return Corpus::FromTokens(std::vector<uint16_t>(ids->begin(), ids->end()), text.begin_offset());
}

ByteToToken ByteToTokenTable(const Tokenizer& tokenizer) {
  ByteToToken table;
  for (int b = 0; b < 256; ++b) {
    absl::StatusOr<std::vector<int32_t>> ids =
        tokenizer.Encode(std::string(1, static_cast<char>(b)));
    table[b] = ids.ok() && ids->size() == 1 ? (*ids)[0] : -1;
  }
  return table;
}

float ValidationLoss(LanguageModel* model, const float* params, const Corpus& validation,
                     const ByteToToken& vocabulary, int batch_size, int batches) {
  std::mt19937_64 rng(kValidationSeed);
  return model->MeanLoss(params, batch_size, batches, [&](int32_t* rows) {
    validation.SampleTokens(rng, batch_size, model->window(), vocabulary, rows);
  });
}

}  // namespace psrv
