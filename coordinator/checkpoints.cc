#include "coordinator/checkpoints.h"

#include <glog/logging.h>

#include <algorithm>
#include <map>

#include "absl/strings/str_cat.h"
#include "coordinator/server_calls.h"

namespace psrv {

absl::StatusOr<CheckpointManifest> Checkpoints::CheckpointJob(const std::string& job_id,
                                                              const std::string& directory) {
  absl::StatusOr<Plan> plan = Begin(job_id, directory);
  if (!plan.ok()) return plan.status();
  absl::StatusOr<CheckpointManifest> manifest = Write(*plan);
  Finish(job_id, &manifest);
  return manifest;
}

absl::StatusOr<Checkpoints::Plan> Checkpoints::Begin(const std::string& job_id,
                                                     const std::string& directory) {
  absl::MutexLock lock(&cluster_.mu);
  absl::StatusOr<Job*> job = cluster_.state.FindJob(job_id);
  if (!job.ok()) return job.status();
  const JobStatus& status = (*job)->status;
  if (status.state() != RUNNING) {
    return absl::FailedPreconditionError(absl::StrCat("job ", job_id, " is ",
                                                      JobState_Name(status.state()),
                                                      ": only RUNNING jobs are checkpointed"));
  }
  if (status.spec().training().consistency() != SYNC) {
    return absl::FailedPreconditionError(
        "only SYNC jobs have a step at which every shard can be checkpointed");
  }
  Plan plan{job_id, directory, {}, {}};
  if (plan.directory.empty()) plan.directory = status.spec().checkpoint().directory();
  if (plan.directory.empty()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "job ", job_id, " has no checkpoint.directory; give one to the checkpoint request"));
  }
  if ((*job)->checkpointing) {
    return absl::FailedPreconditionError(
        absl::StrCat("a checkpoint of job ", job_id, " is already in progress"));
  }
  if (!cluster_.options.shard_version || !cluster_.options.save_checkpoint) {
    return absl::UnimplementedError("this coordinator cannot checkpoint");
  }
  std::map<std::string, std::string> servers;  // Address -> server id.
  for (const ShardAssignment& shard : status.shard_map().shards()) {
    servers[shard.server_address()] = shard.server_id();
  }
  for (const auto& [address, id] : servers) {
    plan.addresses.push_back(address);
    plan.server_ids.push_back(id);
  }
  (*job)->checkpointing = true;
  return plan;
}

absl::StatusOr<CheckpointManifest> Checkpoints::Write(const Plan& plan) {
  // Every shard of a SYNC job is within one step of the others: two steps ahead is a step none has
  // reached, and all will (the servers answer once theirs do). Fast steps may overtake the margin
  // while the requests travel (FAILED_PRECONDITION): then again with a wider one.
  absl::StatusOr<CheckpointManifest> manifest;
  for (const uint64_t margin : {2, 8, 32, 128}) {
    absl::StatusOr<uint64_t> furthest = FurthestVersion(plan);
    if (!furthest.ok()) return furthest.status();
    manifest = SaveAt(plan, *furthest + margin);
    if (manifest.status().code() != absl::StatusCode::kFailedPrecondition) break;
  }
  return manifest;
}

absl::StatusOr<uint64_t> Checkpoints::FurthestVersion(const Plan& plan) {
  const std::vector<absl::StatusOr<uint64_t>> versions =
      CallEach(plan.addresses, [&](const std::string& address) {
        return cluster_.options.shard_version(address, plan.job_id);
      });
  uint64_t furthest = 0;
  for (const absl::StatusOr<uint64_t>& version : versions) {
    if (!version.ok()) return version.status();
    furthest = std::max(furthest, *version);
  }
  return furthest;
}

absl::StatusOr<CheckpointManifest> Checkpoints::SaveAt(const Plan& plan, uint64_t step) {
  SaveCheckpointRequest request;
  request.set_job_id(plan.job_id);
  request.set_version(step);
  request.set_directory(plan.directory);
  const std::vector<absl::StatusOr<SaveCheckpointResponse>> saved =
      CallEach(plan.addresses, [&](const std::string& address) {
        return cluster_.options.save_checkpoint(address, request);
      });
  CheckpointManifest manifest;
  manifest.set_step(step);
  for (size_t i = 0; i < saved.size(); ++i) {
    if (!saved[i].ok()) return saved[i].status();
    for (CheckpointFile file : saved[i]->files()) {
      file.set_server_id(plan.server_ids[i]);
      *manifest.add_files() = std::move(file);
    }
  }
  return manifest;
}

void Checkpoints::Finish(const std::string& job_id, absl::StatusOr<CheckpointManifest>* manifest) {
  absl::MutexLock lock(&cluster_.mu);
  ClusterState& state = cluster_.state;
  auto job = state.jobs.find(job_id);
  if (job == state.jobs.end()) return;
  job->second.checkpointing = false;
  if (!manifest->ok()) return;
  (*manifest)->set_time_ms(Millis(state.Now()));
  *job->second.status.add_checkpoints() = **manifest;
  state.Touch(&job->second);
}

void Checkpoints::StartDueCheckpoints() {
  absl::MutexLock lock(&cluster_.mu);
  const absl::Time now = cluster_.state.Now();
  for (auto& [id, job] : cluster_.state.jobs) {
    const CheckpointSpec& spec = job.status.spec().checkpoint();
    if (job.status.state() != RUNNING || spec.directory().empty() || job.checkpointing ||
        job.status.spec().training().consistency() != SYNC) {
      continue;
    }
    if (job.last_checkpoint_time == absl::InfinitePast()) {
      job.last_checkpoint_time = now;  // Started (or reloaded) now: count the seconds from here.
    }
    const bool steps_due = spec.every_steps() > 0 &&
                           job.status.step() >= job.last_checkpoint_step + spec.every_steps();
    const bool time_due = spec.every_seconds() > 0 &&
                          now - job.last_checkpoint_time >= absl::Seconds(spec.every_seconds());
    if (!steps_due && !time_due) continue;
    job.last_checkpoint_step = job.status.step();
    job.last_checkpoint_time = now;
    cluster_.calls.Start([this, id = id] {
      absl::StatusOr<CheckpointManifest> manifest = CheckpointJob(id, "");
      if (!manifest.ok()) LOG(WARNING) << "periodic checkpoint of " << id << ": " << manifest.status();
    });
  }
}

}  // namespace psrv
