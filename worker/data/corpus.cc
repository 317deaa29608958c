// Loading one worker's part of a text file and sampling training windows from it.
#include "worker/data/corpus.h"

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <system_error>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace psrv {
namespace {

// floor(n * rank / num_workers) without overflow: with n = q * num_workers + s it is
// q * rank + floor(s * rank / num_workers), and s * rank < num_workers^2 fits in 64 bits.
uint64_t PartBegin(uint64_t n, int rank, int num_workers) {
  const uint64_t m = num_workers, q = n / m, s = n % m;
  return q * rank + s * rank / m;
}

// The checks Load and LoadTokens share on their arguments and the file: the file's size in bytes.
// Validation is read whole: rank 0 of 1.
absl::StatusOr<uint64_t> CheckArgumentsAndFile(const std::string& path, Split split,
                                               double validation_fraction, int* rank,
                                               int* num_workers) {
  if (!(validation_fraction >= 0.0 && validation_fraction < 1.0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("validation fraction ", validation_fraction, ", want [0, 1)"));
  }
  if (split == Split::kValidation) *rank = 0, *num_workers = 1;
  if (*num_workers < 1 || *rank < 0 || *rank >= *num_workers) {
    return absl::InvalidArgumentError(absl::StrCat("worker rank ", *rank, " of ", *num_workers,
                                                   ": want 0 <= rank < num_workers"));
  }
  // Checked first: a directory opens as a stream but has no meaningful size.
  std::error_code error;
  if (!std::filesystem::is_regular_file(path, error)) {
    return absl::NotFoundError(absl::StrCat(
        path, " is not a readable file", error ? absl::StrCat(": ", error.message()) : ""));
  }
  const uint64_t n = std::filesystem::file_size(path, error);
  if (error) return absl::NotFoundError(absl::StrCat("cannot stat ", path, ": ", error.message()));
  return n;
}

// Worker `rank`'s part [begin, end) of `split` of `n` units (bytes or tokens) of `path`;
// FAILED_PRECONDITION if it is shorter than 2 units.
absl::StatusOr<std::pair<uint64_t, uint64_t>> PartOf(const std::string& path, uint64_t n,
                                                     const char* units, Split split,
                                                     double validation_fraction, int rank,
                                                     int num_workers) {
  const uint64_t train = static_cast<uint64_t>(static_cast<double>(n) * (1.0 - validation_fraction));
  const uint64_t region_begin = split == Split::kTrain ? 0 : train;
  const uint64_t region = split == Split::kTrain ? train : n - train;
  const uint64_t begin = region_begin + PartBegin(region, rank, num_workers);
  const uint64_t end = region_begin + PartBegin(region, rank + 1, num_workers);
  if (end - begin < 2) {
    return absl::FailedPreconditionError(absl::StrCat(
        path, " has ", n, " ", units, "; ",
        split == Split::kTrain ? absl::StrCat("worker ", rank, " of ", num_workers)
                               : std::string("the validation split"),
        " would get ", end - begin, ", need at least 2"));
  }
  return std::make_pair(begin, end);
}

}  // namespace

absl::StatusOr<Corpus> Corpus::Load(const std::string& path, int rank, int num_workers,
                                     Split split, double validation_fraction) {
  ASSIGN_OR_RETURN(const uint64_t n, CheckArgumentsAndFile(path, split, validation_fraction,
                                                           &rank, &num_workers));
  ASSIGN_OR_RETURN(const auto part,
                   PartOf(path, n, "bytes", split, validation_fraction, rank, num_workers));
  const auto [begin, end] = part;
  std::ifstream file(path, std::ios::binary);
  if (!file) {
    return absl::NotFoundError(absl::StrCat("cannot open ", path, ": ", std::strerror(errno)));
  }
  std::string text(end - begin, '\0');
  file.seekg(static_cast<std::streamoff>(begin));
  file.read(text.data(), static_cast<std::streamsize>(text.size()));
  if (!file || file.gcount() != static_cast<std::streamsize>(text.size())) {
    return absl::NotFoundError(
        absl::StrCat("cannot read bytes [", begin, ", ", end, ") of ", path));
  }
  return Corpus(std::move(text), begin);
}

Corpus Corpus::FromText(std::string text) { return Corpus(std::move(text), 0); }

Corpus Corpus::FromTokens(std::vector<uint16_t> tokens, uint64_t begin_offset) {
  Corpus corpus("", begin_offset);
  corpus.tokens_ = std::move(tokens);
  corpus.is_tokens_ = true;
  return corpus;
}

absl::StatusOr<Corpus> Corpus::LoadTokens(const std::string& path, TokenFormat format,
                                           int vocab_size, int rank, int num_workers, Split split,
                                           double validation_fraction) {
  ASSIGN_OR_RETURN(const uint64_t bytes, CheckArgumentsAndFile(path, split, validation_fraction,
                                                               &rank, &num_workers));
  std::ifstream file(path, std::ios::binary);
  if (!file) {
    return absl::NotFoundError(absl::StrCat("cannot open ", path, ": ", std::strerror(errno)));
  }
  uint64_t header_bytes = 0, n = 0;
  if (format == TokenFormat::kLlmcBin) {
    constexpr int32_t kMagic = 20240520;
    int32_t header[256] = {};
    header_bytes = sizeof(header);
    if (bytes < header_bytes ||
        !file.read(reinterpret_cast<char*>(header), static_cast<std::streamsize>(header_bytes))) {
      return absl::InvalidArgumentError(absl::StrCat(
          path, ": ", bytes, " bytes, too short for an llm.c header (", header_bytes, " bytes)"));
    }
    if (header[0] != kMagic || header[1] != 1) {
      return absl::InvalidArgumentError(absl::StrCat(
          path, ": not an llm.c token shard (header magic ", header[0], " version ", header[1],
          ", want ", kMagic, " version 1)"));
    }
    if (header[2] < 0 ||
        bytes != header_bytes + static_cast<uint64_t>(header[2]) * sizeof(uint16_t)) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": the header says ", header[2], " tokens (", header_bytes,
                       " + 2 x ", header[2], " bytes) but the file has ", bytes, " bytes"));
    }
    n = static_cast<uint64_t>(header[2]);
  } else {
    if (bytes % sizeof(uint16_t) != 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          path, ": ", bytes, " bytes is not a whole number of uint16 token ids"));
    }
    n = bytes / sizeof(uint16_t);
  }
  ASSIGN_OR_RETURN(const auto part,
                   PartOf(path, n, "tokens", split, validation_fraction, rank, num_workers));
  const auto [begin, end] = part;
  std::vector<uint16_t> tokens(end - begin);
  file.seekg(static_cast<std::streamoff>(header_bytes + begin * sizeof(uint16_t)));
  file.read(reinterpret_cast<char*>(tokens.data()),
            static_cast<std::streamsize>(tokens.size() * sizeof(uint16_t)));
  if (!file) {
    return absl::NotFoundError(absl::StrCat("cannot read tokens [", begin, ", ", end, ") of ", path));
  }
  for (size_t i = 0; i < tokens.size(); ++i) {  // Little-endian on disk; this host is too.
    if (tokens[i] >= vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat(
          path, ": token ", tokens[i], " at position ", begin + i,
          " is not below the vocabulary size ", vocab_size, " (model.vocab_size)"));
    }
  }
  Corpus corpus("", begin);
  corpus.tokens_ = std::move(tokens);
  corpus.is_tokens_ = true;
  return corpus;
}

absl::Status Corpus::CheckWindow(int window) const {
  const char* unit = is_tokens_ ? " tokens" : " bytes";
  if (window < 1) {
    return absl::InvalidArgumentError(absl::StrCat("window of ", window, unit, ", want >= 1"));
  }
  if (static_cast<size_t>(window) > size()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "window of ", window, unit, " does not fit in training data of ", size(), unit));
  }
  return absl::OkStatus();
}

void Corpus::SampleBatch(std::mt19937_64& rng, int batch, int window, uint8_t* windows) const {
  // Starts in [0, size - window]. Modulo bias is below (size / 2^64), far under sampling noise, and
  // unlike std::uniform_int_distribution the result is the same under every standard library.
  const uint64_t starts = text_.size() - window + 1;
  for (int b = 0; b < batch; ++b) {
    const uint64_t start = rng() % starts;
    std::memcpy(windows + static_cast<size_t>(b) * window, text_.data() + start, window);
  }
}

absl::Status Corpus::CheckVocabulary(const ByteToToken& vocabulary) const {
  if (is_tokens_) return absl::OkStatus();  // Ids checked against the vocabulary when loaded.
  for (size_t i = 0; i < text_.size(); ++i) {
    const unsigned char c = text_[i];
    if (vocabulary[c] < 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "byte 0x", absl::Hex(c, absl::kZeroPad2), " at offset ", begin_offset_ + i,
          " of the data is not in the model's vocabulary"));
    }
  }
  return absl::OkStatus();
}

void Corpus::SampleTokens(std::mt19937_64& rng, int batch, int window,
                          const ByteToToken& vocabulary, int32_t* rows) const {
  const uint64_t starts = size() - window + 1;
  for (int b = 0; b < batch; ++b) {
    const uint64_t start = rng() % starts;
    if (is_tokens_) {
      int32_t* out = rows + static_cast<size_t>(b) * window;
      for (int i = 0; i < window; ++i) out[i] = tokens_[start + i];
      continue;
    }
    const unsigned char* in = reinterpret_cast<const unsigned char*>(text_.data()) + start;
    int32_t* out = rows + static_cast<size_t>(b) * window;
    for (int i = 0; i < window; ++i) out[i] = vocabulary[in[i]];
  }
}

}  // namespace psrv
