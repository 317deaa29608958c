#include "coordinator/cluster.h"

#include <glog/logging.h>

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/job_spec.h"
#include "common/status_macros.h"
#include "coordinator/state_records.h"

namespace psrv {

ClusterCoordinator::ClusterCoordinator(Options options)
    : options_(std::move(options)),
      state_(options_),
      membership_({options_, mu_, state_, calls_}),
      progress_({options_, mu_, state_, calls_}),
      scheduler_({options_, mu_, state_, calls_}),
      failover_({options_, mu_, state_, calls_}),
      backups_({options_, mu_, state_, calls_}),
      step_timeouts_({options_, mu_, state_, calls_}),
      worker_sets_({options_, mu_, state_, calls_}),
      checkpoints_({options_, mu_, state_, calls_}) {}

ClusterCoordinator::~ClusterCoordinator() {
  calls_.Stop();  // Checkpoints, probes and replies still in flight (they take mu_).
  absl::MutexLock lock(&mu_);
  state_.SaveChanges();  // The last progress reports.
}

absl::Status ClusterCoordinator::Load() {
  if (options_.state == nullptr) return absl::OkStatus();
  absl::StatusOr<StateStore::Contents> contents = options_.state->Load();
  if (!contents.ok()) return contents.status();
  absl::MutexLock lock(&mu_);
  if (absl::Status restored = RestoreState(*std::move(contents), &state_); !restored.ok()) {
    return restored;
  }
  LOG(INFO) << "state from " << options_.state->path() << ": " << state_.jobs.size()
            << " job(s), " << state_.nodes.size() << " node(s)";
  return absl::OkStatus();
}

absl::StatusOr<RegisterResponse> ClusterCoordinator::Register(const RegisterRequest& request) {
  return membership_.Register(request);
}

absl::StatusOr<HeartbeatResponse> ClusterCoordinator::Heartbeat(const HeartbeatRequest& request) {
  if (request.has_final_report()) {
    // A worker's final report that could not be delivered while this coordinator was away. It
    // counts as a report of its own (the same checks); the heartbeat's OK acknowledges it, also
    // when it no longer counts (e.g. its job was restarted), so the worker stops sending it.
    if (request.final_report().node_id() != request.node_id()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "final_report.node_id \"", request.final_report().node_id(),
          "\" is not the heartbeat's node_id \"", request.node_id(), "\""));
    }
    absl::StatusOr<ReportProgressResponse> reported =
        progress_.ReportProgress(request.final_report());
    if (!reported.ok()) {
      LOG(WARNING) << "final report of job " << request.final_report().job_id() << " from "
                   << request.node_id() << " dropped: " << reported.status();
    }
  }
  return membership_.Heartbeat(request);
}

absl::Status ClusterCoordinator::Leave(const std::string& node_id) {
  return membership_.Leave(node_id);
}

ListNodesResponse ClusterCoordinator::ListNodes() { return membership_.ListNodes(); }

absl::Status ClusterCoordinator::ReportUnreachable(const std::string& address) {
  return membership_.ReportUnreachable(address);
}

absl::StatusOr<ReportProgressResponse> ClusterCoordinator::ReportProgress(
    const ReportProgressRequest& request) {
  return progress_.ReportProgress(request);
}

absl::StatusOr<CheckpointManifest> ClusterCoordinator::CheckpointJob(const std::string& job_id,
                                                                     const std::string& directory) {
  return checkpoints_.CheckpointJob(job_id, directory);
}

absl::StatusOr<std::string> ClusterCoordinator::SubmitJob(JobSpec spec) {
  ApplyJobDefaults(&spec);
  if (absl::Status s = ValidateJobSpec(spec); !s.ok()) return s;
  absl::MutexLock lock(&mu_);
  RETURN_IF_ERROR(scheduler_.CheckFits(spec));
  const uint64_t sequence = state_.next_job++;
  const std::string id = absl::StrCat("job-", sequence);
  Job& job = state_.jobs[id];
  job.sequence = sequence;
  job.status.set_job_id(id);
  *job.status.mutable_spec() = spec;
  job.status.set_state(PENDING);
  job.status.set_submit_time_ms(Millis(state_.Now()));
  job.workers.resize(spec.num_workers());
  job.done.assign(spec.num_workers(), false);
  state_.job_order.push_back(id);
  state_.Touch(&job);
  return id;
}

absl::StatusOr<JobStatus> ClusterCoordinator::GetJob(const std::string& job_id) {
  absl::MutexLock lock(&mu_);
  absl::StatusOr<Job*> job = state_.FindJob(job_id);
  if (!job.ok()) return job.status();
  return (*job)->status;
}

ListJobsResponse ClusterCoordinator::ListJobs() {
  absl::MutexLock lock(&mu_);
  ListJobsResponse response;
  for (const std::string& id : state_.job_order) *response.add_jobs() = state_.jobs[id].status;
  return response;
}

absl::StatusOr<JobStatus> ClusterCoordinator::CancelJob(const std::string& job_id) {
  absl::MutexLock lock(&mu_);
  absl::StatusOr<Job*> job = state_.FindJob(job_id);
  if (!job.ok()) return job.status();
  if (IsTerminal((*job)->status.state())) {
    return absl::FailedPreconditionError(absl::StrCat(
        "job ", job_id, " already ended (", JobState_Name((*job)->status.state()), ")"));
  }
  state_.EndJob(*job, CANCELLED, "cancelled by user");
  return (*job)->status;
}

absl::StatusOr<ShardMap> ClusterCoordinator::GetShardMap(const std::string& job_id) {
  absl::MutexLock lock(&mu_);
  absl::StatusOr<Job*> job = state_.FindJob(job_id);
  if (!job.ok()) return job.status();
  if ((*job)->status.shard_map().shards().empty()) {
    return absl::FailedPreconditionError(absl::StrCat("job ", job_id, " has not started yet"));
  }
  return (*job)->status.shard_map();
}

absl::StatusOr<JobStatus> ClusterCoordinator::WaitForJobChange(const std::string& job_id,
                                                               uint64_t* revision,
                                                               absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  absl::StatusOr<Job*> job = state_.FindJob(job_id);
  if (!job.ok()) return job.status();
  const Job* j = *job;
  const uint64_t seen = *revision;
  auto changed = [j, seen]() { return j->revision > seen; };
  mu_.AwaitWithTimeout(absl::Condition(&changed), timeout);
  *revision = j->revision;
  return j->status;
}

void ClusterCoordinator::Tick() {
  // Each step decides under the lock, starts its calls without it, and waits for their replies
  // until the tick's deadline (real time); later replies are applied when they come.
  const absl::Time started = absl::Now();
  const absl::Time deadline = started + options_.reply_wait;
  // A tick far later than the previous one plus its longest wait: the coordinator was stopped.
  const absl::Duration since_previous = started - previous_tick_;
  previous_tick_ = started;
  if (since_previous != absl::InfiniteDuration() &&
      since_previous - options_.tick_interval - options_.reply_wait >
          std::max(3 * options_.heartbeat_interval, 2.5 * options_.tick_interval)) {
    membership_.ExcusePause(since_previous);
  }
  const CallRound round;
  membership_.ProbeSilentServers();  // Its verdicts count at the next tick.
  failover_.HandleLostNodes(round);  // Sends the promotions it makes, and any still unconfirmed.
  round.WaitUntil(deadline);
  backups_.ForgetDroppedBackups(round);
  step_timeouts_.CheckSteps(round);  // Its verdicts count at the next tick.
  round.WaitUntil(deadline);
  backups_.RepairBackups();  // AddBackup runs on (and is applied by) a thread of its own.
  worker_sets_.SendWorkerSets(round);
  round.WaitUntil(deadline);
  worker_sets_.FillVacantRanks(round);
  round.WaitUntil(deadline);
  scheduler_.StartJobs(round);
  round.WaitUntil(deadline);
  checkpoints_.StartDueCheckpoints();  // Each on a thread of its own.
  absl::MutexLock lock(&mu_);
  state_.SaveChanges();  // Progress reports, and writes that failed.
}

}  // namespace psrv
