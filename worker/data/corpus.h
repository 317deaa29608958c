// A data-parallel worker's share of the training text, and uniform sampling of training windows
// from it.
#ifndef PSRV_WORKER_DATA_CORPUS_H_
#define PSRV_WORKER_DATA_CORPUS_H_

#include <cstddef>
#include <cstdint>
#include <random>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace psrv {

// The part of a text file that one data-parallel worker trains on: bytes
// [rank*N/M, (rank+1)*N/M) of an N-byte file split over M workers, so no two workers share a byte of
// training data and the parts together cover the file. (Windows never cross a part's edges.)
// Owns a copy of its bytes; immutable after construction, so const methods are thread-safe.
class Corpus {
 public:
  // Reads worker `rank`'s part of the file at `path` (only that part is read).
  // NOT_FOUND if the file cannot be opened or read, INVALID_ARGUMENT unless
  // 0 <= rank < num_workers, FAILED_PRECONDITION if the part is shorter than 2 bytes (one input byte
  // and one target).
  static absl::StatusOr<Corpus> Load(const std::string& path, int rank, int num_workers);

  // All of `text` as one part at offset 0; for tests.
  static Corpus FromText(std::string text);

  size_t size() const { return text_.size(); }
  const std::string& text() const { return text_; }
  // Offset of the part's first byte in the file.
  uint64_t begin_offset() const { return begin_offset_; }

  // OK if SampleBatch can draw windows of `window` bytes: INVALID_ARGUMENT if window < 1,
  // FAILED_PRECONDITION if window > size().
  absl::Status CheckWindow(int window) const;

  // Fills `windows` (batch, window) with copies of text()[p, p + window), each p drawn uniformly
  // from [0, size() - window] with `rng`, so the same rng state gives the same batch. Requires
  // CheckWindow(window).ok() and batch >= 0.
  void SampleBatch(std::mt19937_64& rng, int batch, int window, uint8_t* windows) const;

 private:
  Corpus(std::string text, uint64_t begin_offset)
      : text_(std::move(text)), begin_offset_(begin_offset) {}

  std::string text_;       // The part's bytes.
  uint64_t begin_offset_;  // Where text_ starts in the file.
};

}  // namespace psrv

#endif  // PSRV_WORKER_DATA_CORPUS_H_
