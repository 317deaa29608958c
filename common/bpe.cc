// BPE models: the shim (bpe_shim.cc) loaded from the copy embedded in this library, and calls
// through its C interface.
#include "common/bpe.h"

#include <dlfcn.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <mutex>

// The shared object built from bpe_shim.cc (bpe_shim_image.cc, a genrule).
extern const unsigned char kPsrvBpeShim[];
extern const unsigned long kPsrvBpeShimSize;

#if defined(__SANITIZE_ADDRESS__)
#define PSRV_BPE_UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define PSRV_BPE_UNDER_ASAN 1
#endif
#endif

namespace psrv {
namespace {

struct Shim {
  std::string error;  // Why it is not loaded; "" when it is.
  void (*free)(void*) = nullptr;
  int (*train)(const char*, uint64_t, int, int, char**, size_t*, char**) = nullptr;
  void* (*load)(const char*, size_t, int*, char**) = nullptr;
  void (*unload)(void*) = nullptr;
  size_t (*encode)(const void*, const char*, size_t, int32_t**) = nullptr;
  char* (*decode)(const void*, const int32_t*, size_t, size_t*) = nullptr;
  char* (*piece)(const void*, int32_t, size_t*) = nullptr;
};

template <typename F>
bool Resolve(void* handle, const char* name, F* f, std::string* error) {
  *f = reinterpret_cast<F>(dlsym(handle, name));
  if (*f == nullptr) *error = std::string("the BPE shim lacks ") + name;
  return *f != nullptr;
}

Shim LoadShim() {
  Shim shim;
#ifdef PSRV_BPE_UNDER_ASAN
  shim.error =
      "BPE tokenizers are not available in AddressSanitizer builds (SentencePiece is loaded with "
      "RTLD_DEEPBIND, which the sanitizer runtime refuses)";
  return shim;
#else
  // The image goes into an anonymous file, which dlopen maps like any other.
  const int fd = memfd_create("psrv_bpe_shim.so", MFD_CLOEXEC);
  if (fd < 0) {
    shim.error = std::string("memfd_create for the BPE shim failed: ") + std::strerror(errno);
    return shim;
  }
  size_t written = 0;
  while (written < kPsrvBpeShimSize) {
    const ssize_t n = write(fd, kPsrvBpeShim + written, kPsrvBpeShimSize - written);
    if (n <= 0) {
      shim.error = std::string("writing the BPE shim failed: ") + std::strerror(errno);
      close(fd);
      return shim;
    }
    written += static_cast<size_t>(n);
  }
  const std::string path = "/proc/self/fd/" + std::to_string(fd);
  void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND);
  close(fd);  // The mapping keeps what it needs.
  if (handle == nullptr) {
    const char* why = dlerror();
    shim.error = std::string("SentencePiece cannot be loaded (Debian: apt-get install "
                             "libsentencepiece0): ") +
                 (why != nullptr ? why : "unknown error");
    return shim;
  }
  std::string error;
  if (!Resolve(handle, "psrv_bpe_free", &shim.free, &error) ||
      !Resolve(handle, "psrv_bpe_train", &shim.train, &error) ||
      !Resolve(handle, "psrv_bpe_load", &shim.load, &error) ||
      !Resolve(handle, "psrv_bpe_unload", &shim.unload, &error) ||
      !Resolve(handle, "psrv_bpe_encode", &shim.encode, &error) ||
      !Resolve(handle, "psrv_bpe_decode", &shim.decode, &error) ||
      !Resolve(handle, "psrv_bpe_piece", &shim.piece, &error)) {
    shim.error = error;
  }
  return shim;
#endif
}

// Loaded once, on first use, and never unloaded.
const Shim& GetShim() {
  static const Shim* const shim = new Shim(LoadShim());
  return *shim;
}

// A string the shim allocated, copied and released.
std::string Take(const Shim& shim, char* s, size_t size) {
  if (s == nullptr) return "";
  std::string out(s, size);
  shim.free(s);
  return out;
}

}  // namespace

bool BpeAvailable(std::string* why) {
  const Shim& shim = GetShim();
  if (why != nullptr) *why = shim.error;
  return shim.error.empty();
}

std::string TrainBpe(const std::string& path, uint64_t byte_limit, int vocab_size,
                     std::string* model, int max_sentences) {
  if (vocab_size < kMinBpeVocabSize || vocab_size > kMaxBpeVocabSize) {
    return "a BPE vocabulary must have " + std::to_string(kMinBpeVocabSize) + ".." +
           std::to_string(kMaxBpeVocabSize) + " pieces, got " + std::to_string(vocab_size);
  }
  const Shim& shim = GetShim();
  if (!shim.error.empty()) return shim.error;
  char* serialized = nullptr;
  size_t size = 0;
  char* error = nullptr;
  if (shim.train(path.c_str(), byte_limit, vocab_size, max_sentences, &serialized, &size,
                 &error) != 0) {
    const std::string why = error != nullptr ? Take(shim, error, std::strlen(error)) : "";
    return "training a " + std::to_string(vocab_size) + "-piece BPE model on " + path +
           " failed: " + why;
  }
  *model = Take(shim, serialized, size);
  return "";
}

std::unique_ptr<BpeModel> BpeModel::Load(const std::string& serialized, std::string* error) {
  const Shim& shim = GetShim();
  if (!shim.error.empty()) {
    *error = shim.error;
    return nullptr;
  }
  int size = 0;
  char* why = nullptr;
  void* processor = shim.load(serialized.data(), serialized.size(), &size, &why);
  if (processor == nullptr) {
    *error = why != nullptr ? Take(shim, why, std::strlen(why)) : "not a SentencePiece model";
    return nullptr;
  }
  if (size < kMinBpeVocabSize || size > kMaxBpeVocabSize) {
    shim.unload(processor);
    *error = "the SentencePiece model has " + std::to_string(size) + " pieces, not " +
             std::to_string(kMinBpeVocabSize) + ".." + std::to_string(kMaxBpeVocabSize);
    return nullptr;
  }
  return std::unique_ptr<BpeModel>(new BpeModel(processor, size));
}

BpeModel::~BpeModel() { GetShim().unload(processor_); }

std::vector<int32_t> BpeModel::Encode(std::string_view text) const {
  const Shim& shim = GetShim();
  int32_t* ids = nullptr;
  const size_t n = shim.encode(processor_, text.data(), text.size(), &ids);
  std::vector<int32_t> out(ids, ids + n);
  shim.free(ids);
  return out;
}

std::string BpeModel::Decode(const std::vector<int32_t>& ids) const {
  std::vector<int32_t> kept;
  kept.reserve(ids.size());
  for (int32_t id : ids) {
    if (id >= 0 && id < vocab_size_) kept.push_back(id);
  }
  const Shim& shim = GetShim();
  size_t size = 0;
  char* text = shim.decode(processor_, kept.data(), kept.size(), &size);
  return Take(shim, text, size);
}

std::string BpeModel::Piece(int32_t id) const {
  if (id < 0 || id >= vocab_size_) return "";
  const Shim& shim = GetShim();
  size_t size = 0;
  char* piece = shim.piece(processor_, id, &size);
  return Take(shim, piece, size);
}

}  // namespace psrv
