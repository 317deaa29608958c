#include "coordinator/backups.h"

#include <glog/logging.h>

#include <algorithm>
#include <set>

#include "common/job_spec.h"

namespace psrv {

void BackupRepair::ForgetDroppedBackups(const CallRound& round) {
  absl::MutexLock lock(&cluster_.mu);
  const absl::Time now = cluster_.state.Now();
  if (!cluster_.options.server_status || now - last_check_ < absl::Seconds(1)) return;
  last_check_ = now;
  for (auto& [id, job] : cluster_.state.jobs) {
    if (job.status.state() != RUNNING || job.status.spec().replicas() < 2 ||
        job.checking_backups) {
      continue;
    }
    std::set<std::string> primaries;
    for (const ShardAssignment& shard : job.status.shard_map().shards()) {
      if (!shard.backup_address().empty()) primaries.insert(shard.server_address());
    }
    if (primaries.empty()) continue;
    job.checking_backups = cluster_.calls.Start(
        [this, id = id, run = job.run, primaries = std::vector<std::string>(
                                           primaries.begin(), primaries.end())] {
          CheckPrimaries(id, run, primaries);
        },
        &round);
  }
}

void BackupRepair::CheckPrimaries(const std::string& job_id, uint64_t run,
                                  const std::vector<std::string>& primaries) {
  const std::vector<absl::StatusOr<ServerStatus>> statuses =
      CallEach(primaries, [&](const std::string& address) {
        return cluster_.options.server_status(address, job_id);
      });
  absl::MutexLock lock(&cluster_.mu);
  auto job = cluster_.state.jobs.find(job_id);
  if (job == cluster_.state.jobs.end()) return;
  job->second.checking_backups = false;
  if (!StillRunning(job->second, run)) return;
  bool changed = false;
  for (size_t i = 0; i < primaries.size(); ++i) {
    // Lost servers are the fail-over's business.
    if (statuses[i].ok()) changed |= ForgetDropped(primaries[i], *statuses[i], &job->second);
  }
  if (changed) cluster_.state.Touch(&job->second);
}

bool BackupRepair::ForgetDropped(const std::string& address, const ServerStatus& held,
                                 Job* job) {
  bool changed = false;
  for (ShardAssignment& shard : *job->status.mutable_shard_map()->mutable_shards()) {
    if (shard.server_address() != address || shard.backup_address().empty()) continue;
    for (const ShardStatus& copy : held.shards()) {
      if (copy.role() != PRIMARY || copy.table() != shard.table() ||
          copy.range().begin() != shard.range().begin()) {
        continue;
      }
      if (copy.backup_lost() || copy.backup_address() != shard.backup_address()) {
        LOG(WARNING) << "job " << job->status.job_id() << ": " << shard.table() << " on "
                     << address << " has no backup on " << shard.backup_address()
                     << " any more (" << copy.backup_error() << "); it gets a new one";
        shard.clear_backup_server_id();
        shard.clear_backup_address();
        changed = true;
      }
    }
  }
  return changed;
}

void BackupRepair::RepairBackups() {
  absl::MutexLock lock(&cluster_.mu);
  if (!cluster_.options.add_backup) return;
  ClusterState& state = cluster_.state;
  for (const std::string& id : state.job_order) {
    Job& job = state.jobs[id];
    if (job.status.state() != RUNNING || job.status.spec().replicas() < 2 || job.adding_backup) {
      continue;
    }
    for (const ShardAssignment& shard : job.status.shard_map().shards()) {
      if (!shard.backup_server_id().empty()) continue;
      const auto [backup_id, backup_address] = PickBackupServer(job, shard);
      if (backup_id.empty()) return;  // No server to put it on: later.
      AddBackupRequest request;
      request.set_job_id(id);
      request.set_table(shard.table());
      *request.mutable_range() = shard.range();
      request.set_backup_address(backup_address);
      job.adding_backup = cluster_.calls.Start(
          [this, request, primary = shard.server_address(), backup_id = backup_id, run = job.run] {
            AddBackup(request, primary, backup_id, run);
          });
      break;
    }
  }
}

std::pair<std::string, std::string> BackupRepair::PickBackupServer(const Job& job,
                                                                   const ShardAssignment& shard) {
  const ClusterState& state = cluster_.state;
  const absl::Time now = state.Now();
  const std::vector<std::string> of_the_job = ServerAddresses(job.status);
  std::string backup_id, backup_address;
  for (const auto& [node_id, node] : state.nodes) {
    if (node.info.role() != SERVER || node_id == shard.server_id() ||
        state.HealthOf(node, now) != HEALTHY ||
        node.deposed_jobs.count(job.status.job_id()) > 0) {  // Still dropping the job.
      continue;
    }
    const bool own = std::find(of_the_job.begin(), of_the_job.end(), node.info.address()) !=
                     of_the_job.end();
    if (backup_id.empty() || own) {
      backup_id = node_id;
      backup_address = node.info.address();
      if (own) break;
    }
  }
  return {backup_id, backup_address};
}

void BackupRepair::AddBackup(const AddBackupRequest& request, const std::string& primary_address,
                             const std::string& backup_id, uint64_t run) {
  absl::StatusOr<AddBackupResponse> added = cluster_.options.add_backup(primary_address, request);
  absl::MutexLock lock(&cluster_.mu);
  ClusterState& state = cluster_.state;
  auto job = state.jobs.find(request.job_id());
  if (job == state.jobs.end()) return;
  job->second.adding_backup = false;
  if (!added.ok()) {
    LOG(WARNING) << "job " << request.job_id() << ": a backup of " << request.table() << " on "
                 << request.backup_address() << ": " << added.status() << " (will retry)";
    return;
  }
  if (!StillRunning(job->second, run)) return;
  for (ShardAssignment& shard : *job->second.status.mutable_shard_map()->mutable_shards()) {
    if (shard.table() == request.table() && shard.range().begin() == request.range().begin() &&
        shard.server_address() == primary_address) {
      shard.set_backup_server_id(backup_id);
      shard.set_backup_address(request.backup_address());
    }
  }
  state.AddHostedJob(backup_id, request.job_id());
  LOG(INFO) << "job " << request.job_id() << ": " << request.table() << " ["
            << request.range().begin() << ", " << request.range().end() << ") backed up on "
            << request.backup_address() << " from version " << added->version();
  // The copy carries the primary's set of workers as it was when taken; a change sent meanwhile
  // may have missed it: send the current one again.
  if (HasWorkerSet(job->second.status.spec())) ++job->second.worker_set;
  state.Touch(&job->second);
}

}  // namespace psrv
