// Byte, character, BPE and id tokenizers.
#include "worker/model/tokenizer.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/utf8.h"

namespace psrv {
namespace {

// `c` as it reads in an error message: printable ASCII as itself, anything else as an escape.
std::string Describe(unsigned char c) {
  if (c >= 0x20 && c < 0x7f && c != '\'') return absl::StrFormat("'%c' (0x%02x)", c, c);
  return absl::StrFormat("byte 0x%02x", c);
}

}  // namespace

absl::StatusOr<std::vector<int32_t>> ByteTokenizer::Encode(absl::string_view text) const {
  std::vector<int32_t> ids(text.size());
  for (size_t i = 0; i < text.size(); ++i) ids[i] = static_cast<unsigned char>(text[i]);
  return ids;
}

std::string ByteTokenizer::Decode(const std::vector<int32_t>& ids) const {
  std::string text;
  text.reserve(ids.size());
  for (int32_t id : ids) {
    if (id >= 0 && id < 256) text.push_back(static_cast<char>(id));
  }
  return text;
}

absl::StatusOr<CharTokenizer> CharTokenizer::Create(absl::string_view vocabulary) {
  if (vocabulary.empty()) return absl::InvalidArgumentError("empty character vocabulary");
  std::string sorted(vocabulary);
  std::sort(sorted.begin(), sorted.end(), [](char a, char b) {
    return static_cast<unsigned char>(a) < static_cast<unsigned char>(b);
  });
  const auto repeat = std::adjacent_find(sorted.begin(), sorted.end());
  if (repeat != sorted.end()) {
    return absl::InvalidArgumentError(absl::StrCat("character vocabulary repeats ",
                                                   Describe(static_cast<unsigned char>(*repeat))));
  }
  return CharTokenizer(std::move(sorted));
}

CharTokenizer CharTokenizer::FromText(absl::string_view text) {
  bool seen[256] = {};
  for (char c : text) seen[static_cast<unsigned char>(c)] = true;
  std::string vocabulary;
  for (int b = 0; b < 256; ++b) {
    if (seen[b]) vocabulary.push_back(static_cast<char>(b));
  }
  return CharTokenizer(std::move(vocabulary));
}

CharTokenizer::CharTokenizer(std::string sorted_vocabulary)
    : vocabulary_(std::move(sorted_vocabulary)) {
  std::fill(std::begin(id_of_byte_), std::end(id_of_byte_), -1);
  for (size_t i = 0; i < vocabulary_.size(); ++i) {
    id_of_byte_[static_cast<unsigned char>(vocabulary_[i])] = static_cast<int16_t>(i);
  }
}

absl::StatusOr<std::vector<int32_t>> CharTokenizer::Encode(absl::string_view text) const {
  std::vector<int32_t> ids(text.size());
  for (size_t i = 0; i < text.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(text[i]);
    if (id_of_byte_[c] < 0) {
      return absl::InvalidArgumentError(absl::StrCat(Describe(c), " at offset ", i,
                                                     " is not in the ", vocabulary_.size(),
                                                     "-character vocabulary"));
    }
    ids[i] = id_of_byte_[c];
  }
  return ids;
}

std::string CharTokenizer::Decode(const std::vector<int32_t>& ids) const {
  std::string text;
  text.reserve(ids.size());
  for (int32_t id : ids) {
    if (id >= 0 && id < vocab_size()) text.push_back(vocabulary_[id]);
  }
  return text;
}

absl::StatusOr<std::vector<int32_t>> IdTokenizer::Encode(absl::string_view text) const {
  std::vector<int32_t> ids;
  for (absl::string_view word : absl::StrSplit(text, absl::ByAnyChar(" \t\n"), absl::SkipEmpty())) {
    int32_t id = 0;
    if (!absl::SimpleAtoi(word, &id) || id < 0 || id >= vocab_size_) {
      return absl::InvalidArgumentError(absl::StrCat(
          "\"", word, "\" is not a token id below ", vocab_size_,
          " (tokenizer \"ids\" reads and writes ids as numbers)"));
    }
    ids.push_back(id);
  }
  return ids;
}

std::string IdTokenizer::Decode(const std::vector<int32_t>& ids) const {
  std::vector<int32_t> kept;
  for (int32_t id : ids) {
    if (id >= 0 && id < vocab_size_) kept.push_back(id);
  }
  return absl::StrJoin(kept, " ");
}

absl::StatusOr<std::unique_ptr<BpeTokenizer>> BpeTokenizer::Create(const std::string& model) {
  std::string error;
  std::unique_ptr<BpeModel> loaded = BpeModel::Load(model, &error);
  if (loaded == nullptr) return absl::InvalidArgumentError(error);
  return std::unique_ptr<BpeTokenizer>(new BpeTokenizer(std::move(loaded)));
}

absl::StatusOr<std::vector<int32_t>> BpeTokenizer::Encode(absl::string_view text) const {
  for (size_t i = 0; i < text.size();) {
    const size_t length = Utf8SequenceLength(text.substr(i));
    if (length == 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          Describe(static_cast<unsigned char>(text[i])), " at offset ", i,
          " is not valid UTF-8 (tokenizer \"bpe\" reads UTF-8 text)"));
    }
    i += length;
  }
  return model_->Encode(std::string_view(text.data(), text.size()));
}

std::string BpeTokenizer::Decode(const std::vector<int32_t>& ids) const {
  return model_->Decode(ids);
}

absl::StatusOr<std::unique_ptr<Tokenizer>> CreateTokenizer(const ModelSpec& spec) {
  if (spec.tokenizer() == "bpe") {
    absl::StatusOr<std::unique_ptr<BpeTokenizer>> bpe = BpeTokenizer::Create(spec.vocabulary());
    if (!bpe.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("model.vocabulary: ", bpe.status().message()));
    }
    if ((*bpe)->vocab_size() != static_cast<int>(spec.vocab_size())) {
      return absl::InvalidArgumentError(absl::StrCat(
          "model.vocabulary is a BPE model of ", (*bpe)->vocab_size(),
          " pieces but model.vocab_size is ", spec.vocab_size()));
    }
    return std::unique_ptr<Tokenizer>(std::move(*bpe));
  }
  if (spec.tokenizer() == "ids") {
    if (spec.vocab_size() < 1 || spec.vocab_size() > 65536) {
      return absl::InvalidArgumentError(absl::StrCat(
          "model.vocab_size must be 1..65536 for tokenizer \"ids\", got ", spec.vocab_size()));
    }
    return std::unique_ptr<Tokenizer>(new IdTokenizer(static_cast<int>(spec.vocab_size())));
  }
  if (spec.tokenizer().empty() || spec.tokenizer() == "byte") {
    return std::unique_ptr<Tokenizer>(new ByteTokenizer());
  }
  if (spec.tokenizer() == "char") {
    absl::StatusOr<CharTokenizer> tokenizer = CharTokenizer::Create(spec.vocabulary());
    if (!tokenizer.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("model.vocabulary: ", tokenizer.status().message()));
    }
    return std::unique_ptr<Tokenizer>(new CharTokenizer(std::move(*tokenizer)));
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown tokenizer \"", spec.tokenizer(), "\" (known: byte, char, bpe, ids)"));
}

}  // namespace psrv
