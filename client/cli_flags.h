// CLI11 helpers shared by psctl's commands: optional flags, and the job spec flags of
// `job submit` and `local`.
#ifndef PSRV_CLIENT_CLI_FLAGS_H_
#define PSRV_CLIENT_CLI_FLAGS_H_

#include <CLI/CLI.hpp>
#include <optional>
#include <string>

#include "client/job_spec_flags.h"

namespace psrv {

// A flag that sets `*target` only when given, so that "not given" differs from any value.
template <typename T>
CLI::Option* AddOptional(CLI::App* app, const std::string& name, std::optional<T>* target,
                         const std::string& help) {
  return app->add_option_function<T>(
      name, [target](const T& value) { *target = value; }, help);
}

// The job spec flags (--spec and the overrides of its fields). `cluster_size`: add
// --servers/--workers (local has its own, with other defaults).
void AddJobSpecFlags(CLI::App* app, JobSpecFlags* flags, bool cluster_size);

}  // namespace psrv

#endif  // PSRV_CLIENT_CLI_FLAGS_H_
