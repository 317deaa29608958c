// What the coordinator knows about its nodes and jobs: one plain state, owned by
// ClusterCoordinator and used under its lock by the class of each concern (membership.h,
// scheduler.h, failover.h, backups.h, worker_sets.h, checkpoints.h, progress.h).
#ifndef PSRV_COORDINATOR_CLUSTER_STATE_H_
#define PSRV_COORDINATOR_CLUSTER_STATE_H_

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "coordinator/cluster_options.h"
#include "coordinator/server_calls.h"
#include "proto/coordinator.pb.h"

namespace psrv {

struct Node {
  NodeInfo info;
  absl::Time last_heartbeat;
  std::string job_id;  // Workers: the job assigned, until done or told to stop.
  uint32_t rank = 0;
  std::vector<std::string> hosted_jobs;  // Servers: jobs with shards here.
  bool cancel = false;  // Workers: tell it to stop its run at the next heartbeat.
  bool unreachable = false;  // Servers: a worker reported it and it failed the probe: DEAD.
  bool probing = false;      // Servers: a probe is running.
  absl::Time silent_probe;   // Servers: when ProbeSilentServers last probed it.
  // Loaded by Load() and not heard from since: SUSPECT at best, so it is given no new work
  // before it shows up.
  bool unconfirmed = false;
  // Workers: dropped from a job for a step it never pushed (step timeout): its compute hangs,
  // so it gets no work until it reports again.
  bool hung = false;
  // Workers: its final report said it takes no further job (--max_jobs): it is about to leave.
  bool leaving = false;
  // Servers: jobs whose shards failed over away from this server (it was taken for lost), by
  // whether a heartbeat response told it already to drop them (HeartbeatResponse.drop_jobs).
  // Forgotten at the heartbeat after that one (the server handled the response first); until
  // then the server gets no new shard of the job.
  std::map<std::string, bool> deposed_jobs;
};

struct Job {
  JobStatus status;
  uint64_t sequence = 0;  // Submission order: the N of job-N.
  uint64_t revision = 0;
  // Raised each time the job starts RUNNING: a reply to a call made for an earlier run (before a
  // restart) is not applied to this one.
  uint64_t run = 0;
  std::vector<std::string> workers;   // Node id per rank.
  std::vector<bool> done;             // Per rank.
  // Calls in flight for the job (one of each kind at a time):
  bool starting = false;              // CreateShards.
  bool checkpointing = false;         // A CheckpointJob.
  bool filling = false;               // A worker is being given a vacant rank.
  bool adding_backup = false;         // An AddBackup for one of its shards.
  bool promoting = false;             // Promote of its promoted shards.
  bool checking_backups = false;      // Admin.GetStatus of its primaries.
  bool checking_steps = false;        // Admin.GetStatus of its primaries, for step timeouts.
  // SYNC: ranks whose push a step waited for longer than training.step_timeout_seconds: lost,
  // as if dead (Failover).
  std::set<uint32_t> stalled_ranks;
  bool sending_worker_set = false;    // SetWorkers.
  uint64_t worker_set = 0;            // Changes to the set of ranks the steps wait for...
  uint64_t worker_set_sent = 0;       // ...and the last one every server acknowledged.
  uint64_t last_checkpoint_step = 0;  // Step of the last periodic checkpoint attempt.
  absl::Time last_checkpoint_time = absl::InfinitePast();  // Its time (or the job's start).
};

// When a change reaches ClusterOptions::state: before the call that made it returns, or with
// the next write (at the latest the next Tick).
enum class Save { kNow, kLater };

// The nodes and jobs, and what of them is not saved yet. Not thread-safe: used under the lock of
// the ClusterCoordinator that owns it.
struct ClusterState {
  explicit ClusterState(const ClusterOptions& options) : options(options) {}

  absl::Time Now() const { return options.clock(); }
  NodeHealth HealthOf(const Node& node, absl::Time now) const;
  absl::StatusOr<Job*> FindJob(const std::string& job_id);
  // Records a change of `job`: wakes its watchers and saves it.
  void Touch(Job* job, Save save = Save::kNow);
  // Saves node `node_id`, or deletes its record if it is no longer in `nodes`.
  void SaveNode(const std::string& node_id, Save save = Save::kNow);
  // Writes every unsaved job and node, and the id counters, in one transaction.
  void SaveChanges();
  void EndJob(Job* job, JobState state, const std::string& message);
  // Rebuilds what the jobs say about a node that comes back (loaded, or registering again under
  // an id this coordinator had forgotten): the jobs whose shards a server holds; the job and
  // rank of a worker that a RUNNING job names.
  void Reattach(Node* node);
  // The worker part of Reattach: the job and rank a RUNNING job gives it.
  void ReattachWorker(Node* node);
  // Adds `job_id` to, or takes it from, the jobs node `node_id` (if known) hosts.
  void AddHostedJob(const std::string& node_id, const std::string& job_id);
  void RemoveHostedJob(const std::string& node_id, const std::string& job_id);

  const ClusterOptions& options;
  uint64_t next_node = 1;
  uint64_t next_job = 1;
  uint64_t revision = 0;
  std::map<std::string, Node> nodes;
  std::map<std::string, Job> jobs;
  std::vector<std::string> job_order;  // Submission order.
  // Changed since last written to options.state.
  std::set<std::string> unsaved_jobs;
  std::set<std::string> unsaved_nodes;
};

// What the class of each concern is given by the ClusterCoordinator that owns them all: its
// options, its lock with the state it guards, and the threads its calls to servers run on. Each
// class takes the lock itself, and releases it around every call to a server.
struct ClusterContext {
  const ClusterOptions& options;
  absl::Mutex& mu;
  ClusterState& state ABSL_GUARDED_BY(mu);
  ServerCalls& calls;
};

int64_t Millis(absl::Time t);
// "server-" or "worker-": node ids are the prefix of their role and a number.
std::string NodeIdPrefix(NodeRole role);
// N of a node id "server-N" (SERVER) or "worker-N" (WORKER); none if `id` is not one.
std::optional<uint64_t> NodeNumber(const std::string& id, NodeRole role);
// The newest checkpoint not known to be bad, or null.
const CheckpointManifest* LatestGoodCheckpoint(const JobStatus& status);
// Every server holding a shard of the job, primary or backup.
std::vector<std::string> ServerAddresses(const JobStatus& status);
// Whether `job` still runs the run it ran when a call for it was planned.
inline bool StillRunning(const Job& job, uint64_t run) {
  return job.status.state() == RUNNING && job.run == run;
}

}  // namespace psrv

#endif  // PSRV_COORDINATOR_CLUSTER_STATE_H_
