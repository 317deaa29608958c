#include "worker/model/gpt_config.h"

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace psrv {
namespace {

absl::Status CheckRange(const char* name, int64_t value, int64_t min, int64_t max) {
  if (value < min || value > max) {
    return absl::InvalidArgumentError(
        absl::StrCat("gpt ", name, " = ", value, ", want ", min, "..", max));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ValidateGptConfig(const GptConfig& config) {
  RETURN_IF_ERROR(CheckRange("layers", config.layers, 1, 256));
  RETURN_IF_ERROR(CheckRange("width", config.width, 1, 65536));
  RETURN_IF_ERROR(CheckRange("heads", config.heads, 1, config.width));
  if (config.width % config.heads != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("gpt heads = ", config.heads, " does not divide width = ", config.width));
  }
  RETURN_IF_ERROR(CheckRange("context", config.context, 1, 65536));
  RETURN_IF_ERROR(CheckRange("vocab", config.vocab, 1, 1 << 30));
  RETURN_IF_ERROR(CheckRange("threads", config.threads, 0, 1024));
  if (!(config.dropout >= 0.0f && config.dropout < 1.0f)) {
    return absl::InvalidArgumentError(
        absl::StrCat("gpt dropout = ", config.dropout, ", want [0, 1)"));
  }
  return absl::OkStatus();
}

}  // namespace psrv
