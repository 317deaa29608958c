// The coordinator's state and decisions, without gRPC: which servers and workers are alive, which
// job runs where (shard map, worker ranks), and each job's lifecycle and progress. A front over
// one class per concern (membership.h, scheduler.h, failover.h, backups.h, worker_sets.h,
// checkpoints.h, progress.h; persistence in state_records.h), which share its state and lock.
#ifndef PSRV_COORDINATOR_CLUSTER_H_
#define PSRV_COORDINATOR_CLUSTER_H_

#include <cstdint>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/job_spec.h"
#include "coordinator/backups.h"
#include "coordinator/step_timeouts.h"
#include "coordinator/checkpoints.h"
#include "coordinator/cluster_options.h"
#include "coordinator/cluster_state.h"
#include "coordinator/failover.h"
#include "coordinator/membership.h"
#include "coordinator/progress.h"
#include "coordinator/scheduler.h"
#include "coordinator/server_calls.h"
#include "coordinator/state_store.h"
#include "coordinator/worker_sets.h"
#include "proto/coordinator.pb.h"

namespace psrv {

// Thread-safe. Time comes from `clock` so tests can move it. One lock guards the state; no call
// to a server is made under it: what to send is decided under the lock, sent without it (calls to
// different servers at once, each with its deadline) and the replies are applied under it again,
// if the job is still in the run they were meant for.
//
// With a StateStore (Options::state), every change to a job or node is written to it before the
// call that made it returns, except progress reports that end nothing (ReportProgress is called
// at every worker's every few steps): Tick() writes those. A coordinator created on the same
// store after a restart (Load()) carries on with its jobs and nodes. A failed write is logged,
// counted by the store and retried at the next Tick(); the cluster carries on meanwhile.
class ClusterCoordinator {
 public:
  using Options = ClusterOptions;

  explicit ClusterCoordinator(Options options);
  ~ClusterCoordinator();  // Waits for the calls in flight (checkpoints, probes, replies).

  // With Options::state: reads the jobs, nodes and id counters it holds. Call once, before
  // anything else. Loaded nodes count as just heard from (they have the usual 10 heartbeat
  // intervals to show up again), but are SUSPECT, and given no new job, until they do. A job
  // whose shards were being created is PENDING again. Errors
  // of the store are returned (DATA_LOSS: a record that does not parse or does not add up).
  absl::Status Load();

  // RPC semantics are those of proto/coordinator.proto.
  absl::StatusOr<RegisterResponse> Register(const RegisterRequest& request);
  absl::StatusOr<HeartbeatResponse> Heartbeat(const HeartbeatRequest& request);
  absl::Status Leave(const std::string& node_id);
  ListNodesResponse ListNodes();
  absl::StatusOr<std::string> SubmitJob(JobSpec spec);
  absl::StatusOr<JobStatus> GetJob(const std::string& job_id);
  ListJobsResponse ListJobs();
  absl::StatusOr<JobStatus> CancelJob(const std::string& job_id);
  absl::StatusOr<ShardMap> GetShardMap(const std::string& job_id);
  absl::StatusOr<ReportProgressResponse> ReportProgress(const ReportProgressRequest& request);
  // Checks the server on a thread of its own (one at a time per server); a server that does not
  // answer the probe is DEAD from then on (until it sends a heartbeat again), so the next Tick()
  // fails its shards over. NOT_FOUND: no server has that address.
  absl::Status ReportUnreachable(const std::string& address);

  // Writes a consistent checkpoint of a RUNNING SYNC job: asks its servers for their shards'
  // version, then has every server save its shards at version max + 2 (a step no shard has
  // passed), in parallel, under `directory` (empty: the job's checkpoint.directory). Blocks until
  // all files are written; records and returns the manifest. FAILED_PRECONDITION: not RUNNING, not
  // SYNC, no directory, or a checkpoint of the job already in progress. Errors of the servers
  // are returned as they are, except a shard that moved past the target (fast steps), which is
  // retried a few times with a wider margin.
  absl::StatusOr<CheckpointManifest> CheckpointJob(const std::string& job_id,
                                                   const std::string& directory = "");

  // Blocks until job `job_id` changed after `*revision` or `timeout` passed; then sets `*revision`
  // and returns the job's status. NOT_FOUND for an unknown job.
  absl::StatusOr<JobStatus> WaitForJobChange(const std::string& job_id, uint64_t* revision,
                                             absl::Duration timeout);

  // One round of scheduling and failure detection: starts PENDING jobs for which enough healthy
  // servers and idle workers exist (creating their shards, restored from the job's latest good
  // checkpoint if it is being restarted), and handles RUNNING jobs whose nodes stopped sending
  // heartbeats or left: a SYNC job with a good checkpoint is restarted from it on other nodes, any
  // other FAILS; one that lost only workers goes on without them (SYNC: the servers are told to
  // stop waiting for them), and an idle worker takes a vacant rank over. Called periodically by
  // the coordinator's main loop. Waits for the replies of the calls it makes up to
  // Options::reply_wait; those that come later are applied when they come, and their job gets
  // no second call of the same kind meanwhile, so a server that does not answer holds up no
  // other job.
  // Called by one thread at a time.
  void Tick();

 private:
  const Options options_;
  absl::Mutex mu_;
  ClusterState state_ ABSL_GUARDED_BY(mu_);
  // The threads of the calls to servers; stopped (waited for) first on destruction.
  ServerCalls calls_;
  // The concerns, each given options_, mu_, state_ and calls_.
  Membership membership_;
  JobProgress progress_;
  Scheduler scheduler_;
  Failover failover_;
  BackupRepair backups_;
  StepTimeouts step_timeouts_;
  WorkerSets worker_sets_;
  Checkpoints checkpoints_;
  absl::Time previous_tick_ = absl::InfinitePast();  // Real time; only Tick() uses it.
};

}  // namespace psrv

#endif  // PSRV_COORDINATOR_CLUSTER_H_
