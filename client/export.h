// `psctl export`: a job's current parameters written as a safetensors file, one tensor per table
// with its name and shape (readable by Python's `safetensors` library).
#ifndef PSRV_CLIENT_EXPORT_H_
#define PSRV_CLIENT_EXPORT_H_

#include <string>

#include "client/command_env.h"

namespace psrv {

struct ExportFlags {
  std::string job_id;
  std::string format = "safetensors";  // The only format today.
  std::string out;                      // Output path; default <job_id>.safetensors.
  bool json = false;                    // Print {"job_id", "path", "tensors", "parameters"}.
};

// Pulls the job's parameters (client/job_parameters.h) and writes them with metadata (job id,
// name, step, the JSON of the model spec). Errors: NOT_FOUND / FAILED_PRECONDITION as
// PullJobParameters (exit 1); an unknown --format (exit 2); a write failure (exit 1).
int ExportCommand(const CommandEnv& env, const ExportFlags& flags);

}  // namespace psrv

#endif  // PSRV_CLIENT_EXPORT_H_
