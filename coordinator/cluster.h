// The coordinator's state and decisions, without gRPC: which servers and workers are alive, which
// job runs where (shard map, worker ranks), and each job's lifecycle and progress.
#ifndef PSRV_COORDINATOR_CLUSTER_H_
#define PSRV_COORDINATOR_CLUSTER_H_

#include <cstdint>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/job_spec.h"
#include "coordinator/state_store.h"
#include "proto/admin.pb.h"
#include "proto/coordinator.pb.h"
#include "proto/parameter_server.pb.h"

namespace psrv {

// Creates shards on the server at `address` (the coordinator passes a gRPC call; tests a fake).
using ShardCreator =
    std::function<absl::Status(const std::string& address, const CreateShardsRequest& request)>;
// The highest version of `job_id`'s shards on the server at `address` (Admin.GetStatus).
using ShardVersionReader =
    std::function<absl::StatusOr<uint64_t>(const std::string& address, const std::string& job_id)>;
// ParameterServer.SaveCheckpoint on the server at `address`; blocks until the files are written.
using CheckpointSaver = std::function<absl::StatusOr<SaveCheckpointResponse>(
    const std::string& address, const SaveCheckpointRequest& request)>;
// ParameterServer.SetWorkers on the server at `address`.
using WorkerSetSender =
    std::function<absl::Status(const std::string& address, const SetWorkersRequest& request)>;
// ParameterServer.Promote on the server at `address` (the backup of a lost primary).
using BackupPromoter = std::function<absl::StatusOr<PromoteResponse>(
    const std::string& address, const PromoteRequest& request)>;
// ParameterServer.AddBackup on the server at `address` (a primary that lost its backup).
using BackupAdder = std::function<absl::StatusOr<AddBackupResponse>(
    const std::string& address, const AddBackupRequest& request)>;
// Admin.GetStatus of `job_id`'s shards on the server at `address`.
using ServerStatusReader = std::function<absl::StatusOr<ServerStatus>(
    const std::string& address, const std::string& job_id)>;
// Whether the server at `address` answers at all (any gRPC reply within a short deadline).
using ServerProbe = std::function<absl::Status(const std::string& address)>;
// ParameterServer.DropJob on the server at `address`.
using ShardDropper =
    std::function<absl::Status(const std::string& address, const std::string& job_id)>;

// Thread-safe. Time comes from `clock` so tests can move it.
//
// With a StateStore (Options::state), every change to a job or node is written to it before the
// call that made it returns, except progress reports that end nothing (ReportProgress is called
// at every worker's every few steps): Tick() writes those. A coordinator created on the same
// store after a restart (Load()) carries on with its jobs and nodes. A failed write is logged,
// counted by the store and retried at the next Tick(); the cluster carries on meanwhile.
class ClusterCoordinator {
 public:
  struct Options {
    absl::Duration heartbeat_interval = absl::Milliseconds(500);
    ShardCreator create_shards;
    ShardVersionReader shard_version;  // Both needed for checkpoints.
    CheckpointSaver save_checkpoint;
    ShardDropper drop_job;  // Needed to restart jobs from checkpoints.
    WorkerSetSender set_workers;  // Needed to go on without lost workers (SYNC).
    BackupPromoter promote;       // Needed to fail over to backups (JobSpec.replicas = 2).
    BackupAdder add_backup;       // Needed to give shards a new backup.
    ServerProbe probe;            // Needed by ReportUnreachable.
    // Read every second for jobs with backups, to notice a backup its primary dropped.
    ServerStatusReader server_status;

    // Restarts from a checkpoint a job may take before a lost node FAILS it.
    uint32_t max_restarts = 10;
    std::function<absl::Time()> clock = [] { return absl::Now(); };
    StateStore* state = nullptr;  // Not owned; null: jobs and nodes are kept in memory only.
  };

  explicit ClusterCoordinator(Options options);
  ~ClusterCoordinator();  // Waits for checkpoints in progress.

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
  // the coordinator's main loop.
  void Tick();

 private:
  struct Node {
    NodeInfo info;
    absl::Time last_heartbeat;
    std::string job_id;  // Workers: the job assigned, until done or told to stop.
    uint32_t rank = 0;
    std::vector<std::string> hosted_jobs;  // Servers: jobs with shards here.
    bool cancel = false;  // Workers: tell it to stop its run at the next heartbeat.
    bool unreachable = false;  // Servers: a worker reported it and it failed the probe: DEAD.
    bool probing = false;      // Servers: a probe is running.
    // Loaded by Load() and not heard from since: SUSPECT at best, so it is given no new work
    // before it shows up.
    bool unconfirmed = false;
  };
  struct Job {
    JobStatus status;
    uint64_t sequence = 0;  // Submission order: the N of job-N.
    uint64_t revision = 0;
    bool starting = false;              // Shards are being created.
    std::vector<std::string> workers;   // Node id per rank.
    std::vector<bool> done;             // Per rank.
    bool checkpointing = false;         // A CheckpointJob is in progress.
    bool filling = false;               // A worker is being given a vacant rank.
    bool adding_backup = false;         // An AddBackup for one of its shards is in flight.
    uint64_t worker_set = 0;            // Changes to the set of ranks the steps wait for...
    uint64_t worker_set_sent = 0;       // ...and the last one every server acknowledged.
    uint64_t last_checkpoint_step = 0;  // Step of the last periodic checkpoint attempt.
    absl::Time last_checkpoint_time = absl::InfinitePast();  // Its time (or the job's start).
  };

  // Starts periodic checkpoints that are due (on their own threads).
  void StartDueCheckpoints();
  // Runs `fn` on a detached thread the destructor waits for; nothing once it has begun.
  void RunInBackground(std::function<void()> fn) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  NodeHealth HealthOf(const Node& node, absl::Time now) const;

  // When a change reaches Options::state: before the call returns, or with the next write (at
  // the latest the next Tick).
  enum class Save { kNow, kLater };
  // Records a change of `job`: wakes its watchers and saves it.
  void Touch(Job* job, Save save = Save::kNow) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Saves node `node_id`, or deletes its record if it is no longer in nodes_.
  void SaveNode(const std::string& node_id, Save save = Save::kNow)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Writes every unsaved job and node, and the id counters, in one transaction.
  void SaveState() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Rebuilds what the jobs say about a node that comes back (loaded, or registering again under
  // an id this coordinator had forgotten): the jobs whose shards a server holds; the job and
  // rank of a worker that a RUNNING job names.
  void Reattach(Node* node) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void EndJob(Job* job, JobState state, const std::string& message)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<Job*> FindJob(const std::string& job_id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void StartJobs();
  // Fails a RUNNING job's shards held by lost server `server_id` over to their backups: the
  // backups become primaries in the shard map (a new epoch; `promoted_from` marks them until
  // SendPromotions has their servers' confirmation). Shards the lost server backed up lose their
  // backup. False (nothing changed) if some shard of it has no live backup.
  bool FailOver(Job* job, const std::string& server_id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Sends Promote for every shard marked `promoted_from` (idempotent on the servers); checks that
  // the promoted copies are not behind the workers; restarts or fails the job if they cannot take
  // over. Appends the shards to drop then to `drops`.
  void SendPromotions(std::vector<std::pair<std::string, std::string>>* drops);
  // Gives one shard without a backup (of a RUNNING job with replicas = 2) a backup on another
  // healthy server, by AddBackup on its primary (on a thread of its own, one at a time per job).
  // Every second it also asks the primaries which backups they dropped (Admin.GetStatus,
  // ShardStatus.backup_lost) and takes those out of the shard map, so they get a new backup and
  // are never promoted.
  void RepairBackups();
  void ForgetDroppedBackups();
  // Every server holding a shard of the job, primary or backup.
  static std::set<std::string> ServerAddresses(const JobStatus& status);

  // Restarts or fails RUNNING jobs that lost a server, vacates the ranks of lost workers (see Tick).
  void HandleLostNodes();
  // Sends SYNC jobs' changed worker sets to their servers.
  void SendWorkerSets();
  // Gives a vacant rank of a RUNNING job to an idle worker.
  void FillVacantRanks();
  // Marks the ranks vacant and tells their workers to stop. False (nothing changed) if no worker
  // would be left to compute.
  bool VacateRanks(Job* job, const std::vector<uint32_t>& ranks) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Per rank, the first step the servers wait for its pushes (SetWorkersRequest.from_step).
  std::vector<uint64_t> FromSteps(const Job& job) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Every rank is done or vacant (and at least one is done): SUCCEEDED.
  bool AllRanksFinished(const Job& job) const;
  // Takes `job` back to PENDING so that StartJobs restores it from its latest good checkpoint:
  // frees its workers (telling them to stop) and appends to `drops` the (server address, job) of
  // the shards to drop. False (nothing changed) if the job cannot be restarted: not SYNC, no good
  // checkpoint, or out of restarts.
  bool RestartFromCheckpoint(Job* job, const std::string& reason,
                             std::vector<std::pair<std::string, std::string>>* drops)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const Options options_;
  absl::Mutex mu_;
  uint64_t next_node_ ABSL_GUARDED_BY(mu_) = 1;
  uint64_t next_job_ ABSL_GUARDED_BY(mu_) = 1;
  uint64_t revision_ ABSL_GUARDED_BY(mu_) = 0;
  std::map<std::string, Node> nodes_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, Job> jobs_ ABSL_GUARDED_BY(mu_);
  std::vector<std::string> job_order_ ABSL_GUARDED_BY(mu_);  // Submission order.
  // Periodic checkpoints and server probes run on detached threads of their own (RunInBackground);
  // the destructor waits for them.
  int background_running_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Time last_backup_check_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  // Changed since last written to Options::state.
  std::set<std::string> unsaved_jobs_ ABSL_GUARDED_BY(mu_);
  std::set<std::string> unsaved_nodes_ ABSL_GUARDED_BY(mu_);
};

}  // namespace psrv

#endif  // PSRV_COORDINATOR_CLUSTER_H_
