// psctl's job commands: `job submit|list|status|watch|cancel|curves` and `checkpoint`. Each takes
// its parsed flags and the CommandEnv and returns the exit code (command_env.h); the Bind*
// functions give them to the command table (command_table.h).
#ifndef PSRV_CLIENT_JOB_COMMANDS_H_
#define PSRV_CLIENT_JOB_COMMANDS_H_

#include <functional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "client/command_env.h"
#include "client/command_table.h"
#include "client/coordinator_client.h"
#include "client/job_spec_flags.h"
#include "proto/job.pb.h"

namespace psrv {

int JobSubmitCommand(const CommandEnv& env, const JobSpecFlags& flags, bool watch, bool json);
int JobListCommand(const CommandEnv& env, bool json);
int JobStatusCommand(const CommandEnv& env, const std::string& job_id, bool json);
int JobWatchCommand(const CommandEnv& env, const std::string& job_id);
int JobCancelCommand(const CommandEnv& env, const std::string& job_id);
// Checkpoints a RUNNING SYNC job now and prints the manifest (step, files) or, with json, it as
// JSON.
int CheckpointCommand(const CommandEnv& env, const std::string& job_id, const std::string& directory,
                      bool json);
// Writes <out_dir>/<job_id>.csv and .png (client/curves.h) and prints their paths.
int JobCurvesCommand(const CommandEnv& env, const std::string& job_id, const std::string& out_dir);

// Waits for `job_id` to end while drawing its progress. `poll` may abort the watch; `observe`, if
// set, sees every status. Prints the final summary and returns the final status.
absl::StatusOr<JobStatus> WatchJobWithProgress(
    const CommandEnv& env, CoordinatorClient& client, const std::string& job_id,
    const std::function<absl::Status()>& poll,
    const std::function<void(const JobStatus&)>& observe = nullptr);

// 0 for a job that SUCCEEDED, else 1.
int ExitCodeForJob(const JobStatus& status);

// The command table's rows (command_table.h).
CommandHandler BindJobSubmit(CLI::App* command);
CommandHandler BindJobList(CLI::App* command);
CommandHandler BindJobStatus(CLI::App* command);
CommandHandler BindJobWatch(CLI::App* command);
CommandHandler BindJobCancel(CLI::App* command);
CommandHandler BindCheckpoint(CLI::App* command);
CommandHandler BindJobCurves(CLI::App* command);

}  // namespace psrv

#endif  // PSRV_CLIENT_JOB_COMMANDS_H_
