// A data-parallel worker's share of the training text, and uniform sampling of training windows
// from it.
#ifndef PSRV_WORKER_DATA_CORPUS_H_
#define PSRV_WORKER_DATA_CORPUS_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace psrv {

// Which region of the file: the first (1 - validation_fraction) of its N bytes are the training
// split, the rest the validation split.
enum class Split { kTrain, kValidation };

// Maps each byte value to a token id (-1: not in the vocabulary).
using ByteToToken = std::array<int32_t, 256>;

// The part of a text file that one data-parallel worker trains on: bytes
// [rank*P/M, (rank+1)*P/M) of the P-byte training split of the file, over M workers, so no two
// workers share a byte of training data and the parts together cover the split. (Windows never
// cross a part's edges.) Or the whole validation split.
// Owns a copy of its bytes; immutable after construction, so const methods are thread-safe.
class Corpus {
 public:
  // Reads worker `rank`'s part of `split` of the file at `path` (only that part is read); the
  // validation split is read whole (rank 0 of 1). validation_fraction in [0, 1).
  // NOT_FOUND if the file cannot be opened or read, INVALID_ARGUMENT unless
  // 0 <= rank < num_workers, FAILED_PRECONDITION if the part is shorter than 2 bytes (one input byte
  // and one target).
  static absl::StatusOr<Corpus> Load(const std::string& path, int rank, int num_workers,
                                     Split split = Split::kTrain,
                                     double validation_fraction = 0.0);

  // Token ids another tool made (DataSpec.format), split as Load splits bytes but by token
  // position: worker `rank`'s part of `split`. kNanoGptBin: the file is raw little-endian uint16
  // ids. kLlmcBin: an llm.c shard, a header of 256 little-endian int32 (magic 20240520, version 1,
  // token count) and then the uint16 ids. Each id must be below `vocab_size`. NOT_FOUND for an
  // unreadable file; INVALID_ARGUMENT naming the file for a header, size or id that does not fit;
  // FAILED_PRECONDITION if the part is shorter than 2 tokens.
  enum class TokenFormat { kNanoGptBin, kLlmcBin };
  static absl::StatusOr<Corpus> LoadTokens(const std::string& path, TokenFormat format,
                                           int vocab_size, int rank, int num_workers,
                                           Split split = Split::kTrain,
                                           double validation_fraction = 0.0);

  // All of `text` as one part at offset 0; for tests.
  static Corpus FromText(std::string text);
  // These token ids as one part starting at `begin_offset` of its file (tokens a tokenizer made
  // from a text part, or a test's).
  static Corpus FromTokens(std::vector<uint16_t> tokens, uint64_t begin_offset = 0);

  // Token ids (LoadTokens) rather than text: SampleTokens copies them, CheckVocabulary has
  // nothing to check.
  bool is_tokens() const { return is_tokens_; }

  // Bytes of text, or tokens.
  size_t size() const { return is_tokens_ ? tokens_.size() : text_.size(); }
  const std::string& text() const { return text_; }
  // Offset of the part's first byte in the file.
  uint64_t begin_offset() const { return begin_offset_; }

  // OK if SampleBatch can draw windows of `window` bytes: INVALID_ARGUMENT if window < 1,
  // FAILED_PRECONDITION if window > size().
  absl::Status CheckWindow(int window) const;

  // Fills `windows` (batch, window) with copies of text()[p, p + window), each p drawn uniformly
  // from [0, size() - window] with `rng`, so the same rng state gives the same batch. Requires
  // CheckWindow(window).ok() and batch >= 0.
  // Text only (not is_tokens()).
  void SampleBatch(std::mt19937_64& rng, int batch, int window, uint8_t* windows) const;

  // INVALID_ARGUMENT naming the first byte (and its offset in the file) that `vocabulary` has no
  // token for.
  absl::Status CheckVocabulary(const ByteToToken& vocabulary) const;

  // SampleBatch, with every byte mapped to its token: rows (batch, window). Same rng draws.
  void SampleTokens(std::mt19937_64& rng, int batch, int window, const ByteToToken& vocabulary,
                    int32_t* rows) const;

 private:
  Corpus(std::string text, uint64_t begin_offset)
      : text_(std::move(text)), begin_offset_(begin_offset) {}

  std::string text_;       // The part's bytes (text).
  std::vector<uint16_t> tokens_;  // The part's token ids (is_tokens_).
  bool is_tokens_ = false;
  uint64_t begin_offset_;  // Where text_ (or tokens_, in tokens) starts in the file.
};

}  // namespace psrv

#endif  // PSRV_WORKER_DATA_CORPUS_H_
