#include "coordinator/worker_sets.h"

#include <glog/logging.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/job_spec.h"

namespace psrv {
namespace {

// The first error of `results`, or OK.
absl::Status FirstError(const std::vector<absl::Status>& results) {
  for (const absl::Status& result : results) {
    if (!result.ok()) return result;
  }
  return absl::OkStatus();
}

}  // namespace

std::vector<uint64_t> FromSteps(const Job& job) {
  std::vector<uint64_t> from_step(job.workers.size(), 0);
  for (size_t rank = 0; rank < job.workers.size(); ++rank) {
    if (job.workers[rank].empty()) {
      from_step[rank] = UINT64_MAX;
    } else if (static_cast<int>(rank) < job.status.workers_size()) {
      from_step[rank] = job.status.workers(rank).start_step();
    }
  }
  const uint32_t stages = PipelineStages(job.status.spec());
  if (stages == 1) return from_step;
  std::vector<uint64_t> groups(from_step.size() / stages, 0);
  for (size_t rank = 0; rank < from_step.size(); ++rank) {
    groups[rank / stages] = std::max(groups[rank / stages], from_step[rank]);
  }
  return groups;
}

void WorkerSets::SendWorkerSets(const CallRound& round) {
  absl::MutexLock lock(&cluster_.mu);
  if (!cluster_.options.set_workers) return;
  for (auto& [id, job] : cluster_.state.jobs) {
    if (job.status.state() != RUNNING || job.worker_set == job.worker_set_sent ||
        job.sending_worker_set) {
      continue;
    }
    WorkerSet set{id, job.worker_set, ServerAddresses(job.status), {}};  // Backups too: they
    set.request.set_job_id(id);                                         // may be promoted.
    for (uint64_t s : FromSteps(job)) set.request.add_from_step(s);
    job.sending_worker_set = cluster_.calls.Start([this, set] { Send(set); }, &round);
  }
}

void WorkerSets::Send(const WorkerSet& set) {
  const absl::Status status =
      FirstError(CallEach(set.addresses, [&](const std::string& address) {
        return cluster_.options.set_workers(address, set.request);
      }));
  if (!status.ok()) {
    LOG(WARNING) << "job " << set.job_id << ": telling the servers the new set of workers: "
                 << status << " (will retry)";
  }
  absl::MutexLock lock(&cluster_.mu);
  auto job = cluster_.state.jobs.find(set.job_id);
  if (job == cluster_.state.jobs.end()) return;
  job->second.sending_worker_set = false;
  if (status.ok()) {
    job->second.worker_set_sent = std::max(job->second.worker_set_sent, set.worker_set);
  }
}

void WorkerSets::FillVacantRanks(const CallRound& round) {
  absl::MutexLock lock(&cluster_.mu);
  for (const std::string& id : cluster_.state.job_order) {
    Job& job = cluster_.state.jobs[id];
    if (job.status.state() != RUNNING || job.filling || job.worker_set != job.worker_set_sent ||
        std::find(job.workers.begin(), job.workers.end(), "") == job.workers.end()) {
      continue;
    }
    Takeover takeover;
    if (!Reserve(&job, &takeover)) {
      if (PipelineStages(job.status.spec()) > 1) continue;  // A group needs P: maybe later.
      return;  // No idle worker.
    }
    job.filling = cluster_.calls.Start([this, takeover] { TakeOver(takeover); }, &round);
    return;
  }
}

bool WorkerSets::Reserve(Job* job, Takeover* takeover) {
  ClusterState& state = cluster_.state;
  const absl::Time now = state.Now();
  const uint32_t stages = PipelineStages(job->status.spec());
  // The ranks to fill: the first vacant one, or the first vacant pipeline group's (a group goes
  // vacant whole: failover.cc).
  const uint32_t first_vacant = static_cast<uint32_t>(
      std::find(job->workers.begin(), job->workers.end(), "") - job->workers.begin());
  const uint32_t first = first_vacant / stages * stages;
  std::vector<uint32_t> ranks;
  for (uint32_t rank = first; rank < first + stages; ++rank) {
    if (job->workers[rank].empty()) ranks.push_back(rank);
  }
  std::vector<std::string> idle;
  for (auto& [candidate, node] : state.nodes) {
    if (node.info.role() != WORKER || !node.job_id.empty() || node.hung || node.leaving ||
        state.HealthOf(node, now) != HEALTHY) {
      continue;
    }
    idle.push_back(candidate);
    if (idle.size() == ranks.size()) break;
  }
  if (idle.size() < ranks.size()) return false;
  for (size_t i = 0; i < ranks.size(); ++i) {
    Node& node = state.nodes[idle[i]];
    node.job_id = job->status.job_id();  // Reserved: no assignment until the rank is its.
    node.rank = ranks[i];
    state.SaveNode(idle[i]);
  }
  takeover->job_id = job->status.job_id();
  takeover->run = job->run;
  takeover->node_ids = idle;
  takeover->ranks = ranks;
  takeover->server_rank = first_vacant / stages;
  takeover->sync = job->status.spec().training().consistency() == SYNC;
  takeover->from_step = FromSteps(*job);
  takeover->addresses = ServerAddresses(job->status);
  // ASYNC: where the lost worker was.
  takeover->start_step = job->status.workers(first_vacant).step() + 1;
  return true;
}

void WorkerSets::TakeOver(Takeover takeover) {
  const absl::Status status = takeover.sync ? TellServers(&takeover) : absl::OkStatus();
  Finish(takeover, status);
}

absl::Status WorkerSets::TellServers(Takeover* takeover) {
  // A step no shard has applied yet (all are within one step of each other), so that every
  // shard waits for the new worker from the same step on.
  const ClusterOptions& options = cluster_.options;
  std::vector<absl::StatusOr<uint64_t>> versions =
      CallEach(takeover->addresses, [&](const std::string& address) -> absl::StatusOr<uint64_t> {
        if (!options.shard_version) return absl::UnimplementedError("no shard_version");
        return options.shard_version(address, takeover->job_id);
      });
  uint64_t version = 0;
  for (const absl::StatusOr<uint64_t>& v : versions) {
    if (!v.ok()) return v.status();
    version = std::max(version, *v);
  }
  takeover->start_step = version + 2;
  takeover->from_step[takeover->server_rank] = takeover->start_step;
  SetWorkersRequest request;
  request.set_job_id(takeover->job_id);
  for (uint64_t s : takeover->from_step) request.add_from_step(s);
  return FirstError(CallEach(takeover->addresses, [&](const std::string& address) {
    if (!options.set_workers) return absl::UnimplementedError("no set_workers");
    return options.set_workers(address, request);
  }));
}

void WorkerSets::Finish(const Takeover& takeover, const absl::Status& status) {
  absl::MutexLock lock(&cluster_.mu);
  ClusterState& state = cluster_.state;
  Job& job = state.jobs[takeover.job_id];
  job.filling = false;
  bool usable = status.ok() && StillRunning(job, takeover.run);
  for (size_t i = 0; usable && i < takeover.ranks.size(); ++i) {
    usable = job.workers[takeover.ranks[i]].empty() &&
             state.nodes.count(takeover.node_ids[i]) > 0;
  }
  if (!usable) {
    for (const std::string& node_id : takeover.node_ids) {
      auto node = state.nodes.find(node_id);
      if (node != state.nodes.end() && node->second.job_id == takeover.job_id) {
        node->second.job_id.clear();
        state.SaveNode(node_id);
      }
    }
    if (!status.ok()) {
      LOG(WARNING) << "job " << takeover.job_id << ": giving rank " << takeover.ranks[0]
                   << (takeover.ranks.size() > 1 ? " and its group" : "") << " to "
                   << takeover.node_ids[0] << ": " << status << " (will retry)";
      // A shard may have taken the new set: send the current one again.
      if (HasWorkerSet(job.status.spec())) ++job.worker_set;
    }
    return;
  }
  for (size_t i = 0; i < takeover.ranks.size(); ++i) {
    const uint32_t rank = takeover.ranks[i];
    job.workers[rank] = takeover.node_ids[i];
    job.done[rank] = false;
    WorkerProgress* progress = job.status.mutable_workers(rank);
    progress->set_worker_id(takeover.node_ids[i]);
    progress->set_vacant(false);
    progress->set_start_step(takeover.start_step);
    progress->set_step(takeover.start_step - 1);
  }
  // SSP: the servers learn the new rank's start step (where its clock starts) from the next set
  // sent (SYNC: TellServers sent it already).
  if (!takeover.sync && HasWorkerSet(job.status.spec())) ++job.worker_set;
  if (takeover.ranks.size() == 1) {
    job.status.set_message(absl::StrCat("worker ", takeover.node_ids[0], " took rank ",
                                        takeover.ranks[0], " over at step ",
                                        takeover.start_step));
  } else {
    job.status.set_message(absl::StrCat("pipeline group ", takeover.server_rank,
                                        " re-formed at step ", takeover.start_step, " by workers ",
                                        absl::StrJoin(takeover.node_ids, ", ")));
  }
  LOG(INFO) << "job " << takeover.job_id << ": " << job.status.message();
  state.Touch(&job);
}

}  // namespace psrv
