// A job's current parameters, pulled by psctl straight from the job's parameter servers (as a
// worker pulls them), for `psctl generate` and `psctl export`.
#ifndef PSRV_CLIENT_JOB_PARAMETERS_H_
#define PSRV_CLIENT_JOB_PARAMETERS_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "client/command_env.h"
#include "proto/job.pb.h"

namespace psrv {

// GetJob, for a job that has parameters. NOT_FOUND for an unknown job; FAILED_PRECONDITION for a
// job that has none (PENDING, or never started).
absl::StatusOr<JobStatus> GetJobWithParameters(const CommandEnv& env, const std::string& job_id);

// A Pull of every shard of `job` (step 0: the values as they are now): the tables of
// job.shard_map() in order, (num_parameters) floats. Errors name the job.
absl::StatusOr<std::vector<float>> PullJobParameters(const CommandEnv& env, const JobStatus& job);

// `status` with `context` in front of its message. INVALID_ARGUMENT becomes INTERNAL: here it
// means a server or the shard map disagrees with psctl, not that the user's input was bad.
absl::Status WithContext(const std::string& context, const absl::Status& status);

}  // namespace psrv

#endif  // PSRV_CLIENT_JOB_PARAMETERS_H_
