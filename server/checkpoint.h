// Checkpoint files: one shard's parameters and optimizer state at one step, written atomically
// (temporary file, fsync, rename, fsync of the directory) and checked on read (magic, sizes, CRC-32
// over the whole file), so a partial or corrupt checkpoint is detected and never loaded. The same
// bytes travel in InstallShard (a primary's full copy for a new backup).
#ifndef PSRV_SERVER_CHECKPOINT_H_
#define PSRV_SERVER_CHECKPOINT_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "proto/types.pb.h"

namespace psrv {

// What one shard holds at one step.
struct ShardCheckpoint {
  std::string job_id;
  std::string table;
  KeyRange range;
  uint64_t version = 0;               // Updates applied (SYNC: the step).
  std::vector<float> values;          // (range size) the parameters.
  std::vector<std::vector<float>> optimizer_state;  // Each (range size): momentum, Adam m and v...
};

// The checkpoint as bytes (magic, header, arrays, CRC-32 of everything before it); `crc` (optional)
// receives the CRC. INVALID_ARGUMENT if an array does not match the key range.
absl::StatusOr<std::string> EncodeShardCheckpoint(const ShardCheckpoint& checkpoint,
                                                  uint32_t* crc = nullptr);

// Verifies and decodes bytes from EncodeShardCheckpoint. DATA_LOSS (naming `what`, e.g. the file)
// if they are truncated, have the wrong magic or format version, inconsistent sizes, or a CRC
// mismatch; if `expected_crc` is set, the CRC must also equal it.
absl::StatusOr<ShardCheckpoint> DecodeShardCheckpoint(absl::string_view data,
                                                      const std::string& what,
                                                      const uint32_t* expected_crc = nullptr);

// Writes `checkpoint` to `path` atomically. On success returns the file's CRC-32 (recorded in the
// coordinator's manifest). INTERNAL with the OS error otherwise; a failed write leaves no file at
// `path` (and the previous file there, if any, intact).
absl::StatusOr<uint32_t> WriteShardCheckpoint(const std::string& path,
                                              const ShardCheckpoint& checkpoint);

// Reads and verifies a file written by WriteShardCheckpoint. NOT_FOUND if it does not exist;
// DATA_LOSS if it is truncated, has the wrong magic or format version, inconsistent sizes, or a
// CRC mismatch. If `expected_crc` is set, the file's CRC must also equal it (DATA_LOSS otherwise).
absl::StatusOr<ShardCheckpoint> ReadShardCheckpoint(const std::string& path,
                                                    const uint32_t* expected_crc = nullptr);

}  // namespace psrv

#endif  // PSRV_SERVER_CHECKPOINT_H_
