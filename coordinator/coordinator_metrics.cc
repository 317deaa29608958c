#include "coordinator/coordinator_metrics.h"

#include <map>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/job_spec.h"

namespace psrv {
namespace {

void Collect(ClusterCoordinator* cluster, absl::Time now, CollectedMetrics* out) {
  const ListNodesResponse nodes = cluster->ListNodes();
  const ListJobsResponse jobs = cluster->ListJobs();

  CollectedMetrics::Family* by_health = out->AddGauge(
      "psrv_nodes", "Registered nodes by role and health.", {"role", "health"});
  std::map<std::pair<std::string, std::string>, int> counts;
  for (NodeRole role : {SERVER, WORKER}) {
    for (NodeHealth health : {HEALTHY, SUSPECT, DEAD}) {
      counts[{NodeRole_Name(role), NodeHealth_Name(health)}] = 0;
    }
  }
  CollectedMetrics::Family* heartbeat_age =
      out->AddGauge("psrv_node_heartbeat_age_seconds",
                    "Seconds since each node's last heartbeat.", {"node_id", "role", "address"});
  for (const NodeInfo& node : nodes.nodes()) {
    ++counts[{NodeRole_Name(node.role()), NodeHealth_Name(node.health())}];
    heartbeat_age->Add(
        {node.node_id(), NodeRole_Name(node.role()), node.address()},
        absl::ToDoubleSeconds(now - absl::FromUnixMillis(node.last_heartbeat_ms())));
  }
  for (const auto& [key, count] : counts) by_health->Add({key.first, key.second}, count);

  CollectedMetrics::Family* by_state =
      out->AddGauge("psrv_jobs", "Jobs by state (every job the coordinator knows).", {"state"});
  std::map<std::string, int> states;
  for (JobState state : {PENDING, RUNNING, SUCCEEDED, FAILED, CANCELLED}) {
    states[JobState_Name(state)] = 0;
  }
  for (const JobStatus& job : jobs.jobs()) ++states[JobState_Name(job.state())];
  for (const auto& [state, count] : states) by_state->Add({state}, count);

  const std::vector<std::string> job_label = {"job"};
  CollectedMetrics::Family* info = out->AddGauge(
      "psrv_job_info", "1 per job, labelled with its name and state.", {"job", "name", "state"});
  CollectedMetrics::Family* step =
      out->AddGauge("psrv_job_step", "Lowest step reached by the job's workers.", job_label);
  CollectedMetrics::Family* steps =
      out->AddGauge("psrv_job_steps", "Steps the job trains for (its spec).", job_label);
  CollectedMetrics::Family* loss = out->AddGauge(
      "psrv_job_loss", "Mean of the workers' latest training losses, nats per token.", job_label);
  CollectedMetrics::Family* val_loss = out->AddGauge(
      "psrv_job_val_loss", "Latest validation loss, nats per token (0 before the first).",
      job_label);
  CollectedMetrics::Family* tokens = out->AddGauge(
      "psrv_job_tokens_per_second", "Training tokens per second, summed over workers.",
      job_label);
  CollectedMetrics::Family* elapsed = out->AddGauge(
      "psrv_job_elapsed_seconds", "Seconds since the job started running (to its end, if over).",
      job_label);
  const std::vector<std::string> worker_labels = {"job", "rank"};
  CollectedMetrics::Family* restarts = out->AddGauge(
      "psrv_job_restarts", "Times the job restarted from a checkpoint after losing a server.",
      job_label);
  CollectedMetrics::Family* failovers = out->AddGauge(
      "psrv_job_failovers", "Times the job's shards failed over to their backups (shard map epoch).",
      job_label);
  CollectedMetrics::Family* vacant = out->AddGauge(
      "psrv_job_vacant_ranks", "Ranks whose worker was lost and not taken over yet.", job_label);
  CollectedMetrics::Family* unreplicated = out->AddGauge(
      "psrv_job_unreplicated_shards",
      "Shards of a job with replicas = 2 that have no backup now (lost, not replaced yet).",
      job_label);
  CollectedMetrics::Family* worker_step = out->AddGauge(
      "psrv_job_worker_step", "Last step each worker reported.", worker_labels);
  CollectedMetrics::Family* worker_tokens = out->AddGauge(
      "psrv_job_worker_tokens_per_second",
      "Each worker's training tokens per second over its last reporting window.", worker_labels);
  CollectedMetrics::Family* worker_step_seconds = out->AddGauge(
      "psrv_job_worker_step_seconds",
      "Each worker's mean step time over its last reporting window.", worker_labels);
  CollectedMetrics::Family* worker_loss = out->AddGauge(
      "psrv_job_worker_loss", "Each worker's mean training loss over its last reporting window.",
      worker_labels);

  int ended = 0;
  for (int i = jobs.jobs_size() - 1; i >= 0; --i) {  // Newest first.
    const JobStatus& job = jobs.jobs(i);
    if (IsTerminal(job.state()) && ++ended > kEndedJobsInMetrics) continue;
    const std::string& id = job.job_id();
    info->Add({id, job.spec().name(), JobState_Name(job.state())}, 1);
    step->Add({id}, static_cast<double>(job.step()));
    steps->Add({id}, static_cast<double>(job.spec().training().steps()));
    loss->Add({id}, job.loss());
    val_loss->Add({id}, job.val_loss());
    tokens->Add({id}, job.tokens_per_sec());
    if (job.start_time_ms() != 0) {
      const absl::Time end =
          job.end_time_ms() != 0 ? absl::FromUnixMillis(job.end_time_ms()) : now;
      elapsed->Add({id}, absl::ToDoubleSeconds(end - absl::FromUnixMillis(job.start_time_ms())));
    }
    restarts->Add({id}, job.restarts());
    failovers->Add({id}, static_cast<double>(job.shard_map().epoch()));
    int vacant_ranks = 0;
    for (const WorkerProgress& w : job.workers()) vacant_ranks += w.vacant();
    vacant->Add({id}, vacant_ranks);
    if (job.spec().replicas() >= 2 && job.state() == RUNNING) {
      int without_backup = 0;
      for (const ShardAssignment& shard : job.shard_map().shards()) {
        without_backup += shard.backup_address().empty();
      }
      unreplicated->Add({id}, without_backup);
    }
    for (const WorkerProgress& w : job.workers()) {
      const std::vector<std::string> labels = {id, absl::StrCat(w.rank())};
      worker_step->Add(labels, static_cast<double>(w.step()));
      worker_tokens->Add(labels, w.tokens_per_sec());
      worker_step_seconds->Add(labels, w.step_seconds());
      worker_loss->Add(labels, w.loss());
    }
  }
}

}  // namespace

void AddCoordinatorMetrics(ClusterCoordinator* cluster, MetricsRegistry* registry,
                           std::function<absl::Time()> clock) {
  registry->AddCollector(
      [cluster, clock](CollectedMetrics* out) { Collect(cluster, clock(), out); });
}

}  // namespace psrv
