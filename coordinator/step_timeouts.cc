#include "coordinator/step_timeouts.h"

#include <glog/logging.h>

#include <set>

#include "common/job_spec.h"

namespace psrv {

void StepTimeouts::CheckSteps(const CallRound& round) {
  absl::MutexLock lock(&cluster_.mu);
  const absl::Time now = cluster_.state.Now();
  if (!cluster_.options.server_status || now - last_check_ < absl::Seconds(1)) return;
  last_check_ = now;
  for (auto& [id, job] : cluster_.state.jobs) {
    const TrainingSpec& training = job.status.spec().training();
    if (job.status.state() != RUNNING || training.consistency() != SYNC ||
        training.step_timeout_seconds() == 0 || job.checking_steps) {
      continue;
    }
    std::set<std::string> primaries;
    for (const ShardAssignment& shard : job.status.shard_map().shards()) {
      primaries.insert(shard.server_address());
    }
    job.checking_steps = cluster_.calls.Start(
        [this, id = id, run = job.run,
         primaries = std::vector<std::string>(primaries.begin(), primaries.end())] {
          CheckPrimaries(id, run, primaries);
        },
        &round);
  }
}

void StepTimeouts::CheckPrimaries(const std::string& job_id, uint64_t run,
                                  const std::vector<std::string>& primaries) {
  const std::vector<absl::StatusOr<ServerStatus>> statuses =
      CallEach(primaries, [&](const std::string& address) {
        return cluster_.options.server_status(address, job_id);
      });
  absl::MutexLock lock(&cluster_.mu);
  auto found = cluster_.state.jobs.find(job_id);
  if (found == cluster_.state.jobs.end()) return;
  Job& job = found->second;
  job.checking_steps = false;
  if (!StillRunning(job, run)) return;
  const int64_t timeout_ms =
      int64_t{job.status.spec().training().step_timeout_seconds()} * 1000;
  // The servers' ranks are the workers' (pipeline jobs: the groups'). Which stage of a group hangs
  // the servers cannot tell (every stage waits for the hung one), so the whole group is stalled.
  const uint32_t stages = PipelineStages(job.status.spec());
  for (const absl::StatusOr<ServerStatus>& status : statuses) {
    if (!status.ok()) continue;  // A lost server is the fail-over's business.
    for (const ShardStatus& shard : status->shards()) {
      if (shard.role() != PRIMARY || shard.waiting_ms() <= timeout_ms) continue;
      for (uint32_t server_rank : shard.waiting_for_workers()) {
        for (uint32_t rank = server_rank * stages; rank < (server_rank + 1) * stages; ++rank) {
          if (rank >= job.workers.size() || job.workers[rank].empty() || job.done[rank]) continue;
          if (job.stalled_ranks.insert(rank).second) {
            LOG(WARNING) << "job " << job_id << ": " << shard.table() << " waited "
                         << shard.waiting_ms() << " ms for "
                         << (stages > 1 ? "pipeline group " : "rank ") << server_rank
                         << " (training.step_timeout_seconds "
                         << job.status.spec().training().step_timeout_seconds() << ")";
          }
        }
      }
    }
  }
}

}  // namespace psrv
