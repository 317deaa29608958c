#include "coordinator/cluster_state.h"

#include <glog/logging.h>

#include <algorithm>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/job_spec.h"
#include "coordinator/state_records.h"

namespace psrv {

int64_t Millis(absl::Time t) { return absl::ToUnixMillis(t); }

std::string NodeIdPrefix(NodeRole role) { return role == SERVER ? "server-" : "worker-"; }

std::optional<uint64_t> NodeNumber(const std::string& id, NodeRole role) {
  const std::string prefix = NodeIdPrefix(role);
  uint64_t number;
  if (id.size() <= prefix.size() || id.compare(0, prefix.size(), prefix) != 0 ||
      !absl::SimpleAtoi(id.substr(prefix.size()), &number) ||
      absl::StrCat(prefix, number) != id) {
    return std::nullopt;
  }
  return number;
}

const CheckpointManifest* LatestGoodCheckpoint(const JobStatus& status) {
  for (int i = status.checkpoints_size() - 1; i >= 0; --i) {
    if (status.checkpoints(i).bad_reason().empty()) return &status.checkpoints(i);
  }
  return nullptr;
}

std::vector<std::string> ServerAddresses(const JobStatus& status) {
  std::set<std::string> addresses;
  for (const ShardAssignment& shard : status.shard_map().shards()) {
    addresses.insert(shard.server_address());
    if (!shard.backup_address().empty()) addresses.insert(shard.backup_address());
  }
  return {addresses.begin(), addresses.end()};
}

NodeHealth ClusterState::HealthOf(const Node& node, absl::Time now) const {
  if (node.unreachable) return DEAD;
  const absl::Duration silent = now - node.last_heartbeat;
  if (silent < 3 * options.heartbeat_interval && !node.unconfirmed) return HEALTHY;
  if (silent < 10 * options.heartbeat_interval) return SUSPECT;
  return DEAD;
}

absl::StatusOr<Job*> ClusterState::FindJob(const std::string& job_id) {
  auto it = jobs.find(job_id);
  if (it == jobs.end()) return absl::NotFoundError(absl::StrCat("no job \"", job_id, "\""));
  return &it->second;
}

void ClusterState::Touch(Job* job, Save save) {
  job->revision = ++revision;
  if (options.state == nullptr) return;
  unsaved_jobs.insert(job->status.job_id());
  if (save == Save::kNow) SaveChanges();
}

void ClusterState::SaveNode(const std::string& node_id, Save save) {
  if (options.state == nullptr) return;
  unsaved_nodes.insert(node_id);
  if (save == Save::kNow) SaveChanges();
}

void ClusterState::SaveChanges() {
  if (options.state == nullptr || (unsaved_jobs.empty() && unsaved_nodes.empty())) return;
  // Under the coordinator's lock, so that writes land in the order of the changes. A WAL commit
  // does not wait for the disk: this is fast.
  absl::Status status = options.state->Write(UnsavedRecords(*this));
  if (!status.ok()) {
    LOG_EVERY_N(ERROR, 100) << "saving the coordinator's state (kept in memory; retried every "
                               "tick): "
                            << status;
    return;
  }
  unsaved_jobs.clear();
  unsaved_nodes.clear();
}

void ClusterState::EndJob(Job* job, JobState state, const std::string& message) {
  job->status.set_state(state);
  job->status.set_message(message);
  job->status.set_end_time_ms(Millis(Now()));
  job->starting = false;
  Touch(job);
}

void ClusterState::AddHostedJob(const std::string& node_id, const std::string& job_id) {
  auto node = nodes.find(node_id);
  if (node == nodes.end()) return;
  std::vector<std::string>& hosted = node->second.hosted_jobs;
  if (std::find(hosted.begin(), hosted.end(), job_id) == hosted.end()) hosted.push_back(job_id);
}

void ClusterState::RemoveHostedJob(const std::string& node_id, const std::string& job_id) {
  auto node = nodes.find(node_id);
  if (node == nodes.end()) return;
  std::vector<std::string>& hosted = node->second.hosted_jobs;
  hosted.erase(std::remove(hosted.begin(), hosted.end(), job_id), hosted.end());
}

void ClusterState::Reattach(Node* node) {
  const std::string& id = node->info.node_id();
  node->hosted_jobs.clear();
  for (const std::string& job_id : job_order) {
    for (const ShardAssignment& shard : jobs.at(job_id).status.shard_map().shards()) {
      if (shard.server_id() == id || shard.backup_server_id() == id) {
        node->hosted_jobs.push_back(job_id);
        break;
      }
    }
  }
  if (node->info.role() == WORKER) ReattachWorker(node);
}

void ClusterState::ReattachWorker(Node* node) {
  const std::string& id = node->info.node_id();
  // A job that ended is kept: the next heartbeat tells the worker (to stop, if it failed).
  // (A reservation for a vacant rank, saved before the rank became the node's, is not kept.)
  auto assigned = jobs.find(node->job_id);
  if (assigned != jobs.end() && assigned->second.status.state() != PENDING &&
      (IsTerminal(assigned->second.status.state()) ||
       (node->rank < assigned->second.workers.size() &&
        assigned->second.workers[node->rank] == id))) {
    return;
  }
  node->job_id.clear();
  node->rank = 0;
  for (const std::string& job_id : job_order) {
    const Job& job = jobs.at(job_id);
    if (job.status.state() != RUNNING) continue;
    for (uint32_t rank = 0; rank < job.workers.size(); ++rank) {
      if (job.workers[rank] == id && !job.done[rank]) {
        node->job_id = job_id;
        node->rank = rank;
        return;
      }
    }
  }
}

}  // namespace psrv
