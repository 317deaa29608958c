// Tokenizers turning text into the token ids of a LanguageModel and back: bytes as they are,
// characters (bytes) of a fixed vocabulary, BPE subwords, or ids another tool made.
#ifndef PSRV_WORKER_MODEL_TOKENIZER_H_
#define PSRV_WORKER_MODEL_TOKENIZER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/bpe.h"
#include "proto/job.pb.h"

namespace psrv {

// Maps text to token ids in [0, vocab_size()) and back. Immutable once built: thread-safe.
class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  virtual int vocab_size() const = 0;
  // INVALID_ARGUMENT if `text` holds something outside the vocabulary.
  virtual absl::StatusOr<std::vector<int32_t>> Encode(absl::string_view text) const = 0;
  // The text of `ids`; ids outside [0, vocab_size()) are skipped.
  virtual std::string Decode(const std::vector<int32_t>& ids) const = 0;
};

// Every byte is a token: id = byte value, vocab_size 256. Encode never fails.
class ByteTokenizer : public Tokenizer {
 public:
  int vocab_size() const override { return 256; }
  absl::StatusOr<std::vector<int32_t>> Encode(absl::string_view text) const override;
  std::string Decode(const std::vector<int32_t>& ids) const override;
};

// A fixed set of distinct bytes ("characters"), sorted by byte value; a byte's id is its rank. As
// in nanoGPT's shakespeare_char, whose 65 characters make ids 0..64 ('\n' is 0).
class CharTokenizer : public Tokenizer {
 public:
  // `vocabulary`: the distinct bytes, in any order. INVALID_ARGUMENT if it is empty or repeats one.
  static absl::StatusOr<CharTokenizer> Create(absl::string_view vocabulary);
  // The bytes occurring in `text` (the whole corpus: every worker must build the same vocabulary).
  // Empty text gives an empty vocabulary, which encodes only empty text.
  static CharTokenizer FromText(absl::string_view text);

  // The vocabulary's bytes in id order (sorted by unsigned byte value).
  const std::string& vocabulary() const { return vocabulary_; }

  int vocab_size() const override { return static_cast<int>(vocabulary_.size()); }
  // INVALID_ARGUMENT naming the first byte outside the vocabulary and its offset in `text`.
  absl::StatusOr<std::vector<int32_t>> Encode(absl::string_view text) const override;
  std::string Decode(const std::vector<int32_t>& ids) const override;

 private:
  explicit CharTokenizer(std::string sorted_vocabulary);

  std::string vocabulary_;   // (V) distinct bytes, sorted
  int16_t id_of_byte_[256];  // Each byte's id, or -1 when it is not in the vocabulary.
};

// Token ids made by another tool (tokenizer "ids": data in nanoGPT or llm.c .bin files), whose
// text this process does not know: ids are written as decimal numbers separated by spaces, and
// read back the same way.
class IdTokenizer : public Tokenizer {
 public:
  explicit IdTokenizer(int vocab_size) : vocab_size_(vocab_size) {}
  int vocab_size() const override { return vocab_size_; }
  // INVALID_ARGUMENT for a word that is not an id below vocab_size().
  absl::StatusOr<std::vector<int32_t>> Encode(absl::string_view text) const override;
  std::string Decode(const std::vector<int32_t>& ids) const override;

 private:
  const int vocab_size_;
};

// Subwords of a SentencePiece BPE model (tokenizer "bpe", common/bpe.h): lossless for UTF-8 text.
class BpeTokenizer : public Tokenizer {
 public:
  // INVALID_ARGUMENT if `model` is not a usable SentencePiece model (BpeModel::Load).
  static absl::StatusOr<std::unique_ptr<BpeTokenizer>> Create(const std::string& model);

  int vocab_size() const override { return model_->vocab_size(); }
  // INVALID_ARGUMENT naming the offset of the first byte that is not valid UTF-8.
  absl::StatusOr<std::vector<int32_t>> Encode(absl::string_view text) const override;
  std::string Decode(const std::vector<int32_t>& ids) const override;

 private:
  explicit BpeTokenizer(std::unique_ptr<BpeModel> model) : model_(std::move(model)) {}
  std::unique_ptr<BpeModel> model_;
};

// The tokenizer `spec` names: tokenizer "byte" (or unset) is a ByteTokenizer; "char" a
// CharTokenizer over spec.vocabulary(); "bpe" a BpeTokenizer of the model in spec.vocabulary(),
// which must have spec.vocab_size() pieces; "ids" an IdTokenizer of spec.vocab_size() ids.
// INVALID_ARGUMENT for another name, a bad vocabulary or vocabulary size.
absl::StatusOr<std::unique_ptr<Tokenizer>> CreateTokenizer(const ModelSpec& spec);

}  // namespace psrv

#endif  // PSRV_WORKER_MODEL_TOKENIZER_H_
