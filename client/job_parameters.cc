#include "client/job_parameters.h"

#include <memory>

#include "absl/strings/str_cat.h"
#include "client/coordinator_client.h"
#include "worker/parameter_client.h"

namespace psrv {

absl::Status WithContext(const std::string& context, const absl::Status& status) {
  const absl::StatusCode code =
      absl::IsInvalidArgument(status) ? absl::StatusCode::kInternal : status.code();
  return absl::Status(code, absl::StrCat(context, ": ", status.message()));
}

absl::StatusOr<JobStatus> GetJobWithParameters(const CommandEnv& env, const std::string& job_id) {
  CoordinatorClient client = MakeCoordinatorClient(env);
  absl::StatusOr<JobStatus> job = client.GetJob(job_id);
  if (!job.ok()) return job.status();
  if (job->shard_map().shards_size() == 0) {
    const std::string state = JobState_Name(job->state());
    return absl::FailedPreconditionError(
        job->state() == PENDING || job->state() == RUNNING
            ? absl::StrCat("job ", job_id, " is ", state,
                           " and has no parameters yet: this works once it is RUNNING (psctl job "
                           "watch ",
                           job_id, ")")
            : absl::StrCat("job ", job_id, " is ", state, " and has no parameters: it never started"));
  }
  return job;
}

absl::StatusOr<std::vector<float>> PullJobParameters(const CommandEnv& env, const JobStatus& job) {
  absl::StatusOr<std::unique_ptr<ParameterClient>> parameters =
      ParameterClient::Create(job.shard_map(), /*worker_rank=*/0);
  if (!parameters.ok()) {
    return WithContext(absl::StrCat("the shard map of job ", job.job_id()), parameters.status());
  }
  std::vector<float> values((*parameters)->num_parameters());
  // Step 0 never waits: the values as they are now.
  absl::Status pulled = (*parameters)->Pull(/*step=*/0, values.data(), env.timeout);
  if (!pulled.ok()) {
    return WithContext(absl::StrCat("pull the parameters of job ", job.job_id()), pulled);
  }
  return values;
}

}  // namespace psrv
