// The SentencePiece side of common/bpe: a shared object with a C interface, loaded by bpe.cc with
// dlopen(RTLD_LOCAL | RTLD_DEEPBIND). Debian's libsentencepiece carries its own copy of
// protobuf-lite (an older version) and exports its symbols: linked into a process that also links
// libprotobuf, either copy's calls land in the other's code and the process crashes while it
// starts. Loaded this way, SentencePiece's calls bind to its own copy, and nothing of it enters the
// process's global symbol scope.
//
// No Abseil header here either: SentencePiece's headers declare their own absl::string_view.
// Every buffer handed out is malloc'd here and released with psrv_bpe_free.
#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <unordered_map>
#include <vector>

namespace {

// The lines of the first `limit` bytes of a file, without their '\n'.
class FileLines : public sentencepiece::SentenceIterator {
 public:
  FileLines(std::ifstream* in, uint64_t limit) : in_(in), left_(limit) { Next(); }
  bool done() const override { return done_; }
  void Next() override {
    if (left_ == 0 || !std::getline(*in_, line_)) {
      done_ = true;
      return;
    }
    const uint64_t taken = line_.size() + 1;  // With its '\n'.
    if (taken > left_) line_.resize(left_);
    left_ -= std::min(taken, left_);
  }
  const std::string& value() const override { return line_; }
  sentencepiece::util::Status status() const override { return {}; }

 private:
  std::ifstream* in_;
  uint64_t left_;
  std::string line_;
  bool done_ = false;
};

char* Copy(const std::string& s, size_t* size) {
  char* out = static_cast<char*>(std::malloc(s.size() + 1));
  if (out == nullptr) return nullptr;
  std::memcpy(out, s.data(), s.size());
  out[s.size()] = '\0';
  if (size != nullptr) *size = s.size();
  return out;
}

std::string ByteName(int b) {
  char name[8];
  std::snprintf(name, sizeof(name), "<0x%02X>", b);
  return name;
}

}  // namespace

extern "C" {

__attribute__((visibility("default"))) void psrv_bpe_free(void* p) { std::free(p); }

// 0 and *model (size *model_size) on success; else 1 and *error.
__attribute__((visibility("default"))) int psrv_bpe_train(const char* path, uint64_t byte_limit,
                                                          int vocab_size, int max_sentences,
                                                          char** model, size_t* model_size,
                                                          char** error) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    *error = Copy(std::string("cannot read ") + path, nullptr);
    return 1;
  }
  FileLines lines(&in, byte_limit);
  const std::unordered_map<std::string, std::string> options = {
      {"model_type", "bpe"},
      {"vocab_size", std::to_string(vocab_size)},
      {"normalization_rule_name", "identity"},
      {"remove_extra_whitespaces", "false"},
      {"add_dummy_prefix", "false"},
      {"byte_fallback", "true"},
      {"character_coverage", "1.0"},
      {"unk_id", "0"},
      {"bos_id", "-1"},
      {"eos_id", "-1"},
      {"pad_id", "-1"},
      {"user_defined_symbols", "\n"},
      {"input_sentence_size", std::to_string(max_sentences)},
      {"shuffle_input_sentence", "true"},
      {"max_sentence_length", "65536"},
      {"num_threads", "2"},
      {"minloglevel", "2"},  // No training log on stderr.
  };
  std::string serialized;
  const sentencepiece::util::Status trained =
      sentencepiece::SentencePieceTrainer::Train(options, &lines, &serialized);
  if (!trained.ok()) {
    *error = Copy(trained.ToString(), nullptr);
    return 1;
  }
  *model = Copy(serialized, model_size);
  return 0;
}

// A processor, or nullptr and *error. Checks the byte pieces (byte fallback).
__attribute__((visibility("default"))) void* psrv_bpe_load(const char* model, size_t size,
                                                           int* vocab_size, char** error) {
  auto* processor = new sentencepiece::SentencePieceProcessor();
  const sentencepiece::util::Status loaded =
      processor->LoadFromSerializedProto(std::string_view(model, size));
  if (!loaded.ok()) {
    *error = Copy("not a SentencePiece model: " + loaded.ToString(), nullptr);
    delete processor;
    return nullptr;
  }
  for (int b = 0; b < 256; ++b) {
    if (!processor->IsByte(processor->PieceToId(ByteName(b)))) {
      *error = Copy("the SentencePiece model has no byte piece " + ByteName(b) +
                        " (it must be trained with byte_fallback)",
                    nullptr);
      delete processor;
      return nullptr;
    }
  }
  *vocab_size = processor->GetPieceSize();
  return processor;
}

__attribute__((visibility("default"))) void psrv_bpe_unload(void* processor) {
  delete static_cast<sentencepiece::SentencePieceProcessor*>(processor);
}

// The ids of `text` in *ids (count returned).
__attribute__((visibility("default"))) size_t psrv_bpe_encode(const void* processor,
                                                             const char* text, size_t size,
                                                             int32_t** ids) {
  std::vector<int> encoded;
  (void)static_cast<const sentencepiece::SentencePieceProcessor*>(processor)->Encode(
      std::string_view(text, size), &encoded);
  *ids = static_cast<int32_t*>(std::malloc(std::max<size_t>(1, encoded.size()) * sizeof(int32_t)));
  if (*ids == nullptr) return 0;
  std::copy(encoded.begin(), encoded.end(), *ids);
  return encoded.size();
}

// The text of `ids` (all valid), its size in *size.
__attribute__((visibility("default"))) char* psrv_bpe_decode(const void* processor,
                                                            const int32_t* ids, size_t count,
                                                            size_t* size) {
  const std::vector<int> pieces(ids, ids + count);
  std::string text;
  (void)static_cast<const sentencepiece::SentencePieceProcessor*>(processor)->Decode(pieces, &text);
  return Copy(text, size);
}

__attribute__((visibility("default"))) char* psrv_bpe_piece(const void* processor, int32_t id,
                                                           size_t* size) {
  return Copy(static_cast<const sentencepiece::SentencePieceProcessor*>(processor)->IdToPiece(id),
              size);
}

}  // extern "C"
