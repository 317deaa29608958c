// safetensors files (https://github.com/huggingface/safetensors): an 8-byte little-endian header
// length, a JSON header naming each tensor's dtype, shape and byte range, then the raw data. Used to
// export a trained model with its table names and shapes, and to start a job from one.
#ifndef PSRV_COMMON_SAFETENSORS_H_
#define PSRV_COMMON_SAFETENSORS_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace psrv {

struct NamedTensor {
  std::string name;
  std::vector<uint64_t> shape;
  std::vector<float> values;  // (product of shape), row-major, F32.
};

// Writes `tensors` (F32) and `metadata` (string to string, the format's "__metadata__") to `path`
// through a temporary file and rename. INVALID_ARGUMENT for a tensor whose values do not match its
// shape or a repeated name; INTERNAL for I/O errors.
absl::Status WriteSafetensors(const std::string& path, const std::vector<NamedTensor>& tensors,
                              const std::map<std::string, std::string>& metadata = {});

// Reads every tensor of a safetensors file (F32 only), in file order, and its metadata.
// NOT_FOUND if unreadable; INVALID_ARGUMENT for a malformed file or a dtype other than F32.
absl::StatusOr<std::vector<NamedTensor>> ReadSafetensors(
    const std::string& path, std::map<std::string, std::string>* metadata = nullptr);

}  // namespace psrv

#endif  // PSRV_COMMON_SAFETENSORS_H_
