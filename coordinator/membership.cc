#include "coordinator/membership.h"

#include <glog/logging.h>

#include <algorithm>
#include <optional>

#include "absl/strings/str_cat.h"
#include "common/job_spec.h"

namespace psrv {

absl::StatusOr<std::string> Membership::IdFor(const RegisterRequest& request) {
  ClusterState& state = cluster_.state;
  const std::string& id = request.node_id();
  if (id.empty()) return absl::StrCat(NodeIdPrefix(request.role()), state.next_node++);
  auto known = state.nodes.find(id);
  if (known != state.nodes.end()) {
    if (known->second.info.role() != request.role()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "node ", id, " is a ", NodeRole_Name(known->second.info.role()),
          "; it cannot register again as a ", NodeRole_Name(request.role())));
    }
    return id;
  }
  // Forgotten (a restart without state): give the id back, and never hand it out again.
  std::optional<uint64_t> number = NodeNumber(id, request.role());
  if (!number.has_value()) {
    return absl::InvalidArgumentError(
        absl::StrCat("node_id \"", id, "\" is not an id of a ", NodeRole_Name(request.role()),
                     " (", NodeIdPrefix(request.role()), "N)"));
  }
  state.next_node = std::max(state.next_node, *number + 1);
  return id;
}

void Membership::ForgetReplacedServers(const RegisterRequest& request, const std::string& id) {
  if (request.incarnation() == 0) return;  // Tells nothing.
  for (auto& [other_id, other] : cluster_.state.nodes) {
    if (other.info.role() != SERVER || other.info.address() != request.address() ||
        other.info.incarnation() == 0 || other.info.incarnation() == request.incarnation() ||
        other.unreachable) {
      continue;
    }
    // A new process at this address (restarted in place): the old one and its shards are gone.
    LOG(WARNING) << "server " << other_id << " at " << request.address()
                 << " was replaced by a new process (" << id << "): it is lost";
    other.unreachable = true;
  }
}

absl::StatusOr<RegisterResponse> Membership::Register(const RegisterRequest& request) {
  if (request.role() != SERVER && request.role() != WORKER) {
    return absl::InvalidArgumentError("role must be SERVER or WORKER");
  }
  if (request.address().empty()) return absl::InvalidArgumentError("address must be set");
  absl::MutexLock lock(&cluster_.mu);
  ClusterState& state = cluster_.state;
  const bool returning = !request.node_id().empty() && state.nodes.count(request.node_id()) == 0;
  absl::StatusOr<std::string> id = IdFor(request);
  if (!id.ok()) return id.status();
  if (request.role() == SERVER) ForgetReplacedServers(request, *id);
  Node& node = state.nodes[*id];
  node.info.set_node_id(*id);
  node.info.set_role(request.role());
  node.info.set_address(request.address());
  node.info.set_incarnation(request.incarnation());
  node.info.set_memory_bytes(request.memory_bytes());
  node.last_heartbeat = state.Now();
  node.unconfirmed = false;
  if (returning) state.Reattach(&node);
  state.SaveNode(*id);
  RegisterResponse response;
  response.set_node_id(*id);
  response.set_heartbeat_interval_ms(absl::ToInt64Milliseconds(cluster_.options.heartbeat_interval));
  return response;
}

absl::StatusOr<HeartbeatResponse> Membership::Heartbeat(const HeartbeatRequest& request) {
  absl::MutexLock lock(&cluster_.mu);
  ClusterState& state = cluster_.state;
  auto it = state.nodes.find(request.node_id());
  if (it == state.nodes.end()) {
    return absl::NotFoundError(
        absl::StrCat("unknown node \"", request.node_id(), "\"; register again"));
  }
  Node& node = it->second;
  node.last_heartbeat = state.Now();
  node.unreachable = false;  // It is alive after all.
  node.unconfirmed = false;
  HeartbeatResponse response;
  for (auto deposed = node.deposed_jobs.begin(); deposed != node.deposed_jobs.end();) {
    if (deposed->second) {
      deposed = node.deposed_jobs.erase(deposed);  // Dropped while handling the last response.
      continue;
    }
    LOG(WARNING) << "server " << node.info.node_id() << " is back; its shards of job "
                 << deposed->first << " failed over meanwhile: it drops them";
    response.add_drop_jobs(deposed->first);
    deposed->second = true;
    ++deposed;
  }
  for (const std::string& hosted : node.hosted_jobs) {
    auto job = state.jobs.find(hosted);
    if (job != state.jobs.end() && IsTerminal(job->second.status.state())) {
      response.add_ended_jobs(hosted);
    }
  }
  if (node.cancel) {
    response.set_cancel(true);
    node.cancel = false;
  }
  if (!node.job_id.empty()) Assign(&node, &response);
  return response;
}

void Membership::Assign(Node* node, HeartbeatResponse* response) {
  ClusterState& state = cluster_.state;
  const std::string& node_id = node->info.node_id();
  auto found = state.jobs.find(node->job_id);
  if (found == state.jobs.end()) {
    node->job_id.clear();
    state.SaveNode(node_id);
    return;
  }
  const Job& job = found->second;
  const JobState job_state = job.status.state();
  if (job_state == RUNNING && !job.done[node->rank] && job.workers[node->rank] == node_id) {
    WorkAssignment* assignment = response->mutable_assignment();
    assignment->set_job_id(node->job_id);
    *assignment->mutable_spec() = job.status.spec();
    assignment->set_rank(node->rank);
    *assignment->mutable_shard_map() = job.status.shard_map();
    uint64_t start = job.status.resumed_from_step() + 1;
    if (static_cast<int>(node->rank) < job.status.workers_size()) {
      start = std::max(start, job.status.workers(node->rank).start_step());
    }
    assignment->set_start_step(start);
    assignment->set_attempt(job.status.restarts());
    const uint32_t stages = PipelineStages(job.status.spec());
    if (stages > 1) {
      // The workers of its pipeline group, stage by stage: where each serves StageExchange.
      const uint32_t first = node->rank / stages * stages;
      for (uint32_t s = 0; s < stages; ++s) {
        auto peer = state.nodes.find(job.workers[first + s]);
        assignment->add_stage_addresses(peer == state.nodes.end() ? ""
                                                                  : peer->second.info.address());
      }
    }
  } else if (job_state == FAILED || job_state == CANCELLED) {
    response->set_cancel(true);
    node->job_id.clear();
    state.SaveNode(node_id);
  } else if (job_state == SUCCEEDED) {
    node->job_id.clear();
    state.SaveNode(node_id);
  }
}

absl::Status Membership::Leave(const std::string& node_id) {
  absl::MutexLock lock(&cluster_.mu);
  if (cluster_.state.nodes.erase(node_id) == 0) {
    return absl::NotFoundError(absl::StrCat("unknown node \"", node_id, "\""));
  }
  cluster_.state.SaveNode(node_id);  // Deletes its record.
  return absl::OkStatus();
}

ListNodesResponse Membership::ListNodes() {
  absl::MutexLock lock(&cluster_.mu);
  const ClusterState& state = cluster_.state;
  const absl::Time now = state.Now();
  ListNodesResponse response;
  for (const auto& [id, node] : state.nodes) {
    NodeInfo* info = response.add_nodes();
    *info = node.info;
    info->set_health(state.HealthOf(node, now));
    info->set_last_heartbeat_ms(Millis(node.last_heartbeat));
    info->set_job_id(node.job_id);
    info->set_rank(node.rank);
  }
  return response;
}

absl::Status Membership::ReportUnreachable(const std::string& address) {
  if (address.empty()) return absl::InvalidArgumentError("address must be set");
  absl::MutexLock lock(&cluster_.mu);
  for (auto& [id, node] : cluster_.state.nodes) {
    if (node.info.role() != SERVER || node.info.address() != address) continue;
    if (node.probing || node.unreachable || !cluster_.options.probe) return absl::OkStatus();
    node.probing = cluster_.calls.Start([this, id = id, address] { Probe(id, address); });
    return absl::OkStatus();
  }
  return absl::NotFoundError(absl::StrCat("no server registered at ", address));
}

void Membership::ProbeSilentServers() {
  if (!cluster_.options.probe) return;
  absl::MutexLock lock(&cluster_.mu);
  ClusterState& state = cluster_.state;
  const absl::Time now = state.Now();
  for (auto& [id, node] : state.nodes) {
    if (node.info.role() != SERVER || node.probing || node.unreachable || node.unconfirmed ||
        state.HealthOf(node, now) != SUSPECT || now - node.silent_probe < absl::Seconds(1)) {
      continue;
    }
    const bool running = std::any_of(
        node.hosted_jobs.begin(), node.hosted_jobs.end(), [&](const std::string& job_id) {
          auto job = state.jobs.find(job_id);
          return job != state.jobs.end() && job->second.status.state() == RUNNING;
        });
    if (!running) continue;
    node.silent_probe = now;
    node.probing = cluster_.calls.Start(
        [this, id = id, address = node.info.address()] { Probe(id, address, /*tries=*/1); });
  }
}

void Membership::ExcusePause(absl::Duration pause) {
  absl::MutexLock lock(&cluster_.mu);
  ClusterState& state = cluster_.state;
  const absl::Time now = state.Now();
  int excused = 0;
  for (auto& [id, node] : state.nodes) {
    if (state.HealthOf(node, now - pause) == DEAD) continue;  // Lost before the pause.
    node.last_heartbeat = std::min(now, node.last_heartbeat + pause);
    node.silent_probe = std::min(now, node.silent_probe + pause);
    ++excused;
  }
  LOG(WARNING) << "the coordinator was stopped for " << absl::FormatDuration(pause)
               << " (SIGSTOP, a paused machine or no CPU): " << excused
               << " nodes are excused that much silence";
}

void Membership::Probe(const std::string& node_id, const std::string& address, int tries) {
  absl::StatusOr<uint64_t> answered = cluster_.options.probe(address);
  for (int i = 1; i < tries && !answered.ok(); ++i) answered = cluster_.options.probe(address);
  absl::MutexLock lock(&cluster_.mu);
  auto node = cluster_.state.nodes.find(node_id);
  if (node == cluster_.state.nodes.end()) return;
  node->second.probing = false;
  if (!answered.ok()) {
    LOG(WARNING) << "server " << node_id << " at " << address
                 << " was reported unreachable and does not answer: " << answered.status();
    node->second.unreachable = true;
    return;
  }
  const uint64_t known = node->second.info.incarnation();
  if (*answered != 0 && known != 0 && *answered != known) {
    LOG(WARNING) << "server " << node_id << " at " << address
                 << " was reported unreachable and another process answers there: it is lost";
    node->second.unreachable = true;
  }
}

}  // namespace psrv
