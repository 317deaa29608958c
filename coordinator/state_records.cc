#include "coordinator/state_records.h"

#include <algorithm>
#include <optional>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"

namespace psrv {
namespace {

// Names of the id counters in the state store.
constexpr char kNextNodeCounter[] = "next_node";
constexpr char kNextJobCounter[] = "next_job";

JobRecord JobToRecord(const Job& job) {
  JobRecord record;
  *record.mutable_status() = job.status;
  for (const std::string& worker : job.workers) record.add_workers(worker);
  for (bool done : job.done) record.add_done(done);
  record.set_last_checkpoint_step(job.last_checkpoint_step);
  return record;
}

NodeRecord NodeToRecord(const std::string& id, const Node& node) {
  NodeRecord record;
  record.mutable_info()->set_node_id(id);
  record.mutable_info()->set_role(node.info.role());
  record.mutable_info()->set_address(node.info.address());
  record.set_job_id(node.job_id);
  record.set_rank(node.rank);
  return record;
}

absl::Status RestoreJob(StateStore::StoredJob& stored, ClusterState* state) {
  JobRecord& record = stored.record;
  const int workers = static_cast<int>(record.status().spec().num_workers());
  if (record.status().job_id() != stored.id || record.workers_size() != workers ||
      record.done_size() != workers) {
    return absl::DataLossError(absl::StrCat("state database ", state->options.state->path(),
                                            ": the record of job \"", stored.id,
                                            "\" does not add up (id, workers, done)"));
  }
  Job& job = state->jobs[stored.id];
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
  job.revision = ++state->revision;
  state->job_order.push_back(stored.id);
  state->next_job = std::max(state->next_job, stored.sequence + 1);
  return absl::OkStatus();
}

void RestoreNode(NodeRecord& record, absl::Time now, ClusterState* state) {
  Node& node = state->nodes[record.info().node_id()];
  node.info = std::move(*record.mutable_info());
  node.job_id = record.job_id();
  node.rank = record.rank();
  node.last_heartbeat = now;  // The usual grace to show up again.
  node.unconfirmed = true;
  state->Reattach(&node);
  std::optional<uint64_t> number = NodeNumber(node.info.node_id(), node.info.role());
  if (number.has_value()) state->next_node = std::max(state->next_node, *number + 1);
}

}  // namespace

StateStore::Batch UnsavedRecords(const ClusterState& state) {
  StateStore::Batch batch;
  for (const std::string& id : state.unsaved_jobs) {
    auto it = state.jobs.find(id);
    if (it != state.jobs.end()) batch.PutJob(id, it->second.sequence, JobToRecord(it->second));
  }
  for (const std::string& id : state.unsaved_nodes) {
    auto it = state.nodes.find(id);
    if (it == state.nodes.end()) {
      batch.DeleteNode(id);
    } else {
      batch.PutNode(NodeToRecord(id, it->second));
    }
  }
  batch.PutCounter(kNextNodeCounter, state.next_node);
  batch.PutCounter(kNextJobCounter, state.next_job);
  return batch;
}

absl::Status RestoreState(StateStore::Contents contents, ClusterState* state) {
  for (StateStore::StoredJob& stored : contents.jobs) {
    if (absl::Status restored = RestoreJob(stored, state); !restored.ok()) return restored;
  }
  const absl::Time now = state->Now();
  for (NodeRecord& record : contents.nodes) RestoreNode(record, now, state);
  for (const auto& [name, value] : contents.counters) {
    if (name == kNextNodeCounter) state->next_node = std::max(state->next_node, value);
    if (name == kNextJobCounter) state->next_job = std::max(state->next_job, value);
  }
  return absl::OkStatus();
}

}  // namespace psrv
