#include "coordinator/failover.h"

#include <glog/logging.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/job_spec.h"

namespace psrv {
namespace {

// A worker that reported step s had pulled the parameters after step s - 1: every promoted shard
// must have them. One that does not was a stale backup (its primary had dropped it): DATA_LOSS.
absl::StatusOr<PromoteResponse> CheckNotBehind(absl::StatusOr<PromoteResponse> promoted,
                                               uint64_t reported) {
  if (!promoted.ok()) return promoted;
  for (const PromotedShard& shard : promoted->shards()) {
    if (shard.version() + 1 < reported) {
      return absl::DataLossError(absl::StrCat(
          "the backup of ", shard.table(), " was behind (version ", shard.version(),
          ", workers at step ", reported, "): its primary had dropped it"));
    }
  }
  return promoted;
}

}  // namespace

void Failover::HandleLostNodes(const CallRound& round) {
  Drops drops;
  {
    absl::MutexLock lock(&cluster_.mu);
    for (auto& [id, job] : cluster_.state.jobs) {
      if (job.status.state() == RUNNING) HandleLosses(&job, LossesOf(job), &drops);
    }
  }
  // Promotions first: workers may already be retrying against the new shard map.
  SendPromotions(round);
  SendDrops(drops, round);
}

Failover::Losses Failover::LossesOf(const Job& job) {
  const absl::Time now = cluster_.state.Now();
  Losses losses;
  AddLostRanks(job, now, &losses);
  AddLostServers(job, now, &losses);
  return losses;
}

void Failover::AddLostRanks(const Job& job, absl::Time now, Losses* losses) {
  const ClusterState& state = cluster_.state;
  for (uint32_t rank = 0; rank < job.workers.size(); ++rank) {
    if (job.done[rank] || job.workers[rank].empty()) continue;  // Finished or vacant.
    auto node = state.nodes.find(job.workers[rank]);
    if (job.stalled_ranks.count(rank) > 0) {
      if (losses->rank_reason.empty()) {
        const uint32_t stages = PipelineStages(job.status.spec());
        losses->rank_reason = absl::StrCat(
            stages > 1 ? absl::StrCat("pipeline group ", rank / stages)
                       : absl::StrCat("worker ", job.workers[rank], " (rank ", rank, ")"),
            " pushed nothing for ", job.status.spec().training().step_timeout_seconds(),
            " s while its step waited (training.step_timeout_seconds)");
      }
      losses->ranks.push_back(rank);
      continue;
    }
    if (node != state.nodes.end() && state.HealthOf(node->second, now) != DEAD) continue;
    if (losses->rank_reason.empty()) {
      losses->rank_reason =
          absl::StrCat("worker ", job.workers[rank], " (rank ", rank, ") ",
                       node == state.nodes.end() ? "left" : "stopped sending heartbeats");
    }
    losses->ranks.push_back(rank);
  }
}

void Failover::AddLostServers(const Job& job, absl::Time now, Losses* losses) {
  const ClusterState& state = cluster_.state;
  for (const ShardAssignment& shard : job.status.shard_map().shards()) {
    for (const std::string& server : {shard.server_id(), shard.backup_server_id()}) {
      if (server.empty() || losses->servers.count(server) > 0) continue;
      auto node = state.nodes.find(server);
      if (node != state.nodes.end() && state.HealthOf(node->second, now) != DEAD) continue;
      losses->servers.insert(server);
      if (losses->server_reason.empty()) {
        losses->server_reason =
            absl::StrCat("server ", server, " ",
                         node == state.nodes.end() ? "left" : "stopped sending heartbeats");
      }
    }
  }
}

void Failover::HandleLosses(Job* job, Losses losses, Drops* drops) {
  const std::string& id = job->status.job_id();
  // Replicated shards fail over to their backups; the job carries on.
  if (!losses.servers.empty() && FailOverAll(job, losses.servers)) {
    job->status.set_message(
        absl::StrCat(losses.server_reason, "; its shards failed over to their backups"));
    LOG(WARNING) << "job " << id << ": " << job->status.message();
    losses.server_reason.clear();
  }
  if (losses.server_reason.empty() && losses.ranks.empty()) return;
  const ParallelismSpec& parallelism = job->status.spec().parallelism();
  const uint32_t stages = PipelineStages(job->status.spec());
  if (losses.server_reason.empty() && stages == 1 && VacateRanks(job, losses.ranks)) {
    job->status.set_message(absl::StrCat(losses.rank_reason, " at step ", job->status.step(),
                                         "; the job goes on without it until another worker "
                                         "takes its rank over"));
    LOG(WARNING) << "job " << id << ": " << job->status.message();
    return;
  }
  // A pipeline group cannot go on without a stage (and the servers' ranks are the groups): with
  // REFORM_GROUP the whole group goes vacant and the job goes on with the others until P idle
  // workers re-form it (worker_sets.cc); else, or with no other group, the job restarts from its
  // checkpoint on the workers it has.
  if (losses.server_reason.empty() && stages > 1 &&
      parallelism.on_stage_loss() != RESTART_FROM_CHECKPOINT) {
    std::set<uint32_t> groups;
    for (uint32_t rank : losses.ranks) groups.insert(rank / stages);
    std::vector<uint32_t> ranks;
    for (uint32_t group : groups) {
      for (uint32_t rank = group * stages; rank < (group + 1) * stages; ++rank) {
        if (!job->workers[rank].empty()) ranks.push_back(rank);
      }
    }
    if (VacateRanks(job, ranks)) {
      job->status.set_message(absl::StrCat(
          losses.rank_reason, " at step ", job->status.step(), "; its pipeline group",
          groups.size() > 1 ? "s " : " ", absl::StrJoin(groups, ", "),
          groups.size() > 1 ? " stop" : " stops",
          " and the job goes on with the others until idle workers re-form ",
          groups.size() > 1 ? "them" : "it"));
      LOG(WARNING) << "job " << id << ": " << job->status.message();
      return;
    }
  }
  const std::string reason =
      losses.server_reason.empty() ? losses.rank_reason : losses.server_reason;
  if (RestartFromCheckpoint(job, reason, drops)) {
    LOG(WARNING) << "job " << id << ": " << job->status.message();
  } else {
    cluster_.state.EndJob(job, FAILED, reason);
  }
}

bool Failover::FailOverAll(Job* job, const std::set<std::string>& server_ids) {
  const ShardMap before = job->status.shard_map();
  for (const std::string& server : server_ids) {
    if (!PromoteBackups(job, server)) {
      *job->status.mutable_shard_map() = before;
      return false;
    }
  }
  return true;
}

bool Failover::PromoteBackups(Job* job, const std::string& server_id) {
  if (!cluster_.options.promote) return false;
  ClusterState& state = cluster_.state;
  const absl::Time now = state.Now();
  ShardMap* map = job->status.mutable_shard_map();
  // Every shard the lost server is primary of needs a live backup, or nothing changes.
  std::string lost_address;
  for (const ShardAssignment& shard : map->shards()) {
    if (shard.server_id() != server_id) continue;
    lost_address = shard.server_address();
    auto backup = state.nodes.find(shard.backup_server_id());
    if (shard.backup_server_id().empty() || backup == state.nodes.end() ||
        state.HealthOf(backup->second, now) == DEAD) {
      return false;
    }
  }
  bool moved = false;
  for (ShardAssignment& shard : *map->mutable_shards()) {
    if (shard.server_id() == server_id) {
      shard.set_server_id(shard.backup_server_id());
      shard.set_server_address(shard.backup_address());
      shard.clear_backup_server_id();
      shard.clear_backup_address();
      shard.set_promoted_from(lost_address);
      moved = true;
    } else if (shard.backup_server_id() == server_id) {
      shard.clear_backup_server_id();  // Its primary drops the unreachable backup by itself.
      shard.clear_backup_address();
    }
  }
  if (moved) map->set_epoch(map->epoch() + 1);
  state.RemoveHostedJob(server_id, job->status.job_id());
  // Fencing: if the lost server was only frozen or cut off, it drops the job at its next
  // heartbeat instead of serving it next to the promoted primaries.
  auto lost = state.nodes.find(server_id);
  if (lost != state.nodes.end()) lost->second.deposed_jobs[job->status.job_id()] = false;
  state.Touch(job);
  return true;
}

bool Failover::VacateRanks(Job* job, const std::vector<uint32_t>& ranks) {
  size_t computing = 0;  // Ranks neither done, vacant, nor lost.
  for (uint32_t rank = 0; rank < job->workers.size(); ++rank) {
    computing += !job->done[rank] && !job->workers[rank].empty() &&
                 std::find(ranks.begin(), ranks.end(), rank) == ranks.end();
  }
  if (computing == 0) return false;
  ClusterState& state = cluster_.state;
  while (job->status.workers_size() < static_cast<int>(job->workers.size())) {
    job->status.add_workers()->set_rank(job->status.workers_size());
  }
  for (uint32_t rank : ranks) {
    auto node = state.nodes.find(job->workers[rank]);
    if (node != state.nodes.end() && node->second.job_id == job->status.job_id()) {
      node->second.job_id.clear();
      node->second.cancel = true;  // In case it is alive after all.
      // Hung (alive, but its step never came): no work for it until it reports again. Not so
      // for a stalled pipeline group, whose healthy stages are not told apart from the hung
      // one: they must stay free to re-form it (a stage that really hangs may be given the group
      // again, which then times out again).
      if (job->stalled_ranks.count(rank) > 0 && PipelineStages(job->status.spec()) == 1) {
        node->second.hung = true;
      }
      state.SaveNode(node->first, Save::kLater);  // With the job, by Touch.
    }
    job->workers[rank].clear();
    job->stalled_ranks.erase(rank);
    job->status.mutable_workers(rank)->set_vacant(true);
  }
  if (HasWorkerSet(job->status.spec())) ++job->worker_set;
  state.Touch(job);
  return true;
}

bool Failover::RestartFromCheckpoint(Job* job, const std::string& reason, Drops* drops) {
  ClusterState& state = cluster_.state;
  JobStatus& status = job->status;
  const CheckpointManifest* checkpoint = LatestGoodCheckpoint(status);
  if (status.spec().training().consistency() != SYNC || checkpoint == nullptr ||
      !cluster_.options.drop_job || status.restarts() >= cluster_.options.max_restarts) {
    return false;
  }
  const std::string& job_id = status.job_id();
  for (const std::string& address : ServerAddresses(status)) drops->push_back({address, job_id});
  for (const ShardAssignment& shard : status.shard_map().shards()) {
    state.RemoveHostedJob(shard.server_id(), job_id);
    state.RemoveHostedJob(shard.backup_server_id(), job_id);
  }
  for (const std::string& worker : job->workers) {
    auto node = state.nodes.find(worker);
    if (node != state.nodes.end() && node->second.job_id == job_id) {
      node->second.job_id.clear();
      node->second.cancel = true;
      state.SaveNode(worker, Save::kLater);  // With the job, by Touch.
    }
  }
  status.set_restarts(status.restarts() + 1);
  status.set_message(absl::StrCat("restarting from the checkpoint at step ", checkpoint->step(),
                                  " (restart ", status.restarts(), "): ", reason));
  status.set_state(PENDING);
  status.clear_shard_map();
  status.clear_workers();
  status.set_step(checkpoint->step());
  // The curves continue from the checkpoint: what the lost run did after it is redone.
  auto keep_until = [step = checkpoint->step()](auto* points) {
    while (!points->empty() && points->rbegin()->step() > step) points->RemoveLast();
  };
  keep_until(status.mutable_loss_history());
  keep_until(status.mutable_val_history());
  job->workers.assign(job->workers.size(), "");
  job->done.assign(job->done.size(), false);
  job->last_checkpoint_step = checkpoint->step();
  job->worker_set_sent = job->worker_set;  // New servers start with every rank.
  state.Touch(job);
  return true;
}

void Failover::SendPromotions(const CallRound& round) {
  absl::MutexLock lock(&cluster_.mu);
  if (!cluster_.options.promote) return;
  for (auto& [id, job] : cluster_.state.jobs) {
    if (job.status.state() != RUNNING || job.promoting) continue;
    std::set<std::pair<std::string, std::string>> pending;  // (address, failed address)
    for (const ShardAssignment& shard : job.status.shard_map().shards()) {
      if (!shard.promoted_from().empty()) {
        pending.emplace(shard.server_address(), shard.promoted_from());
      }
    }
    if (pending.empty()) continue;
    Promotions promotions{id, job.run, {}, {}, 0};
    for (const auto& [address, failed] : pending) {
      promotions.addresses.push_back(address);
      promotions.failed.push_back(failed);
    }
    for (const WorkerProgress& w : job.status.workers()) {
      if (!w.vacant()) promotions.reported = std::max<uint64_t>(promotions.reported, w.step());
    }
    job.promoting = cluster_.calls.Start(
        [this, promotions, round] { Promote(promotions, round); }, &round);
  }
}

void Failover::Promote(const Promotions& promotions, const CallRound& round) {
  const std::vector<absl::StatusOr<PromoteResponse>> replies =
      CallAll(promotions.addresses.size(), [&](size_t i) {
        PromoteRequest request;
        request.set_job_id(promotions.job_id);
        request.set_failed_address(promotions.failed[i]);
        return CheckNotBehind(cluster_.options.promote(promotions.addresses[i], request),
                              promotions.reported);
      });
  Drops drops;
  {
    absl::MutexLock lock(&cluster_.mu);
    auto job = cluster_.state.jobs.find(promotions.job_id);
    if (job == cluster_.state.jobs.end()) return;
    job->second.promoting = false;
    for (size_t k = 0; k < replies.size(); ++k) {
      if (!StillRunning(job->second, promotions.run)) break;
      ApplyReply(promotions, k, replies[k], &job->second, &drops);
    }
  }
  SendDrops(drops, round);
}

void Failover::ApplyReply(const Promotions& promotions, size_t i,
                          const absl::StatusOr<PromoteResponse>& reply, Job* job,
                          Drops* drops) {
  const std::string& address = promotions.addresses[i];
  const std::string& failed = promotions.failed[i];
  if (reply.ok()) {
    LOG(INFO) << "job " << promotions.job_id << ": " << reply->shards_size() << " shard(s) on "
              << address << " promoted to primary";
    for (ShardAssignment& shard : *job->status.mutable_shard_map()->mutable_shards()) {
      if (shard.server_address() == address && shard.promoted_from() == failed) {
        shard.clear_promoted_from();
      }
    }
    cluster_.state.Touch(job);
    return;
  }
  if (absl::IsUnavailable(reply.status()) || absl::IsDeadlineExceeded(reply.status())) {
    // Its server may be gone too: the next Tick finds out (and fails it over or restarts).
    LOG(WARNING) << "job " << promotions.job_id << ": promoting the backups on " << address
                 << ": " << reply.status() << " (will retry)";
    return;
  }
  // The backups cannot take over: restart from a checkpoint or fail.
  const std::string reason = absl::StrCat("server ", failed, " was lost and its backups on ",
                                          address, " could not take over: ",
                                          reply.status().message());
  LOG(WARNING) << "job " << promotions.job_id << ": " << reason;
  if (!RestartFromCheckpoint(job, reason, drops)) cluster_.state.EndJob(job, FAILED, reason);
}

void Failover::SendDrops(const Drops& drops, const CallRound& round) {
  for (const auto& [address, job_id] : drops) {
    cluster_.calls.Start(
        [this, address = address, job_id = job_id] {
          absl::Status status = cluster_.options.drop_job(address, job_id);
          if (!status.ok()) {
            LOG(WARNING) << "dropping " << job_id << " on " << address << ": " << status;
          }
        },
        &round);
  }
}

}  // namespace psrv
