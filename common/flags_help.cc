#include "common/flags_help.h"

#include "absl/flags/usage_config.h"
#include "absl/strings/match.h"
#include "absl/strings/string_view.h"

namespace psrv {

void ShowMainFlagsInHelp() {
  absl::FlagsUsageConfig config;
  config.contains_help_flags = [](absl::string_view file) {
    // The program's own flags, and the TLS flags every daemon shares.
    return absl::EndsWith(file, "_main.cc") || absl::EndsWith(file, "common/tls_flags.cc");
  };
  absl::SetFlagsUsageConfig(config);
}

}  // namespace psrv
