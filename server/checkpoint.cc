#include "server/checkpoint.h"

#include <fcntl.h>
#include <unistd.h>
#include <zlib.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"

namespace psrv {
namespace {

constexpr char kMagic[8] = {'P', 'S', 'R', 'V', 'C', 'K', 'P', 'T'};
constexpr uint32_t kFormatVersion = 1;

// Little-endian serialization of the header fields and arrays.
void PutU32(std::string* out, uint32_t v) { out->append(reinterpret_cast<const char*>(&v), 4); }
void PutU64(std::string* out, uint64_t v) { out->append(reinterpret_cast<const char*>(&v), 8); }
void PutString(std::string* out, const std::string& s) {
  PutU32(out, static_cast<uint32_t>(s.size()));
  out->append(s);
}
void PutFloats(std::string* out, const std::vector<float>& v) {
  out->append(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(float));
}

// Reads from bytes, failing (ok() false) instead of reading past the end.
class Reader {
 public:
  explicit Reader(absl::string_view data) : data_(data) {}
  bool ok() const { return ok_; }
  size_t remaining() const { return data_.size() - pos_; }
  void Bytes(void* out, size_t n) {
    if (!ok_ || remaining() < n) {
      ok_ = false;
      return;
    }
    std::memcpy(out, data_.data() + pos_, n);
    pos_ += n;
  }
  uint32_t U32() { uint32_t v = 0; Bytes(&v, 4); return v; }
  uint64_t U64() { uint64_t v = 0; Bytes(&v, 8); return v; }
  std::string String() {
    const uint32_t n = U32();
    if (!ok_ || remaining() < n) {
      ok_ = false;
      return "";
    }
    std::string s(data_.substr(pos_, n));
    pos_ += n;
    return s;
  }
  void Floats(std::vector<float>* out, uint64_t n) {
    if (!ok_ || remaining() / sizeof(float) < n) {
      ok_ = false;
      return;
    }
    out->resize(n);
    Bytes(out->data(), n * sizeof(float));
  }

 private:
  const absl::string_view data_;
  size_t pos_ = 0;
  bool ok_ = true;
};

uint32_t Crc32(const char* data, size_t size) {
  uLong crc = crc32(0L, Z_NULL, 0);
  while (size > 0) {
    const uInt chunk = static_cast<uInt>(std::min<size_t>(size, 1u << 30));
    crc = crc32(crc, reinterpret_cast<const Bytef*>(data), chunk);
    data += chunk;
    size -= chunk;
  }
  return static_cast<uint32_t>(crc);
}

absl::Status OsError(const std::string& what, const std::string& path) {
  return absl::InternalError(absl::StrCat(what, " ", path, ": ", std::strerror(errno)));
}

std::string DirectoryOf(const std::string& path) {
  const size_t slash = path.rfind('/');
  return slash == std::string::npos ? "." : (slash == 0 ? "/" : path.substr(0, slash));
}

}  // namespace

absl::StatusOr<std::string> EncodeShardCheckpoint(const ShardCheckpoint& checkpoint,
                                                  uint32_t* crc) {
  const uint64_t size = checkpoint.range.end() - checkpoint.range.begin();
  if (checkpoint.values.size() != size) {
    return absl::InvalidArgumentError("checkpoint values do not match the key range");
  }
  for (const auto& state : checkpoint.optimizer_state) {
    if (state.size() != size) {
      return absl::InvalidArgumentError("checkpoint optimizer state does not match the key range");
    }
  }
  std::string data(kMagic, sizeof(kMagic));
  data.reserve(sizeof(kMagic) + 64 + checkpoint.job_id.size() + checkpoint.table.size() +
               (1 + checkpoint.optimizer_state.size()) * size * sizeof(float));
  PutU32(&data, kFormatVersion);
  PutString(&data, checkpoint.job_id);
  PutString(&data, checkpoint.table);
  PutU64(&data, checkpoint.range.begin());
  PutU64(&data, checkpoint.range.end());
  PutU64(&data, checkpoint.version);
  PutU32(&data, static_cast<uint32_t>(checkpoint.optimizer_state.size()));
  PutFloats(&data, checkpoint.values);
  for (const auto& state : checkpoint.optimizer_state) PutFloats(&data, state);
  const uint32_t sum = Crc32(data.data(), data.size());
  PutU32(&data, sum);
  if (crc != nullptr) *crc = sum;
  return data;
}

absl::StatusOr<ShardCheckpoint> DecodeShardCheckpoint(absl::string_view data,
                                                      const std::string& what,
                                                      const uint32_t* expected_crc) {
  auto corrupt = [&what](const std::string& why) {
    return absl::DataLossError(absl::StrCat("checkpoint ", what, " is corrupt: ", why));
  };
  if (data.size() < sizeof(kMagic) + 8 || std::memcmp(data.data(), kMagic, sizeof(kMagic)) != 0) {
    return corrupt("not a checkpoint file (bad magic or truncated)");
  }
  uint32_t stored_crc;
  std::memcpy(&stored_crc, data.data() + data.size() - 4, 4);
  const uint32_t crc = Crc32(data.data(), data.size() - 4);
  if (crc != stored_crc) return corrupt("CRC-32 mismatch (truncated or altered)");
  if (expected_crc != nullptr && crc != *expected_crc) {
    return corrupt(absl::StrCat("CRC-32 ", crc, " differs from the manifest's ", *expected_crc));
  }
  Reader reader(data.substr(sizeof(kMagic), data.size() - sizeof(kMagic) - 4));
  if (reader.U32() != kFormatVersion) return corrupt("unknown format version");
  ShardCheckpoint checkpoint;
  checkpoint.job_id = reader.String();
  checkpoint.table = reader.String();
  checkpoint.range.set_begin(reader.U64());
  checkpoint.range.set_end(reader.U64());
  checkpoint.version = reader.U64();
  const uint32_t states = reader.U32();
  if (!reader.ok() || checkpoint.range.end() < checkpoint.range.begin() || states > 16) {
    return corrupt("bad header");
  }
  const uint64_t size = checkpoint.range.end() - checkpoint.range.begin();
  reader.Floats(&checkpoint.values, size);
  checkpoint.optimizer_state.resize(states);
  for (auto& state : checkpoint.optimizer_state) reader.Floats(&state, size);
  if (!reader.ok() || reader.remaining() != 0) return corrupt("sizes do not match the header");
  return checkpoint;
}

absl::StatusOr<uint32_t> WriteShardCheckpoint(const std::string& path,
                                              const ShardCheckpoint& checkpoint) {
  uint32_t crc = 0;
  absl::StatusOr<std::string> encoded = EncodeShardCheckpoint(checkpoint, &crc);
  if (!encoded.ok()) return encoded.status();
  const std::string& data = *encoded;

  const std::string temporary = absl::StrCat(path, ".tmp.", getpid());
  const int fd = open(temporary.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return OsError("cannot create", temporary);
  size_t written = 0;
  while (written < data.size()) {
    const ssize_t n = write(fd, data.data() + written, data.size() - written);
    if (n < 0) {
      if (errno == EINTR) continue;
      absl::Status error = OsError("cannot write", temporary);
      close(fd);
      unlink(temporary.c_str());
      return error;
    }
    written += static_cast<size_t>(n);
  }
  if (fsync(fd) != 0) {
    absl::Status error = OsError("cannot fsync", temporary);
    close(fd);
    unlink(temporary.c_str());
    return error;
  }
  close(fd);
  if (rename(temporary.c_str(), path.c_str()) != 0) {
    absl::Status error = OsError("cannot rename to", path);
    unlink(temporary.c_str());
    return error;
  }
  // The rename is durable only once the directory entry is.
  const std::string directory = DirectoryOf(path);
  const int dir_fd = open(directory.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir_fd < 0) return OsError("cannot open directory", directory);
  const int synced = fsync(dir_fd);
  close(dir_fd);
  if (synced != 0) return OsError("cannot fsync directory", directory);
  return crc;
}

absl::StatusOr<ShardCheckpoint> ReadShardCheckpoint(const std::string& path,
                                                    const uint32_t* expected_crc) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("no checkpoint file ", path));
  std::stringstream buffer;
  buffer << in.rdbuf();
  return DecodeShardCheckpoint(buffer.str(), path, expected_crc);
}

}  // namespace psrv
