// Byte-pair-encoding (BPE) tokenizer models: trained on a text file and applied with SentencePiece.
// The model is SentencePiece's own serialized ModelProto (what `spm_train` writes to a .model
// file), so other tools (Python's `sentencepiece`) read what a job stores and `psctl export`
// writes.
//
// SentencePiece runs inside a small shared object (bpe_shim.cc, embedded in this library) that is
// loaded on first use with RTLD_DEEPBIND: Debian's libsentencepiece carries and exports its own
// copy of an older protobuf-lite, which crashes a process that also links libprotobuf when both
// share one symbol scope. So the process needs libsentencepiece0 only when it uses BPE, and
// AddressSanitizer builds (which refuse RTLD_DEEPBIND) have no BPE: BpeAvailable() says so.
//
// The models are lossless for UTF-8 text: no normalization, spaces kept as they are (no dummy
// prefix, runs of spaces kept), '\n' a piece of its own, and byte fallback (the 256 byte pieces
// <0x00>..<0xFF>) for characters the merges never saw. Ids: 0 is <unk> (unused: byte fallback
// covers everything), then '\n', the byte pieces and the merged pieces; no BOS/EOS.
#ifndef PSRV_COMMON_BPE_H_
#define PSRV_COMMON_BPE_H_

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace psrv {

// Smallest and largest vocabulary a BPE model may have: <unk>, '\n' and the 256 byte pieces, plus
// at least one merge; ids must fit in uint16 (token corpora store them so).
inline constexpr int kMinBpeVocabSize = 259;
inline constexpr int kMaxBpeVocabSize = 65536;

// True if SentencePiece can be loaded here; else false and why (not installed, a sanitizer build).
bool BpeAvailable(std::string* why = nullptr);

// Trains a BPE model of exactly `vocab_size` pieces on the lines of the first `byte_limit` bytes of
// the file at `path` (the training split; at most `max_sentences` lines, sampled evenly when there
// are more). Returns "" and sets `*model` to the serialized model, or returns why it failed: the
// file cannot be read, `vocab_size` is out of range, the text is too small for that many pieces
// (SentencePiece's message), or !BpeAvailable().
std::string TrainBpe(const std::string& path, uint64_t byte_limit, int vocab_size,
                     std::string* model, int max_sentences = 2000000);

// A loaded model. Immutable after Load: Encode and Decode are thread-safe.
class BpeModel {
 public:
  // nullptr and `*error` set if `serialized` is not a SentencePiece model, or its vocabulary is
  // outside [kMinBpeVocabSize, kMaxBpeVocabSize] or lacks byte fallback, or !BpeAvailable().
  static std::unique_ptr<BpeModel> Load(const std::string& serialized, std::string* error);
  ~BpeModel();

  int vocab_size() const { return vocab_size_; }
  // The ids of `text`, which must be valid UTF-8 (the caller checks: SentencePiece would replace
  // a bad byte by U+FFFD, and the round trip would lose it).
  std::vector<int32_t> Encode(std::string_view text) const;
  // The text of `ids`; ids outside [0, vocab_size()) are skipped. Decode(Encode(t)) == t.
  std::string Decode(const std::vector<int32_t>& ids) const;
  // The piece of `id` as SentencePiece shows it ("▁the", "<0x0A>"); "" out of range.
  std::string Piece(int32_t id) const;

 private:
  BpeModel(void* processor, int vocab_size) : processor_(processor), vocab_size_(vocab_size) {}
  BpeModel(const BpeModel&) = delete;
  BpeModel& operator=(const BpeModel&) = delete;

  void* processor_;  // A sentencepiece::SentencePieceProcessor of the shim.
  int vocab_size_;
};

}  // namespace psrv

#endif  // PSRV_COMMON_BPE_H_
