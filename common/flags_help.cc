#include "common/flags_help.h"

#include "absl/flags/usage_config.h"
#include "absl/strings/match.h"
#include "absl/strings/string_view.h"

namespace psrv {

void ShowMainFlagsInHelp() {
  absl::FlagsUsageConfig config;
  config.contains_help_flags = [](absl::string_view file) {
    return absl::EndsWith(file, "_main.cc");
  };
  absl::SetFlagsUsageConfig(config);
}

}  // namespace psrv
