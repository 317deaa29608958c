#include "coordinator/scheduler.h"

#include <glog/logging.h>

#include <algorithm>
#include <functional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/format.h"
#include "common/job_spec.h"
#include "common/model_layout.h"
#include "common/status_macros.h"

namespace psrv {
namespace {

// A restarted job whose checkpoint is bad falls back to the previous one; one that met an
// unreachable server tries again.
bool Retryable(const absl::Status& status) {
  switch (status.code()) {
    case absl::StatusCode::kDataLoss:
    case absl::StatusCode::kNotFound:
    case absl::StatusCode::kUnavailable:
    case absl::StatusCode::kDeadlineExceeded:
      return true;
    default:
      return false;
  }
}

std::vector<std::string> Keys(const std::map<std::string, CreateShardsRequest>& requests) {
  std::vector<std::string> keys;
  for (const auto& [key, value] : requests) keys.push_back(key);
  return keys;
}

}  // namespace

void Scheduler::StartJobs(const CallRound& round) {
  absl::MutexLock lock(&cluster_.mu);
  for (const std::string& id : cluster_.state.job_order) {
    Job& job = cluster_.state.jobs[id];
    if (job.status.state() != PENDING || job.starting) continue;
    Placement placement;
    placement.job_id = id;
    if (!PickNodes(job, &placement)) continue;
    if (absl::Status planned = PlanJobShards(job, &placement); !planned.ok()) {
      cluster_.state.EndJob(&job, FAILED, std::string(planned.message()));
      continue;
    }
    AddRestoreFiles(job, &placement);
    Reserve(&job, placement);
    job.starting = cluster_.calls.Start([this, placement] { Create(placement); }, &round);
    return;
  }
}

bool Scheduler::PickNodes(const Job& job, Placement* placement) {
  const ClusterState& state = cluster_.state;
  const absl::Time now = state.Now();
  const JobSpec& spec = job.status.spec();
  for (const auto& [node_id, node] : state.nodes) {
    if (state.HealthOf(node, now) != HEALTHY) continue;
    if (node.deposed_jobs.count(job.status.job_id()) > 0) continue;  // Still dropping it.
    if (node.info.role() == SERVER && placement->servers.size() < spec.num_servers()) {
      placement->servers.push_back({node_id, node.info.address()});
    } else if (node.info.role() == WORKER && node.job_id.empty() && !node.hung && !node.leaving &&
               placement->workers.size() < spec.num_workers()) {
      placement->workers.push_back(node_id);
    }
  }
  return placement->servers.size() >= spec.num_servers() &&
         placement->workers.size() >= spec.num_workers();
}

absl::Status Scheduler::PlanJobShards(const Job& job, Placement* placement) {
  const JobSpec& spec = job.status.spec();
  absl::StatusOr<std::vector<TableSpec>> tables =
      ModelTables(spec.model(), spec.training().seed());
  if (!tables.ok()) return tables.status();
  ShardMap& shard_map = placement->shard_map;
  shard_map.set_job_id(placement->job_id);
  for (const TableSpec& t : *tables) *shard_map.add_tables() = t;
  std::map<std::string, const TableSpec*> by_name;
  for (const TableSpec& t : shard_map.tables()) by_name[t.name()] = &t;
  auto request_for = [&](const std::string& address) -> CreateShardsRequest& {
    CreateShardsRequest& request = placement->requests[address];
    request.set_job_id(placement->job_id);
    request.set_consistency(spec.training().consistency());
    request.set_staleness(spec.training().staleness());
    request.set_aggregate_first(spec.training().aggregate_first());
    *request.mutable_optimizer() = spec.training().optimizer();
    request.set_num_workers(DataGroups(spec));  // The pushers per key: one per pipeline group.
    request.set_init_from_safetensors(spec.init_from());
    return request;
  };
  const std::vector<ServerSlot>& servers = placement->servers;
  // Pipelines: every stacked table cut per layer, so that no shard straddles two stages.
  const uint64_t min_layer_elements = PipelineStages(spec) > 1 ? 1 : 16384;
  for (ShardAssignment& shard : PlanShards(*tables, servers, 4096, min_layer_elements)) {
    ShardSpec* s = request_for(shard.server_address()).add_shards();
    *s->mutable_table() = *by_name[shard.table()];
    *s->mutable_range() = shard.range();
    if (spec.replicas() >= 2) {
      // The backup on the next server of the job (round robin), created like its primary.
      size_t i = 0;
      while (servers[i].id != shard.server_id()) ++i;
      const ServerSlot& backup = servers[(i + 1) % servers.size()];
      shard.set_backup_server_id(backup.id);
      shard.set_backup_address(backup.address);
      s->set_backup_address(backup.address);
      ShardSpec* b = request_for(backup.address).add_shards();
      *b->mutable_table() = s->table();
      *b->mutable_range() = shard.range();
      b->set_role(BACKUP);
      b->set_primary_address(shard.server_address());
    }
    *shard_map.add_shards() = std::move(shard);
  }
  return absl::OkStatus();
}

void Scheduler::AddRestoreFiles(const Job& job, Placement* placement) {
  const CheckpointManifest* checkpoint = LatestGoodCheckpoint(job.status);
  if (job.status.restarts() == 0 || checkpoint == nullptr) return;
  placement->restore_step = checkpoint->step();
  for (const ShardAssignment& shard : placement->shard_map.shards()) {
    const CheckpointFile* file = nullptr;
    for (const CheckpointFile& f : checkpoint->files()) {
      if (f.table() == shard.table() && f.range().begin() == shard.range().begin() &&
          f.range().end() == shard.range().end()) {
        file = &f;
      }
    }
    if (file == nullptr) {
      placement->restore_error = absl::StrCat("has no file for table ", shard.table(), " [",
                                              shard.range().begin(), ", ", shard.range().end(),
                                              ")");
      return;
    }
    *placement->requests[shard.server_address()].add_restore_from() = *file;
    if (!shard.backup_address().empty()) {
      *placement->requests[shard.backup_address()].add_restore_from() = *file;
    }
  }
}

void Scheduler::Reserve(Job* job, const Placement& placement) {
  for (uint32_t rank = 0; rank < placement.workers.size(); ++rank) {
    Node& node = cluster_.state.nodes[placement.workers[rank]];
    node.job_id = placement.job_id;
    node.rank = rank;
    job->workers[rank] = placement.workers[rank];
  }
}

void Scheduler::Create(const Placement& placement) {
  const std::string& job_id = placement.job_id;
  const std::vector<std::string> addresses = Keys(placement.requests);
  // A restarted job may have left shards on a server chosen again (one that came back after a
  // DropJob could not reach it): they would be kept instead of restored. Drop them first.
  if (placement.restore_step > 0) Drop(job_id, addresses, " before restoring");
  absl::Status status;
  std::vector<std::string> created;  // Addresses.
  if (!placement.restore_error.empty()) {
    status = absl::DataLossError(placement.restore_error);
  } else {
    const std::vector<absl::Status> results = CallEach(addresses, [&](const std::string& address) {
      return cluster_.options.create_shards(address, placement.requests.at(address));
    });
    for (size_t i = 0; i < addresses.size(); ++i) {
      if (results[i].ok()) {
        created.push_back(addresses[i]);
      } else if (status.ok()) {
        status = absl::Status(results[i].code(), absl::StrCat("creating shards on ", addresses[i],
                                                              ": ", results[i].message()));
      }
    }
  }
  // Either way the shards created so far go.
  const bool retry = placement.restore_step > 0 && Retryable(status);
  if (retry) Drop(job_id, created, "");
  absl::MutexLock lock(&cluster_.mu);
  Job& job = cluster_.state.jobs[job_id];
  if (!job.starting) return;  // Cancelled meanwhile.
  job.starting = false;
  if (status.ok()) {
    Started(&job, placement);
  } else {
    StartFailed(&job, placement, status, retry);
  }
}

void Scheduler::Drop(const std::string& job_id, const std::vector<std::string>& addresses,
                     const std::string& why) {
  if (!cluster_.options.drop_job) return;
  const std::vector<absl::Status> dropped = CallEach(addresses, [&](const std::string& address) {
    return cluster_.options.drop_job(address, job_id);
  });
  for (size_t i = 0; i < addresses.size(); ++i) {
    if (!dropped[i].ok() && dropped[i].code() != absl::StatusCode::kNotFound) {
      LOG(WARNING) << "dropping " << job_id << " on " << addresses[i] << why << ": "
                   << dropped[i];
    }
  }
}

void Scheduler::Started(Job* job, Placement placement) {
  ClusterState& state = cluster_.state;
  const std::string& job_id = placement.job_id;
  job->status.set_state(RUNNING);
  ++job->run;
  if (placement.restore_step > 0) {
    job->status.set_resumed_from_step(placement.restore_step);
    job->status.set_message(absl::StrCat("resumed from the checkpoint at step ",
                                         placement.restore_step, " (restart ",
                                         job->status.restarts(), ")"));
  }
  job->status.set_start_time_ms(Millis(state.Now()));
  for (const ShardAssignment& shard : placement.shard_map.shards()) {
    state.AddHostedJob(shard.server_id(), job_id);
    state.AddHostedJob(shard.backup_server_id(), job_id);
  }
  *job->status.mutable_shard_map() = std::move(placement.shard_map);
  for (uint32_t rank = 0; rank < job->workers.size(); ++rank) {
    WorkerProgress* w = job->status.add_workers();
    w->set_rank(rank);
    w->set_worker_id(job->workers[rank]);
    w->set_step(placement.restore_step);
    state.SaveNode(job->workers[rank], Save::kLater);  // With the job, by Touch.
  }
  state.Touch(job);
}

void Scheduler::StartFailed(Job* job, const Placement& placement, const absl::Status& status,
                            bool retry) {
  ClusterState& state = cluster_.state;
  for (const std::string& node_id : job->workers) {
    auto node = state.nodes.find(node_id);
    if (node == state.nodes.end()) continue;
    node->second.job_id.clear();
    state.SaveNode(node_id, Save::kLater);  // With the job, by EndJob or Touch.
  }
  job->workers.assign(job->workers.size(), "");
  if (!retry) {
    state.EndJob(job, FAILED, std::string(status.message()));
    return;
  }
  if (status.code() == absl::StatusCode::kDataLoss ||
      status.code() == absl::StatusCode::kNotFound) {
    for (CheckpointManifest& checkpoint : *job->status.mutable_checkpoints()) {
      if (checkpoint.step() == placement.restore_step) {
        checkpoint.set_bad_reason(std::string(status.message()));
      }
    }
    LOG(WARNING) << "job " << placement.job_id << ": the checkpoint at step "
                 << placement.restore_step << " is unusable: " << status.message();
    if (LatestGoodCheckpoint(job->status) == nullptr) {
      state.EndJob(job, FAILED,
                   absl::StrCat("no good checkpoint to restart from; the last one: ",
                                status.message()));
      return;
    }
  }
  state.Touch(job);
}

absl::Status Scheduler::CheckFits(const JobSpec& spec) {
  const ClusterState& state = cluster_.state;
  const absl::Time now = state.Now();
  std::vector<uint64_t> memory;
  for (const auto& [id, node] : state.nodes) {
    if (node.info.role() != SERVER || node.info.memory_bytes() == 0) continue;
    if (state.HealthOf(node, now) == DEAD) continue;
    memory.push_back(node.info.memory_bytes());
  }
  if (memory.size() < spec.num_servers()) return absl::OkStatus();
  std::sort(memory.begin(), memory.end(), std::greater<uint64_t>());
  uint64_t available = 0;
  for (uint32_t i = 0; i < spec.num_servers(); ++i) {
    available = memory[i] > UINT64_MAX - available ? UINT64_MAX : available + memory[i];
  }
  ASSIGN_OR_RETURN(const uint64_t needed, JobShardBytes(spec));
  if (needed <= available) return absl::OkStatus();
  return absl::ResourceExhaustedError(absl::StrCat(
      "the job's shards need about ", HumanBytes(needed), " (", needed, " bytes: parameters, ",
      "optimizer state and aggregation buffers", spec.replicas() > 1 ? ", with their backups" : "",
      ") but its ", spec.num_servers(), " largest server(s) hold at most ",
      HumanBytes(available), " (", available,
      " bytes, ps_server --max_memory_bytes); use a smaller model or more servers"));
}

}  // namespace psrv
