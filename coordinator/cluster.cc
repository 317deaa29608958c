#include "coordinator/cluster.h"

#include <glog/logging.h>

#include <algorithm>
#include <cmath>
#include <set>
#include <optional>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/job_spec.h"
#include "common/key_range.h"
#include "common/model_layout.h"

namespace psrv {
namespace {

constexpr size_t kMaxLossHistory = 4096;

int64_t Millis(absl::Time t) { return absl::ToUnixMillis(t); }

// The newest checkpoint not known to be bad, or null.
const CheckpointManifest* LatestGoodCheckpoint(const JobStatus& status) {
  for (int i = status.checkpoints_size() - 1; i >= 0; --i) {
    if (status.checkpoints(i).bad_reason().empty()) return &status.checkpoints(i);
  }
  return nullptr;
}

// Names of the id counters in the state store.
constexpr char kNextNodeCounter[] = "next_node";
constexpr char kNextJobCounter[] = "next_job";

std::string NodeIdPrefix(NodeRole role) { return role == SERVER ? "server-" : "worker-"; }

// N of a node id "server-N" (SERVER) or "worker-N" (WORKER); none if `id` is not one.
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

}  // namespace

ClusterCoordinator::ClusterCoordinator(Options options) : options_(std::move(options)) {}

ClusterCoordinator::~ClusterCoordinator() {
  absl::MutexLock lock(&mu_);
  stopping_ = true;
  mu_.Await(absl::Condition(
      +[](int* running) { return *running == 0; }, &background_running_));
  SaveState();  // The last progress reports.
}

absl::Status ClusterCoordinator::Load() {
  if (options_.state == nullptr) return absl::OkStatus();
  absl::StatusOr<StateStore::Contents> contents = options_.state->Load();
  if (!contents.ok()) return contents.status();
  absl::MutexLock lock(&mu_);
  for (StateStore::StoredJob& stored : contents->jobs) {
    JobRecord& record = stored.record;
    const int workers = static_cast<int>(record.status().spec().num_workers());
    if (record.status().job_id() != stored.id || record.workers_size() != workers ||
        record.done_size() != workers) {
      return absl::DataLossError(absl::StrCat("state database ", options_.state->path(),
                                              ": the record of job \"", stored.id,
                                              "\" does not add up (id, workers, done)"));
    }
    Job& job = jobs_[stored.id];
    job.status = std::move(*record.mutable_status());
    job.sequence = stored.sequence;
    job.workers.assign(record.workers().begin(), record.workers().end());
    job.done.assign(record.done().begin(), record.done().end());
    job.last_checkpoint_step = record.last_checkpoint_step();
    // The servers may not have heard of a vacant rank before the restart: tell them again.
    if (job.status.state() == RUNNING &&
        std::find(job.workers.begin(), job.workers.end(), "") != job.workers.end()) {
      job.worker_set = 1;
    }
    // Perhaps its shards were being created: StartJobs starts it again, on nodes it picks again.
    if (job.status.state() == PENDING) job.workers.assign(workers, "");
    job.revision = ++revision_;
    job_order_.push_back(stored.id);
    next_job_ = std::max(next_job_, stored.sequence + 1);
  }
  const absl::Time now = options_.clock();
  for (NodeRecord& record : contents->nodes) {
    Node& node = nodes_[record.info().node_id()];
    node.info = std::move(*record.mutable_info());
    node.job_id = record.job_id();
    node.rank = record.rank();
    node.last_heartbeat = now;  // The usual grace to show up again.
    node.unconfirmed = true;
    Reattach(&node);
    std::optional<uint64_t> number = NodeNumber(node.info.node_id(), node.info.role());
    if (number.has_value()) next_node_ = std::max(next_node_, *number + 1);
  }
  for (const auto& [name, value] : contents->counters) {
    if (name == kNextNodeCounter) next_node_ = std::max(next_node_, value);
    if (name == kNextJobCounter) next_job_ = std::max(next_job_, value);
  }
  LOG(INFO) << "state from " << options_.state->path() << ": " << jobs_.size() << " job(s), "
            << nodes_.size() << " node(s)";
  return absl::OkStatus();
}

void ClusterCoordinator::Reattach(Node* node) {
  const std::string& id = node->info.node_id();
  node->hosted_jobs.clear();
  for (const std::string& job_id : job_order_) {
    for (const ShardAssignment& shard : jobs_.at(job_id).status.shard_map().shards()) {
      if (shard.server_id() == id || shard.backup_server_id() == id) {
        node->hosted_jobs.push_back(job_id);
        break;
      }
    }
  }
  if (node->info.role() != WORKER) return;
  // A job that ended is kept: the next heartbeat tells the worker (to stop, if it failed).
  // (A reservation for a vacant rank, saved before the rank became the node's, is not kept.)
  auto assigned = jobs_.find(node->job_id);
  if (assigned != jobs_.end() && assigned->second.status.state() != PENDING &&
      (IsTerminal(assigned->second.status.state()) ||
       (node->rank < assigned->second.workers.size() &&
        assigned->second.workers[node->rank] == id))) {
    return;
  }
  node->job_id.clear();
  node->rank = 0;
  for (const std::string& job_id : job_order_) {
    const Job& job = jobs_.at(job_id);
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

absl::StatusOr<CheckpointManifest> ClusterCoordinator::CheckpointJob(const std::string& job_id,
                                                                     const std::string& directory) {
  std::map<std::string, std::string> servers;  // Address -> server id.
  std::string dir = directory;
  {
    absl::MutexLock lock(&mu_);
    absl::StatusOr<Job*> job = FindJob(job_id);
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
    if (dir.empty()) dir = status.spec().checkpoint().directory();
    if (dir.empty()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "job ", job_id, " has no checkpoint.directory; give one to the checkpoint request"));
    }
    if ((*job)->checkpointing) {
      return absl::FailedPreconditionError(
          absl::StrCat("a checkpoint of job ", job_id, " is already in progress"));
    }
    if (!options_.shard_version || !options_.save_checkpoint) {
      return absl::UnimplementedError("this coordinator cannot checkpoint");
    }
    for (const ShardAssignment& shard : status.shard_map().shards()) {
      servers[shard.server_address()] = shard.server_id();
    }
    (*job)->checkpointing = true;
  }
  absl::Status status;
  CheckpointManifest manifest;
  uint64_t target = 0;
  // Every shard of a SYNC job is within one step of the others: two steps ahead is a step none has
  // reached, and all will (the servers answer once theirs do). Fast steps may overtake the margin
  // while the requests travel (FAILED_PRECONDITION): then again with a wider one.
  for (const uint64_t margin : {2, 8, 32, 128}) {
    status = absl::OkStatus();
    manifest.Clear();
    target = 0;
    for (const auto& [address, id] : servers) {
      absl::StatusOr<uint64_t> version = options_.shard_version(address, job_id);
      if (!version.ok()) {
        status = version.status();
        break;
      }
      target = std::max(target, *version);
    }
    if (!status.ok()) break;
    target += margin;
    std::vector<absl::StatusOr<SaveCheckpointResponse>> results(servers.size(),
                                                               absl::UnknownError(""));
    std::vector<std::thread> calls;
    size_t i = 0;
    for (const auto& [address, id] : servers) {
      calls.emplace_back([&, address = address, i] {
        SaveCheckpointRequest request;
        request.set_job_id(job_id);
        request.set_version(target);
        request.set_directory(dir);
        results[i] = options_.save_checkpoint(address, request);
      });
      ++i;
    }
    for (std::thread& t : calls) t.join();
    i = 0;
    for (const auto& [address, id] : servers) {
      if (!results[i].ok()) {
        if (status.ok()) status = results[i].status();
      } else {
        for (CheckpointFile file : results[i]->files()) {
          file.set_server_id(id);
          *manifest.add_files() = std::move(file);
        }
      }
      ++i;
    }
    if (status.code() != absl::StatusCode::kFailedPrecondition) break;
  }
  absl::MutexLock lock(&mu_);
  auto job = jobs_.find(job_id);
  if (job != jobs_.end()) {
    job->second.checkpointing = false;
    if (status.ok()) {
      manifest.set_step(target);
      manifest.set_time_ms(Millis(options_.clock()));
      *job->second.status.add_checkpoints() = manifest;
      Touch(&job->second);
    }
  }
  if (!status.ok()) return status;
  return manifest;
}

void ClusterCoordinator::RunInBackground(std::function<void()> fn) {
  if (stopping_) return;
  ++background_running_;
  std::thread([this, fn = std::move(fn)] {
    fn();
    absl::MutexLock lock(&mu_);
    --background_running_;
  }).detach();
}

void ClusterCoordinator::StartDueCheckpoints() {
  absl::MutexLock lock(&mu_);
  const absl::Time now = options_.clock();
  for (auto& [id, job] : jobs_) {
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
    RunInBackground([this, id = id] {
      absl::StatusOr<CheckpointManifest> manifest = CheckpointJob(id);
      if (!manifest.ok()) LOG(WARNING) << "periodic checkpoint of " << id << ": " << manifest.status();
    });
  }
}

NodeHealth ClusterCoordinator::HealthOf(const Node& node, absl::Time now) const {
  if (node.unreachable) return DEAD;
  const absl::Duration silent = now - node.last_heartbeat;
  if (silent < 3 * options_.heartbeat_interval && !node.unconfirmed) return HEALTHY;
  if (silent < 10 * options_.heartbeat_interval) return SUSPECT;
  return DEAD;
}

void ClusterCoordinator::Touch(Job* job, Save save) {
  job->revision = ++revision_;
  if (options_.state == nullptr) return;
  unsaved_jobs_.insert(job->status.job_id());
  if (save == Save::kNow) SaveState();
}

void ClusterCoordinator::SaveNode(const std::string& node_id, Save save) {
  if (options_.state == nullptr) return;
  unsaved_nodes_.insert(node_id);
  if (save == Save::kNow) SaveState();
}

void ClusterCoordinator::SaveState() {
  if (options_.state == nullptr || (unsaved_jobs_.empty() && unsaved_nodes_.empty())) return;
  StateStore::Batch batch;
  for (const std::string& id : unsaved_jobs_) {
    auto it = jobs_.find(id);
    if (it == jobs_.end()) continue;
    const Job& job = it->second;
    JobRecord record;
    *record.mutable_status() = job.status;
    for (const std::string& worker : job.workers) record.add_workers(worker);
    for (bool done : job.done) record.add_done(done);
    record.set_last_checkpoint_step(job.last_checkpoint_step);
    batch.PutJob(id, job.sequence, record);
  }
  for (const std::string& id : unsaved_nodes_) {
    auto it = nodes_.find(id);
    if (it == nodes_.end()) {
      batch.DeleteNode(id);
      continue;
    }
    NodeRecord record;
    record.mutable_info()->set_node_id(id);
    record.mutable_info()->set_role(it->second.info.role());
    record.mutable_info()->set_address(it->second.info.address());
    record.set_job_id(it->second.job_id);
    record.set_rank(it->second.rank);
    batch.PutNode(record);
  }
  batch.PutCounter(kNextNodeCounter, next_node_);
  batch.PutCounter(kNextJobCounter, next_job_);
  // Under mu_, so that writes land in the order of the changes. A WAL commit does not wait for
  // the disk: this is fast.
  absl::Status status = options_.state->Write(batch);
  if (!status.ok()) {
    LOG_EVERY_N(ERROR, 100) << "saving the coordinator's state (kept in memory; retried every "
                               "tick): "
                            << status;
    return;
  }
  unsaved_jobs_.clear();
  unsaved_nodes_.clear();
}

void ClusterCoordinator::EndJob(Job* job, JobState state, const std::string& message) {
  job->status.set_state(state);
  job->status.set_message(message);
  job->status.set_end_time_ms(Millis(options_.clock()));
  job->starting = false;
  Touch(job);
}

absl::StatusOr<ClusterCoordinator::Job*> ClusterCoordinator::FindJob(const std::string& job_id) {
  auto it = jobs_.find(job_id);
  if (it == jobs_.end()) return absl::NotFoundError(absl::StrCat("no job \"", job_id, "\""));
  return &it->second;
}

absl::StatusOr<RegisterResponse> ClusterCoordinator::Register(const RegisterRequest& request) {
  if (request.role() != SERVER && request.role() != WORKER) {
    return absl::InvalidArgumentError("role must be SERVER or WORKER");
  }
  if (request.address().empty()) return absl::InvalidArgumentError("address must be set");
  absl::MutexLock lock(&mu_);
  std::string id = request.node_id();
  auto known = nodes_.find(id);
  if (id.empty()) {
    id = absl::StrCat(NodeIdPrefix(request.role()), next_node_++);
  } else if (known != nodes_.end()) {
    if (known->second.info.role() != request.role()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "node ", id, " is a ", NodeRole_Name(known->second.info.role()),
          "; it cannot register again as a ", NodeRole_Name(request.role())));
    }
  } else {
    // Forgotten (a restart without state): give the id back, and never hand it out again.
    std::optional<uint64_t> number = NodeNumber(id, request.role());
    if (!number.has_value()) {
      return absl::InvalidArgumentError(
          absl::StrCat("node_id \"", id, "\" is not an id of a ", NodeRole_Name(request.role()),
                       " (", NodeIdPrefix(request.role()), "N)"));
    }
    next_node_ = std::max(next_node_, *number + 1);
  }
  Node& node = nodes_[id];
  const bool returning = !request.node_id().empty() && known == nodes_.end();
  node.info.set_node_id(id);
  node.info.set_role(request.role());
  node.info.set_address(request.address());
  node.last_heartbeat = options_.clock();
  node.unconfirmed = false;
  if (returning) Reattach(&node);
  SaveNode(id);
  RegisterResponse response;
  response.set_node_id(id);
  response.set_heartbeat_interval_ms(absl::ToInt64Milliseconds(options_.heartbeat_interval));
  return response;
}

absl::StatusOr<HeartbeatResponse> ClusterCoordinator::Heartbeat(const HeartbeatRequest& request) {
  absl::MutexLock lock(&mu_);
  auto it = nodes_.find(request.node_id());
  if (it == nodes_.end()) {
    return absl::NotFoundError(
        absl::StrCat("unknown node \"", request.node_id(), "\"; register again"));
  }
  Node& node = it->second;
  node.last_heartbeat = options_.clock();
  node.unreachable = false;  // It is alive after all.
  node.unconfirmed = false;
  HeartbeatResponse response;
  for (const std::string& hosted : node.hosted_jobs) {
    auto job = jobs_.find(hosted);
    if (job != jobs_.end() && IsTerminal(job->second.status.state())) {
      response.add_ended_jobs(hosted);
    }
  }
  if (node.cancel) {
    response.set_cancel(true);
    node.cancel = false;
  }
  if (node.job_id.empty()) return response;
  auto job = jobs_.find(node.job_id);
  if (job == jobs_.end()) {
    node.job_id.clear();
    SaveNode(request.node_id());
    return response;
  }
  const JobState state = job->second.status.state();
  if (state == RUNNING && !job->second.done[node.rank] &&
      job->second.workers[node.rank] == node.info.node_id()) {
    WorkAssignment* assignment = response.mutable_assignment();
    assignment->set_job_id(node.job_id);
    *assignment->mutable_spec() = job->second.status.spec();
    assignment->set_rank(node.rank);
    *assignment->mutable_shard_map() = job->second.status.shard_map();
    uint64_t start = job->second.status.resumed_from_step() + 1;
    if (static_cast<int>(node.rank) < job->second.status.workers_size()) {
      start = std::max(start, job->second.status.workers(node.rank).start_step());
    }
    assignment->set_start_step(start);
    assignment->set_attempt(job->second.status.restarts());
  } else if (state == FAILED || state == CANCELLED) {
    response.set_cancel(true);
    node.job_id.clear();
    SaveNode(request.node_id());
  } else if (state == SUCCEEDED) {
    node.job_id.clear();
    SaveNode(request.node_id());
  }
  return response;
}

absl::Status ClusterCoordinator::Leave(const std::string& node_id) {
  absl::MutexLock lock(&mu_);
  if (nodes_.erase(node_id) == 0) {
    return absl::NotFoundError(absl::StrCat("unknown node \"", node_id, "\""));
  }
  SaveNode(node_id);  // Deletes its record.
  return absl::OkStatus();
}

ListNodesResponse ClusterCoordinator::ListNodes() {
  absl::MutexLock lock(&mu_);
  const absl::Time now = options_.clock();
  ListNodesResponse response;
  for (const auto& [id, node] : nodes_) {
    NodeInfo* info = response.add_nodes();
    *info = node.info;
    info->set_health(HealthOf(node, now));
    info->set_last_heartbeat_ms(Millis(node.last_heartbeat));
    info->set_job_id(node.job_id);
    info->set_rank(node.rank);
  }
  return response;
}

absl::StatusOr<std::string> ClusterCoordinator::SubmitJob(JobSpec spec) {
  ApplyJobDefaults(&spec);
  if (absl::Status s = ValidateJobSpec(spec); !s.ok()) return s;
  absl::MutexLock lock(&mu_);
  const uint64_t sequence = next_job_++;
  const std::string id = absl::StrCat("job-", sequence);
  Job& job = jobs_[id];
  job.sequence = sequence;
  job.status.set_job_id(id);
  *job.status.mutable_spec() = spec;
  job.status.set_state(PENDING);
  job.status.set_submit_time_ms(Millis(options_.clock()));
  job.workers.resize(spec.num_workers());
  job.done.assign(spec.num_workers(), false);
  job_order_.push_back(id);
  Touch(&job);
  return id;
}

absl::StatusOr<JobStatus> ClusterCoordinator::GetJob(const std::string& job_id) {
  absl::MutexLock lock(&mu_);
  absl::StatusOr<Job*> job = FindJob(job_id);
  if (!job.ok()) return job.status();
  return (*job)->status;
}

ListJobsResponse ClusterCoordinator::ListJobs() {
  absl::MutexLock lock(&mu_);
  ListJobsResponse response;
  for (const std::string& id : job_order_) *response.add_jobs() = jobs_[id].status;
  return response;
}

absl::StatusOr<JobStatus> ClusterCoordinator::CancelJob(const std::string& job_id) {
  absl::MutexLock lock(&mu_);
  absl::StatusOr<Job*> job = FindJob(job_id);
  if (!job.ok()) return job.status();
  if (IsTerminal((*job)->status.state())) {
    return absl::FailedPreconditionError(absl::StrCat(
        "job ", job_id, " already ended (", JobState_Name((*job)->status.state()), ")"));
  }
  EndJob(*job, CANCELLED, "cancelled by user");
  return (*job)->status;
}

absl::StatusOr<ShardMap> ClusterCoordinator::GetShardMap(const std::string& job_id) {
  absl::MutexLock lock(&mu_);
  absl::StatusOr<Job*> job = FindJob(job_id);
  if (!job.ok()) return job.status();
  if ((*job)->status.shard_map().shards().empty()) {
    return absl::FailedPreconditionError(absl::StrCat("job ", job_id, " has not started yet"));
  }
  return (*job)->status.shard_map();
}

absl::StatusOr<ReportProgressResponse> ClusterCoordinator::ReportProgress(
    const ReportProgressRequest& request) {
  absl::MutexLock lock(&mu_);
  absl::StatusOr<Job*> found = FindJob(request.job_id());
  if (!found.ok()) return found.status();
  Job& job = **found;
  const uint32_t workers = job.status.spec().num_workers();
  if (request.rank() >= workers) {
    return absl::InvalidArgumentError(
        absl::StrCat("rank ", request.rank(), " is out of range: the job has ", workers,
                     " workers"));
  }
  if (!std::isfinite(request.loss()) || !std::isfinite(request.tokens_per_sec()) ||
      !std::isfinite(request.val_loss()) || !std::isfinite(request.step_seconds())) {
    return absl::InvalidArgumentError(
        "loss, val_loss, tokens_per_sec and step_seconds must be finite");
  }
  ReportProgressResponse response;
  if (job.status.state() != RUNNING) {
    response.set_cancel(job.status.state() != SUCCEEDED);
    return response;
  }
  if (job.workers[request.rank()] != request.node_id()) {
    // A run the coordinator took away (the job restarted, or the rank went to another worker):
    // its reports, errors included, are no longer the job's.
    response.set_cancel(true);
    return response;
  }
  while (job.status.workers_size() < static_cast<int>(workers)) {
    job.status.add_workers()->set_rank(job.status.workers_size());
  }
  WorkerProgress* progress = job.status.mutable_workers(request.rank());
  progress->set_worker_id(request.node_id());
  progress->set_step(request.step());
  progress->set_loss(request.loss());
  progress->set_tokens_per_sec(request.tokens_per_sec());
  progress->set_step_seconds(request.step_seconds());
  progress->set_done(request.done());
  if (!request.sample().empty()) job.status.set_sample(request.sample());
  if (request.val_loss() > 0) {
    job.status.set_val_loss(request.val_loss());
    ValidationPoint* point = job.status.add_val_history();
    point->set_step(request.step());
    point->set_loss(request.val_loss());
  }

  uint64_t min_step = UINT64_MAX;
  double loss_sum = 0, tokens = 0;
  int reporting = 0;
  for (const WorkerProgress& w : job.status.workers()) {
    if (w.vacant()) continue;
    min_step = std::min<uint64_t>(min_step, w.step());
    if (w.step() > 0) loss_sum += w.loss(), ++reporting;
    tokens += w.tokens_per_sec();
  }
  job.status.set_step(min_step == UINT64_MAX ? 0 : min_step);
  if (reporting > 0) job.status.set_loss(static_cast<float>(loss_sum / reporting));
  job.status.set_tokens_per_sec(static_cast<float>(tokens));
  if (request.step() > 0) {
    auto* history = job.status.mutable_loss_history();
    if (history->empty() || history->rbegin()->step() < job.status.step()) {
      LossPoint* point = history->Add();
      point->set_step(job.status.step());
      point->set_loss(job.status.loss());
      point->set_tokens_per_sec(job.status.tokens_per_sec());
    }
    if (history->size() > static_cast<int>(kMaxLossHistory)) {
      // Keep every other point so long jobs keep their whole curve at half the resolution.
      google::protobuf::RepeatedPtrField<LossPoint> thinned;
      for (int i = 0; i < history->size(); i += 2) *thinned.Add() = history->Get(i);
      history->Swap(&thinned);
    }
  }

  auto free_node = [&](const std::string& node_id) {
    auto node = nodes_.find(node_id);
    if (node != nodes_.end() && node->second.job_id == request.job_id()) {
      node->second.job_id.clear();
      SaveNode(node_id, Save::kLater);  // With the job, below.
    }
  };
  if (!request.error().empty()) {
    free_node(job.workers[request.rank()]);
    EndJob(&job, FAILED, absl::StrCat("worker rank ", request.rank(), ": ", request.error()));
    response.set_cancel(true);
    return response;
  }
  if (request.done()) {
    job.done[request.rank()] = true;
    free_node(job.workers[request.rank()]);
    if (AllRanksFinished(job)) {
      EndJob(&job, SUCCEEDED, job.status.message());
      return response;
    }
  }
  // Ordinary reports are saved by Tick(); a rank's end at once (its worker will not report again).
  Touch(&job, request.done() ? Save::kNow : Save::kLater);
  return response;
}

absl::Status ClusterCoordinator::ReportUnreachable(const std::string& address) {
  if (address.empty()) return absl::InvalidArgumentError("address must be set");
  std::string node_id;
  {
    absl::MutexLock lock(&mu_);
    for (auto& [id, node] : nodes_) {
      if (node.info.role() == SERVER && node.info.address() == address) {
        if (node.probing || node.unreachable) return absl::OkStatus();
        node.probing = true;
        node_id = id;
        break;
      }
    }
    if (node_id.empty()) {
      return absl::NotFoundError(absl::StrCat("no server registered at ", address));
    }
    if (!options_.probe) {
      nodes_[node_id].probing = false;
      return absl::OkStatus();
    }
    RunInBackground([this, node_id, address] {
      absl::Status status = options_.probe(address);
      if (!status.ok()) status = options_.probe(address);
      absl::MutexLock lock(&mu_);
      auto node = nodes_.find(node_id);
      if (node == nodes_.end()) return;
      node->second.probing = false;
      if (!status.ok()) {
        LOG(WARNING) << "server " << node_id << " at " << address
                     << " was reported unreachable and does not answer: " << status;
        node->second.unreachable = true;
      }
    });
  }
  return absl::OkStatus();
}

absl::StatusOr<JobStatus> ClusterCoordinator::WaitForJobChange(const std::string& job_id,
                                                               uint64_t* revision,
                                                               absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  absl::StatusOr<Job*> job = FindJob(job_id);
  if (!job.ok()) return job.status();
  const Job* j = *job;
  const uint64_t seen = *revision;
  auto changed = [j, seen]() { return j->revision > seen; };
  mu_.AwaitWithTimeout(absl::Condition(&changed), timeout);
  *revision = j->revision;
  return j->status;
}

void ClusterCoordinator::Tick() {
  HandleLostNodes();  // Sends the promotions it makes, and any still unconfirmed.
  RepairBackups();
  SendWorkerSets();
  FillVacantRanks();
  StartJobs();
  StartDueCheckpoints();
  absl::MutexLock lock(&mu_);
  SaveState();  // Progress reports, and writes that failed.
}

void ClusterCoordinator::HandleLostNodes() {
  std::vector<std::pair<std::string, std::string>> drops;  // (server address, job id)
  {
    absl::MutexLock lock(&mu_);
    const absl::Time now = options_.clock();
    for (auto& [id, job] : jobs_) {
      if (job.status.state() != RUNNING) continue;
      std::string lost;
      std::vector<uint32_t> lost_ranks;
      for (uint32_t rank = 0; rank < job.workers.size(); ++rank) {
        if (job.done[rank] || job.workers[rank].empty()) continue;  // Finished or vacant.
        auto node = nodes_.find(job.workers[rank]);
        if (node == nodes_.end() || HealthOf(node->second, now) == DEAD) {
          if (lost.empty()) {
            lost = absl::StrCat("worker ", job.workers[rank], " (rank ", rank, ") ",
                                node == nodes_.end() ? "left" : "stopped sending heartbeats");
          }
          lost_ranks.push_back(rank);
        }
      }
      std::string lost_server;
      std::set<std::string> lost_servers;  // Ids.
      for (const ShardAssignment& shard : job.status.shard_map().shards()) {
        for (const std::string& server : {shard.server_id(), shard.backup_server_id()}) {
          if (server.empty() || lost_servers.count(server) > 0) continue;
          auto node = nodes_.find(server);
          if (node != nodes_.end() && HealthOf(node->second, now) != DEAD) continue;
          lost_servers.insert(server);
          if (lost_server.empty()) {
            lost_server = absl::StrCat("server ", server, " ",
                                       node == nodes_.end() ? "left" : "stopped sending heartbeats");
          }
        }
      }
      // Replicated shards fail over to their backups; the job carries on.
      if (!lost_servers.empty()) {
        const ShardMap before = job.status.shard_map();
        bool failed_over = true;
        for (const std::string& server : lost_servers) {
          failed_over = failed_over && FailOver(&job, server);
        }
        if (failed_over) {
          job.status.set_message(absl::StrCat(lost_server, "; its shards failed over to their backups"));
          LOG(WARNING) << "job " << id << ": " << job.status.message();
          lost_server.clear();
        } else {
          *job.status.mutable_shard_map() = before;  // All or nothing.
        }
      }
      if (lost_server.empty() && lost_ranks.empty()) continue;
      if (lost_server.empty() && VacateRanks(&job, lost_ranks)) {
        job.status.set_message(absl::StrCat(lost, " at step ", job.status.step(),
                                            "; the job goes on without it until another worker "
                                            "takes its rank over"));
        LOG(WARNING) << "job " << id << ": " << job.status.message();
        continue;
      }
      if (!lost_server.empty()) lost = lost_server;
      if (RestartFromCheckpoint(&job, lost, &drops)) {
        LOG(WARNING) << "job " << id << ": " << job.status.message();
      } else {
        EndJob(&job, FAILED, lost);
      }
    }
  }
  // Promotions first: workers may already be retrying against the new shard map.
  SendPromotions(&drops);
  for (const auto& [address, job_id] : drops) {
    absl::Status status = options_.drop_job(address, job_id);
    if (!status.ok()) LOG(WARNING) << "dropping " << job_id << " on " << address << ": " << status;
  }
}

void ClusterCoordinator::SendPromotions(std::vector<std::pair<std::string, std::string>>* drops) {
  struct Promotion {
    std::string address;  // The promoted copies' server.
    PromoteRequest request;
    uint64_t reported = 0;  // The furthest step the job's workers reported.
  };
  std::vector<Promotion> promotions;
  {
    absl::MutexLock lock(&mu_);
    if (!options_.promote) return;
    for (const auto& [id, job] : jobs_) {
      if (job.status.state() != RUNNING) continue;
      std::set<std::pair<std::string, std::string>> pending;  // (address, failed address)
      for (const ShardAssignment& shard : job.status.shard_map().shards()) {
        if (!shard.promoted_from().empty()) {
          pending.emplace(shard.server_address(), shard.promoted_from());
        }
      }
      uint64_t reported = 0;
      for (const WorkerProgress& w : job.status.workers()) {
        if (!w.vacant()) reported = std::max<uint64_t>(reported, w.step());
      }
      for (const auto& [address, failed] : pending) {
        Promotion promotion{address, {}, reported};
        promotion.request.set_job_id(id);
        promotion.request.set_failed_address(failed);
        promotions.push_back(std::move(promotion));
      }
    }
  }
  for (Promotion& p : promotions) {
    absl::StatusOr<PromoteResponse> promoted = options_.promote(p.address, p.request);
    if (promoted.ok()) {
      // A worker that reported step s had pulled the parameters after step s - 1: every promoted
      // shard must have them. One that does not was a stale backup (its primary had dropped it).
      for (const PromotedShard& shard : promoted->shards()) {
        if (shard.version() + 1 < p.reported) {
          promoted = absl::DataLossError(absl::StrCat(
              "the backup of ", shard.table(), " was behind (version ", shard.version(),
              ", workers at step ", p.reported, "): its primary had dropped it"));
          break;
        }
      }
    }
    absl::MutexLock lock(&mu_);
    auto job = jobs_.find(p.request.job_id());
    if (job == jobs_.end() || job->second.status.state() != RUNNING) continue;
    if (promoted.ok()) {
      LOG(INFO) << "job " << p.request.job_id() << ": " << promoted->shards_size()
                << " shard(s) on " << p.address << " promoted to primary";
      for (ShardAssignment& shard : *job->second.status.mutable_shard_map()->mutable_shards()) {
        if (shard.server_address() == p.address &&
            shard.promoted_from() == p.request.failed_address()) {
          shard.clear_promoted_from();
        }
      }
      Touch(&job->second);
      continue;
    }
    if (absl::IsUnavailable(promoted.status()) || absl::IsDeadlineExceeded(promoted.status())) {
      // Its server may be gone too: the next Tick finds out (and fails it over or restarts).
      LOG(WARNING) << "job " << p.request.job_id() << ": promoting the backups on " << p.address
                   << ": " << promoted.status() << " (will retry)";
      continue;
    }
    // The backups cannot take over: restart from a checkpoint or fail.
    const std::string reason = absl::StrCat("server ", p.request.failed_address(),
                                            " was lost and its backups on ", p.address,
                                            " could not take over: ", promoted.status().message());
    LOG(WARNING) << "job " << p.request.job_id() << ": " << reason;
    if (!RestartFromCheckpoint(&job->second, reason, drops)) {
      EndJob(&job->second, FAILED, reason);
    }
  }
}

std::set<std::string> ClusterCoordinator::ServerAddresses(const JobStatus& status) {
  std::set<std::string> addresses;
  for (const ShardAssignment& shard : status.shard_map().shards()) {
    addresses.insert(shard.server_address());
    if (!shard.backup_address().empty()) addresses.insert(shard.backup_address());
  }
  return addresses;
}

bool ClusterCoordinator::FailOver(Job* job, const std::string& server_id) {
  if (!options_.promote) return false;
  const absl::Time now = options_.clock();
  ShardMap* map = job->status.mutable_shard_map();
  // Every shard the lost server is primary of needs a live backup, or nothing changes.
  std::string lost_address;
  for (const ShardAssignment& shard : map->shards()) {
    if (shard.server_id() != server_id) continue;
    lost_address = shard.server_address();
    auto backup = nodes_.find(shard.backup_server_id());
    if (shard.backup_server_id().empty() || backup == nodes_.end() ||
        HealthOf(backup->second, now) == DEAD) {
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
  auto node = nodes_.find(server_id);
  if (node != nodes_.end()) {
    std::vector<std::string>& hosted = node->second.hosted_jobs;
    hosted.erase(std::remove(hosted.begin(), hosted.end(), job->status.job_id()), hosted.end());
  }
  Touch(job);
  return true;
}

void ClusterCoordinator::ForgetDroppedBackups() {
  std::vector<std::pair<std::string, std::string>> reads;  // (job, primary address)
  {
    absl::MutexLock lock(&mu_);
    const absl::Time now = options_.clock();
    if (!options_.server_status || now - last_backup_check_ < absl::Seconds(1)) return;
    last_backup_check_ = now;
    for (const auto& [id, job] : jobs_) {
      if (job.status.state() != RUNNING || job.status.spec().replicas() < 2) continue;
      std::set<std::string> primaries;
      for (const ShardAssignment& shard : job.status.shard_map().shards()) {
        if (!shard.backup_address().empty()) primaries.insert(shard.server_address());
      }
      for (const std::string& address : primaries) reads.emplace_back(id, address);
    }
  }
  for (const auto& [job_id, address] : reads) {
    absl::StatusOr<ServerStatus> status = options_.server_status(address, job_id);
    if (!status.ok()) continue;  // Lost servers are HandleLostNodes' business.
    absl::MutexLock lock(&mu_);
    auto job = jobs_.find(job_id);
    if (job == jobs_.end() || job->second.status.state() != RUNNING) continue;
    bool changed = false;
    for (ShardAssignment& shard : *job->second.status.mutable_shard_map()->mutable_shards()) {
      if (shard.server_address() != address || shard.backup_address().empty()) continue;
      for (const ShardStatus& held : status->shards()) {
        if (held.role() != PRIMARY || held.table() != shard.table() ||
            held.range().begin() != shard.range().begin()) {
          continue;
        }
        if (held.backup_lost() || held.backup_address() != shard.backup_address()) {
          LOG(WARNING) << "job " << job_id << ": " << shard.table() << " on " << address
                       << " has no backup on " << shard.backup_address() << " any more ("
                       << held.backup_error() << "); it gets a new one";
          shard.clear_backup_server_id();
          shard.clear_backup_address();
          changed = true;
        }
      }
    }
    if (changed) Touch(&job->second);
  }
}

void ClusterCoordinator::RepairBackups() {
  ForgetDroppedBackups();
  absl::MutexLock lock(&mu_);
  if (!options_.add_backup) return;
  const absl::Time now = options_.clock();
  for (const std::string& id : job_order_) {
    Job& job = jobs_[id];
    if (job.status.state() != RUNNING || job.status.spec().replicas() < 2 || job.adding_backup) {
      continue;
    }
    for (const ShardAssignment& shard : job.status.shard_map().shards()) {
      if (!shard.backup_server_id().empty()) continue;
      // Any other healthy server; one of the job's own first (it has the job's data already).
      std::string backup_id, backup_address;
      for (const auto& [node_id, node] : nodes_) {
        if (node.info.role() != SERVER || node_id == shard.server_id() ||
            HealthOf(node, now) != HEALTHY) {
          continue;
        }
        const bool of_the_job = ServerAddresses(job.status).count(node.info.address()) > 0;
        if (backup_id.empty() || of_the_job) {
          backup_id = node_id;
          backup_address = node.info.address();
          if (of_the_job) break;
        }
      }
      if (backup_id.empty()) return;  // No server to put it on: later.
      AddBackupRequest request;
      request.set_job_id(id);
      request.set_table(shard.table());
      *request.mutable_range() = shard.range();
      request.set_backup_address(backup_address);
      job.adding_backup = true;
      // The copy can take a while (the primary holds its updates meanwhile): not on this thread.
      RunInBackground([this, request, primary_address = shard.server_address(), backup_id] {
        absl::StatusOr<AddBackupResponse> added = options_.add_backup(primary_address, request);
        absl::MutexLock lock(&mu_);
        auto job = jobs_.find(request.job_id());
        if (job == jobs_.end()) return;
        job->second.adding_backup = false;
        if (!added.ok()) {
          LOG(WARNING) << "job " << request.job_id() << ": a backup of " << request.table()
                       << " on " << request.backup_address() << ": " << added.status()
                       << " (will retry)";
          return;
        }
        if (job->second.status.state() != RUNNING) return;
        for (ShardAssignment& shard : *job->second.status.mutable_shard_map()->mutable_shards()) {
          if (shard.table() == request.table() &&
              shard.range().begin() == request.range().begin() &&
              shard.server_address() == primary_address) {
            shard.set_backup_server_id(backup_id);
            shard.set_backup_address(request.backup_address());
          }
        }
        auto node = nodes_.find(backup_id);
        if (node != nodes_.end()) {
          std::vector<std::string>& hosted = node->second.hosted_jobs;
          if (std::find(hosted.begin(), hosted.end(), request.job_id()) == hosted.end()) {
            hosted.push_back(request.job_id());
          }
        }
        LOG(INFO) << "job " << request.job_id() << ": " << request.table() << " ["
                  << request.range().begin() << ", " << request.range().end()
                  << ") backed up on " << request.backup_address() << " from version "
                  << added->version();
        // The copy carries the primary's set of workers as it was when taken; a change sent
        // meanwhile may have missed it: send the current one again.
        if (job->second.status.spec().training().consistency() == SYNC) ++job->second.worker_set;
        Touch(&job->second);
      });
      break;
    }
  }
}

bool ClusterCoordinator::AllRanksFinished(const Job& job) const {
  bool any_done = false;
  for (size_t rank = 0; rank < job.done.size(); ++rank) {
    if (!job.done[rank] && !job.workers[rank].empty()) return false;
    any_done |= job.done[rank];
  }
  return any_done;
}

bool ClusterCoordinator::VacateRanks(Job* job, const std::vector<uint32_t>& ranks) {
  size_t computing = 0;  // Ranks neither done, vacant, nor lost.
  for (uint32_t rank = 0; rank < job->workers.size(); ++rank) {
    computing += !job->done[rank] && !job->workers[rank].empty() &&
                 std::find(ranks.begin(), ranks.end(), rank) == ranks.end();
  }
  if (computing == 0) return false;
  while (job->status.workers_size() < static_cast<int>(job->workers.size())) {
    job->status.add_workers()->set_rank(job->status.workers_size());
  }
  for (uint32_t rank : ranks) {
    auto node = nodes_.find(job->workers[rank]);
    if (node != nodes_.end() && node->second.job_id == job->status.job_id()) {
      node->second.job_id.clear();
      node->second.cancel = true;  // In case it is alive after all.
      SaveNode(node->first, Save::kLater);  // With the job, by Touch.
    }
    job->workers[rank].clear();
    job->status.mutable_workers(rank)->set_vacant(true);
  }
  if (job->status.spec().training().consistency() == SYNC) ++job->worker_set;
  Touch(job);
  return true;
}

std::vector<uint64_t> ClusterCoordinator::FromSteps(const Job& job) const {
  std::vector<uint64_t> from_step(job.workers.size(), 0);
  for (size_t rank = 0; rank < job.workers.size(); ++rank) {
    if (job.workers[rank].empty()) {
      from_step[rank] = UINT64_MAX;
    } else if (static_cast<int>(rank) < job.status.workers_size()) {
      from_step[rank] = job.status.workers(rank).start_step();
    }
  }
  return from_step;
}

void ClusterCoordinator::SendWorkerSets() {
  struct Send {
    std::string job_id;
    uint64_t worker_set;
    std::set<std::string> addresses;
    SetWorkersRequest request;
  };
  std::vector<Send> sends;
  {
    absl::MutexLock lock(&mu_);
    if (!options_.set_workers) return;
    for (auto& [id, job] : jobs_) {
      if (job.status.state() != RUNNING || job.worker_set == job.worker_set_sent) continue;
      Send send{id, job.worker_set, {}, {}};
      send.request.set_job_id(id);
      for (uint64_t s : FromSteps(job)) send.request.add_from_step(s);
      send.addresses = ServerAddresses(job.status);  // Backups too: they may be promoted.
      sends.push_back(std::move(send));
    }
  }
  for (const Send& send : sends) {
    absl::Status status;
    for (const std::string& address : send.addresses) {
      status.Update(options_.set_workers(address, send.request));
    }
    if (!status.ok()) {
      LOG(WARNING) << "job " << send.job_id << ": telling the servers the new set of workers: "
                   << status << " (will retry)";
      continue;
    }
    absl::MutexLock lock(&mu_);
    auto job = jobs_.find(send.job_id);
    if (job != jobs_.end()) job->second.worker_set_sent = std::max(job->second.worker_set_sent, send.worker_set);
  }
}

void ClusterCoordinator::FillVacantRanks() {
  std::string job_id, node_id;
  uint32_t rank = 0;
  bool sync = false;
  std::set<std::string> addresses;
  std::vector<uint64_t> from_step;
  uint64_t start_step = 0;
  {
    absl::MutexLock lock(&mu_);
    const absl::Time now = options_.clock();
    for (const std::string& id : job_order_) {
      Job& job = jobs_[id];
      if (job.status.state() != RUNNING || job.filling || job.worker_set != job.worker_set_sent) {
        continue;
      }
      auto vacant = std::find(job.workers.begin(), job.workers.end(), "");
      if (vacant == job.workers.end()) continue;
      for (auto& [candidate, node] : nodes_) {
        if (node.info.role() == WORKER && node.job_id.empty() && HealthOf(node, now) == HEALTHY) {
          node_id = candidate;
          break;
        }
      }
      if (node_id.empty()) return;
      rank = static_cast<uint32_t>(vacant - job.workers.begin());
      Node& node = nodes_.at(node_id);
      node.job_id = id;  // Reserved: no assignment until the rank is its.
      node.rank = rank;
      SaveNode(node_id);
      job.filling = true;
      job_id = id;
      sync = job.status.spec().training().consistency() == SYNC;
      from_step = FromSteps(job);
      addresses = ServerAddresses(job.status);
      start_step = job.status.workers(rank).step() + 1;  // ASYNC: where the lost worker was.
      break;
    }
  }
  if (job_id.empty()) return;
  absl::Status status;
  if (sync) {
    // A step no shard has applied yet (all are within one step of each other), so that every
    // shard waits for the new worker from the same step on.
    uint64_t version = 0;
    for (const std::string& address : addresses) {
      absl::StatusOr<uint64_t> v = options_.shard_version
                                       ? options_.shard_version(address, job_id)
                                       : absl::UnimplementedError("no shard_version");
      if (!v.ok()) {
        status = v.status();
        break;
      }
      version = std::max(version, *v);
    }
    start_step = version + 2;
    from_step[rank] = start_step;
    SetWorkersRequest request;
    request.set_job_id(job_id);
    for (uint64_t s : from_step) request.add_from_step(s);
    for (const std::string& address : addresses) {
      if (!status.ok()) break;
      status = options_.set_workers ? options_.set_workers(address, request)
                                    : absl::UnimplementedError("no set_workers");
    }
  }
  absl::MutexLock lock(&mu_);
  Job& job = jobs_[job_id];
  job.filling = false;
  auto node = nodes_.find(node_id);
  if (!status.ok() || job.status.state() != RUNNING || !job.workers[rank].empty() ||
      node == nodes_.end()) {
    if (node != nodes_.end() && node->second.job_id == job_id) {
      node->second.job_id.clear();
      SaveNode(node_id);
    }
    if (!status.ok()) {
      LOG(WARNING) << "job " << job_id << ": giving rank " << rank << " to " << node_id << ": "
                   << status << " (will retry)";
      // A shard may have taken the new set: send the current one again.
      if (sync) ++job.worker_set;
    }
    return;
  }
  job.workers[rank] = node_id;
  job.done[rank] = false;
  WorkerProgress* progress = job.status.mutable_workers(rank);
  progress->set_worker_id(node_id);
  progress->set_vacant(false);
  progress->set_start_step(start_step);
  progress->set_step(start_step - 1);
  job.status.set_message(absl::StrCat("worker ", node_id, " took rank ", rank, " over at step ",
                                      start_step));
  LOG(INFO) << "job " << job_id << ": " << job.status.message();
  Touch(&job);
}

bool ClusterCoordinator::RestartFromCheckpoint(
    Job* job, const std::string& reason, std::vector<std::pair<std::string, std::string>>* drops) {
  JobStatus& status = job->status;
  const CheckpointManifest* checkpoint = LatestGoodCheckpoint(status);
  if (status.spec().training().consistency() != SYNC || checkpoint == nullptr ||
      !options_.drop_job || status.restarts() >= options_.max_restarts) {
    return false;
  }
  const std::string& job_id = status.job_id();
  for (const std::string& address : ServerAddresses(status)) drops->push_back({address, job_id});
  for (const ShardAssignment& shard : status.shard_map().shards()) {
    for (const std::string& server : {shard.server_id(), shard.backup_server_id()}) {
      auto node = nodes_.find(server);
      if (node == nodes_.end()) continue;
      std::vector<std::string>& hosted = node->second.hosted_jobs;
      hosted.erase(std::remove(hosted.begin(), hosted.end(), job_id), hosted.end());
    }
  }
  for (const std::string& worker : job->workers) {
    auto node = nodes_.find(worker);
    if (node != nodes_.end() && node->second.job_id == job_id) {
      node->second.job_id.clear();
      node->second.cancel = true;
      SaveNode(worker, Save::kLater);  // With the job, by Touch.
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
  Touch(job);
  return true;
}

void ClusterCoordinator::StartJobs() {
  // Pick one startable job and reserve its nodes under the lock; create shards outside it.
  std::string job_id;
  std::map<std::string, CreateShardsRequest> requests;  // By server address.
  ShardMap shard_map;
  uint64_t restore_step = 0;  // A restarted job: the checkpoint's step.
  std::string restore_error;   // The checkpoint does not fit the shard plan.
  {
    absl::MutexLock lock(&mu_);
    const absl::Time now = options_.clock();
    for (const std::string& id : job_order_) {
      Job& job = jobs_[id];
      if (job.status.state() != PENDING || job.starting) continue;
      const JobSpec& spec = job.status.spec();
      std::vector<ServerSlot> servers;
      std::vector<std::string> workers;
      for (const auto& [node_id, node] : nodes_) {
        if (HealthOf(node, now) != HEALTHY) continue;
        if (node.info.role() == SERVER && servers.size() < spec.num_servers()) {
          servers.push_back({node_id, node.info.address()});
        } else if (node.info.role() == WORKER && node.job_id.empty() &&
                   workers.size() < spec.num_workers()) {
          workers.push_back(node_id);
        }
      }
      if (servers.size() < spec.num_servers() || workers.size() < spec.num_workers()) continue;
      absl::StatusOr<std::vector<TableSpec>> tables =
          ModelTables(spec.model(), spec.training().seed());
      if (!tables.ok()) {
        EndJob(&job, FAILED, std::string(tables.status().message()));
        continue;
      }
      shard_map.set_job_id(id);
      for (const TableSpec& t : *tables) *shard_map.add_tables() = t;
      std::map<std::string, const TableSpec*> by_name;
      for (const TableSpec& t : shard_map.tables()) by_name[t.name()] = &t;
      auto request_for = [&](const std::string& address) -> CreateShardsRequest& {
        CreateShardsRequest& request = requests[address];
        request.set_job_id(id);
        request.set_consistency(spec.training().consistency());
        *request.mutable_optimizer() = spec.training().optimizer();
        request.set_num_workers(spec.num_workers());
        request.set_init_from_safetensors(spec.init_from());
        return request;
      };
      for (ShardAssignment& shard : PlanShards(*tables, servers)) {
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
      if (const CheckpointManifest* checkpoint = LatestGoodCheckpoint(job.status);
          job.status.restarts() > 0 && checkpoint != nullptr) {
        restore_step = checkpoint->step();
        for (const ShardAssignment& shard : shard_map.shards()) {
          const CheckpointFile* file = nullptr;
          for (const CheckpointFile& f : checkpoint->files()) {
            if (f.table() == shard.table() && f.range().begin() == shard.range().begin() &&
                f.range().end() == shard.range().end()) {
              file = &f;
            }
          }
          if (file == nullptr) {
            restore_error = absl::StrCat("has no file for table ", shard.table(), " [",
                                         shard.range().begin(), ", ", shard.range().end(), ")");
            break;
          }
          *requests[shard.server_address()].add_restore_from() = *file;
          if (!shard.backup_address().empty()) {
            *requests[shard.backup_address()].add_restore_from() = *file;
          }
        }
      }
      for (uint32_t rank = 0; rank < workers.size(); ++rank) {
        nodes_[workers[rank]].job_id = id;
        nodes_[workers[rank]].rank = rank;
        job.workers[rank] = workers[rank];
      }
      job.starting = true;
      job_id = id;
      break;
    }
  }
  if (job_id.empty()) return;

  absl::Status status;
  std::vector<std::string> created;  // Addresses.
  if (!restore_error.empty()) {
    status = absl::DataLossError(restore_error);
  }
  // A restarted job may have left shards on a server chosen again (one that came back after a
  // DropJob could not reach it): they would be kept instead of restored. Drop them first.
  if (restore_step > 0 && options_.drop_job) {
    for (const auto& [address, request] : requests) {
      absl::Status dropped = options_.drop_job(address, job_id);
      if (!dropped.ok() && dropped.code() != absl::StatusCode::kNotFound) {
        LOG(WARNING) << "dropping " << job_id << " on " << address << " before restoring: "
                     << dropped;
      }
    }
  }
  for (const auto& [address, request] : requests) {
    if (!status.ok()) break;
    status = options_.create_shards(address, request);
    if (!status.ok()) {
      status = absl::Status(status.code(), absl::StrCat("creating shards on ", address, ": ",
                                                        status.message()));
    } else {
      created.push_back(address);
    }
  }
  // A restarted job whose checkpoint is bad falls back to the previous one; one that met an
  // unreachable server tries again. Either way the shards created so far go.
  const bool retry = restore_step > 0 && (status.code() == absl::StatusCode::kDataLoss ||
                                          status.code() == absl::StatusCode::kNotFound ||
                                          status.code() == absl::StatusCode::kUnavailable ||
                                          status.code() == absl::StatusCode::kDeadlineExceeded);
  if (retry && options_.drop_job) {
    for (const std::string& address : created) {
      absl::Status dropped = options_.drop_job(address, job_id);
      if (!dropped.ok()) LOG(WARNING) << "dropping " << job_id << " on " << address << ": " << dropped;
    }
  }
  absl::MutexLock lock(&mu_);
  Job& job = jobs_[job_id];
  if (!job.starting) return;  // Cancelled meanwhile.
  job.starting = false;
  if (!status.ok()) {
    for (const std::string& node_id : job.workers) {
      auto node = nodes_.find(node_id);
      if (node == nodes_.end()) continue;
      node->second.job_id.clear();
      SaveNode(node_id, Save::kLater);  // With the job, by EndJob or Touch.
    }
    job.workers.assign(job.workers.size(), "");
    if (!retry) {
      EndJob(&job, FAILED, std::string(status.message()));
      return;
    }
    if (status.code() == absl::StatusCode::kDataLoss ||
        status.code() == absl::StatusCode::kNotFound) {
      for (CheckpointManifest& checkpoint : *job.status.mutable_checkpoints()) {
        if (checkpoint.step() == restore_step) {
          checkpoint.set_bad_reason(std::string(status.message()));
        }
      }
      LOG(WARNING) << "job " << job_id << ": the checkpoint at step " << restore_step
                   << " is unusable: " << status.message();
      if (LatestGoodCheckpoint(job.status) == nullptr) {
        EndJob(&job, FAILED,
               absl::StrCat("no good checkpoint to restart from; the last one: ", status.message()));
        return;
      }
    }
    Touch(&job);
    return;
  }
  job.status.set_state(RUNNING);
  if (restore_step > 0) {
    job.status.set_resumed_from_step(restore_step);
    job.status.set_message(absl::StrCat("resumed from the checkpoint at step ", restore_step,
                                        " (restart ", job.status.restarts(), ")"));
  }
  job.status.set_start_time_ms(Millis(options_.clock()));
  for (const ShardAssignment& shard : shard_map.shards()) {
    for (const std::string& server : {shard.server_id(), shard.backup_server_id()}) {
      auto node = nodes_.find(server);
      if (node == nodes_.end()) continue;
      std::vector<std::string>& hosted = node->second.hosted_jobs;
      if (std::find(hosted.begin(), hosted.end(), job_id) == hosted.end()) {
        hosted.push_back(job_id);
      }
    }
  }
  *job.status.mutable_shard_map() = std::move(shard_map);
  for (uint32_t rank = 0; rank < job.workers.size(); ++rank) {
    WorkerProgress* w = job.status.add_workers();
    w->set_rank(rank);
    w->set_worker_id(job.workers[rank]);
    w->set_step(restore_step);
    SaveNode(job.workers[rank], Save::kLater);  // With the job, by Touch.
  }
  Touch(&job);
}

}  // namespace psrv
