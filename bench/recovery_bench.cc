// Recovery time after a node is killed with SIGKILL, on a real local cluster (client/local_cluster.h),
// repeated over several trials, each on a fresh cluster:
//  - server: a SYNC job on 1 of 2 servers with a checkpoint every --checkpoint_every steps; its
//    server is killed; the job restarts on the other server from the latest checkpoint.
//  - worker: a SYNC job with 2 workers; one is killed; the servers stop waiting for it.
//  - replicated: a SYNC job on 2 of 3 servers with a backup of every shard; a server is killed;
//    its shards' backups are promoted (detection: the shard map's epoch moves).
// Then what replication costs: steps/s of the same job with and without backups.
// For each trial: detection (kill to the coordinator acting: restart counted / rank vacated),
// recovery (kill to the first step applied after the fault: the job's step, reported by the
// workers after every step, passes the steps in flight at the kill) and the steps lost (server:
// steps redone since the checkpoint; worker: 0 by design, none of its pushes is dropped). Writes
// medians and samples as JSON with the machine it ran on. Detection is bounded by the heartbeat
// timeout: 10 intervals (--heartbeat_interval_ms).
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "bench/machine_info.h"
#include "bench/result_file.h"
#include "bench/sample_stats.h"
#include "client/coordinator_client.h"
#include "client/local_cluster.h"
#include "common/job_spec.h"
#include "common/status_macros.h"

ABSL_FLAG(std::string, data, "../shared/data/tinyshakespeare.txt",
          "Training text (relative paths are taken from the repository root).");
ABSL_FLAG(int, trials, 5, "Kills per scenario, each on a fresh cluster.");
ABSL_FLAG(int, heartbeat_interval_ms, 100, "The coordinator's heartbeat interval.");
ABSL_FLAG(uint64_t, checkpoint_every, 100, "Server scenario: steps between periodic checkpoints.");
ABSL_FLAG(int, throughput_seconds, 5, "Replication cost: seconds of training measured per trial.");
ABSL_FLAG(std::string, out, "", "JSON output path (default bench/results/recovery_<host>.json).");
ABSL_FLAG(std::string, commit, "", "Git commit measured (recorded in the JSON).");

namespace psrv {
namespace {

using Json = nlohmann::ordered_json;

// A small byte-level MLP (fast steps: recovery, not compute, is measured).
JobSpec Job(const std::string& data, uint32_t workers) {
  JobSpec spec;
  spec.set_name("recovery");
  spec.set_num_servers(1);
  spec.set_num_workers(workers);
  spec.mutable_data()->set_path(data);
  spec.mutable_model()->set_kind("mlp");
  spec.mutable_model()->set_context(6);
  spec.mutable_model()->set_embedding_dim(16);
  spec.mutable_model()->set_hidden_dim(128);
  TrainingSpec* t = spec.mutable_training();
  t->set_steps(1000000);
  t->set_batch_size(32);
  t->set_consistency(SYNC);
  t->mutable_optimizer()->set_kind(MOMENTUM);
  t->mutable_optimizer()->set_learning_rate(0.05f);
  t->mutable_optimizer()->set_momentum(0.9f);
  t->set_report_every(1);
  return spec;
}

struct Trial {
  double detection_s = 0;
  double recovery_s = 0;
  double steps_lost = 0;
};

// Polls the job until `done` or `timeout`.
absl::StatusOr<JobStatus> WaitFor(CoordinatorClient* client, const std::string& job,
                                  const std::function<bool(const JobStatus&)>& done,
                                  absl::Duration timeout = absl::Seconds(60)) {
  const absl::Time deadline = absl::Now() + timeout;
  while (true) {
    absl::StatusOr<JobStatus> status = client->GetJob(job);
    if (!status.ok()) return status.status();
    if (done(*status)) return status;
    if (IsTerminal(status->state())) {
      return absl::AbortedError(absl::StrCat("job ended: ", JobState_Name(status->state()), ": ",
                                             status->message()));
    }
    if (absl::Now() > deadline) return absl::DeadlineExceededError("timed out");
    absl::SleepFor(absl::Milliseconds(5));
  }
}

// A fresh local cluster with its own log directory under $TMPDIR.
absl::StatusOr<std::unique_ptr<LocalCluster>> StartCluster(const LocalBinaries& binaries,
                                                          int servers, int workers,
                                                          std::string* log_dir) {
  char pattern[] = "/tmp/psrv_recovery_XXXXXX";
  if (mkdtemp(pattern) == nullptr) return absl::InternalError("mkdtemp failed");
  *log_dir = pattern;
  LocalClusterOptions options;
  options.binaries = binaries;
  options.num_servers = servers;
  options.num_workers = workers;
  options.log_dir = *log_dir;
  options.heartbeat_interval_ms = absl::GetFlag(FLAGS_heartbeat_interval_ms);
  options.worker_max_jobs = 0;
  auto cluster = std::make_unique<LocalCluster>(options);
  RETURN_IF_ERROR(cluster->Start());
  return cluster;
}

std::string ServerNamed(const std::string& log_dir, const std::string& address) {
  for (int i = 0; i < 8; ++i) {
    std::ifstream in(absl::StrCat(log_dir, "/server-", i, ".port"));
    int port = 0;
    if (in >> port && absl::StrCat("127.0.0.1:", port) == address) return absl::StrCat("server ", i);
  }
  return "";
}

uint64_t MaxWorkerStep(const JobStatus& status) {
  uint64_t step = 0;
  for (const WorkerProgress& w : status.workers()) step = std::max(step, w.step());
  return step;
}

// Kills the server of a checkpointed SYNC job; it restarts from the latest checkpoint.
absl::StatusOr<Trial> ServerTrial(const LocalBinaries& binaries, const std::string& data) {
  std::string log_dir;
  ASSIGN_OR_RETURN(std::unique_ptr<LocalCluster> cluster, StartCluster(binaries, 2, 1, &log_dir));
  CoordinatorClientOptions client_options;
  client_options.address = cluster->coordinator_address();
  CoordinatorClient client(client_options);
  JobSpec spec = Job(data, 1);
  spec.mutable_checkpoint()->set_directory(log_dir + "/checkpoints");
  spec.mutable_checkpoint()->set_every_steps(absl::GetFlag(FLAGS_checkpoint_every));
  ASSIGN_OR_RETURN(std::string job, client.SubmitJob(spec));
  // Kill at a random-ish point between two checkpoints: after the first one, half-way on.
  const uint64_t every = absl::GetFlag(FLAGS_checkpoint_every);
  ASSIGN_OR_RETURN(JobStatus before, WaitFor(&client, job, [&](const JobStatus& s) {
                     return s.checkpoints_size() > 0 && s.step() >= s.checkpoints(0).step() + every / 2;
                   }));
  const std::string victim = ServerNamed(log_dir, before.shard_map().shards(0).server_address());
  RETURN_IF_ERROR(cluster->Kill(victim, SIGKILL));
  const absl::Time killed = absl::Now();
  before = client.GetJob(job).value_or(before);
  ASSIGN_OR_RETURN(JobStatus restarted,
                   WaitFor(&client, job, [](const JobStatus& s) { return s.restarts() > 0; }));
  Trial trial;
  trial.detection_s = absl::ToDoubleSeconds(absl::Now() - killed);
  ASSIGN_OR_RETURN(JobStatus resumed, WaitFor(&client, job, [](const JobStatus& s) {
                     return s.state() == RUNNING && s.resumed_from_step() > 0 &&
                            s.step() > s.resumed_from_step();
                   }));
  trial.recovery_s = absl::ToDoubleSeconds(absl::Now() - killed);
  trial.steps_lost = static_cast<double>(MaxWorkerStep(before) - resumed.resumed_from_step());
  (void)client.CancelJob(job);
  cluster->Stop(absl::Seconds(2));
  return trial;
}

// Kills the server holding a replicated SYNC job's first shard (2 of 3 servers used, every shard
// with a backup): the backups are promoted, nothing is redone.
absl::StatusOr<Trial> ReplicatedTrial(const LocalBinaries& binaries, const std::string& data) {
  std::string log_dir;
  ASSIGN_OR_RETURN(std::unique_ptr<LocalCluster> cluster, StartCluster(binaries, 3, 1, &log_dir));
  CoordinatorClientOptions client_options;
  client_options.address = cluster->coordinator_address();
  CoordinatorClient client(client_options);
  JobSpec spec = Job(data, 1);
  spec.set_num_servers(2);
  spec.set_replicas(2);
  ASSIGN_OR_RETURN(std::string job, client.SubmitJob(spec));
  ASSIGN_OR_RETURN(JobStatus before, WaitFor(&client, job, [](const JobStatus& s) {
                     return s.step() >= 100;
                   }));
  const std::string victim = ServerNamed(log_dir, before.shard_map().shards(0).server_address());
  RETURN_IF_ERROR(cluster->Kill(victim, SIGKILL));
  const absl::Time killed = absl::Now();
  ASSIGN_OR_RETURN(JobStatus at_kill, client.GetJob(job));
  const uint64_t in_flight = MaxWorkerStep(at_kill) + 1;
  Trial trial;
  RETURN_IF_ERROR(WaitFor(&client, job, [](const JobStatus& s) {
                    return s.shard_map().epoch() > 0;
                  }).status());
  trial.detection_s = absl::ToDoubleSeconds(absl::Now() - killed);
  ASSIGN_OR_RETURN(JobStatus after, WaitFor(&client, job, [&](const JobStatus& s) {
                     return s.step() > in_flight;
                   }));
  trial.recovery_s = absl::ToDoubleSeconds(absl::Now() - killed);
  trial.steps_lost = after.restarts() > 0 ? -1 : 0;  // -1 would mean a restart (none expected).
  (void)client.CancelJob(job);
  cluster->Stop(absl::Seconds(2));
  return trial;
}

// Steps per second of the same SYNC job on 2 servers, with and without backups: what replication
// costs on this machine (median of per-trial rates; each trial runs --throughput_seconds).
absl::StatusOr<Json> ReplicationCost(const LocalBinaries& binaries, const std::string& data) {
  Json out;
  for (const uint32_t replicas : {1u, 2u}) {
    std::vector<double> rates;
    for (int i = 0; i < absl::GetFlag(FLAGS_trials); ++i) {
      std::string log_dir;
      ASSIGN_OR_RETURN(std::unique_ptr<LocalCluster> cluster,
                       StartCluster(binaries, 2, 1, &log_dir));
      CoordinatorClientOptions client_options;
      client_options.address = cluster->coordinator_address();
      CoordinatorClient client(client_options);
      JobSpec spec = Job(data, 1);
      spec.set_num_servers(2);
      spec.set_replicas(replicas);
      spec.mutable_training()->set_report_every(10);
      ASSIGN_OR_RETURN(std::string job, client.SubmitJob(spec));
      ASSIGN_OR_RETURN(JobStatus start, WaitFor(&client, job, [](const JobStatus& s) {
                         return s.step() >= 50;
                       }));
      const absl::Time t0 = absl::Now();
      absl::SleepFor(absl::Seconds(absl::GetFlag(FLAGS_throughput_seconds)));
      ASSIGN_OR_RETURN(JobStatus end, client.GetJob(job));
      rates.push_back(static_cast<double>(end.step() - start.step()) /
                      absl::ToDoubleSeconds(absl::Now() - t0));
      (void)client.CancelJob(job);
      cluster->Stop(absl::Seconds(2));
    }
    out[absl::StrCat("replicas_", replicas, "_steps_per_s_median")] = Quantile(rates, 0.5);
    out[absl::StrCat("replicas_", replicas, "_steps_per_s")] = rates;
  }
  out["ratio_2_over_1"] = out["replicas_2_steps_per_s_median"].get<double>() /
                          out["replicas_1_steps_per_s_median"].get<double>();
  return out;
}

// Kills one of a SYNC job's two workers; the other goes on alone.
absl::StatusOr<Trial> WorkerTrial(const LocalBinaries& binaries, const std::string& data) {
  std::string log_dir;
  ASSIGN_OR_RETURN(std::unique_ptr<LocalCluster> cluster, StartCluster(binaries, 1, 2, &log_dir));
  CoordinatorClientOptions client_options;
  client_options.address = cluster->coordinator_address();
  CoordinatorClient client(client_options);
  ASSIGN_OR_RETURN(std::string job, client.SubmitJob(Job(data, 2)));
  RETURN_IF_ERROR(
      WaitFor(&client, job, [](const JobStatus& s) { return s.step() >= 100; }).status());
  RETURN_IF_ERROR(cluster->Kill("worker 1", SIGKILL));
  const absl::Time killed = absl::Now();
  ASSIGN_OR_RETURN(JobStatus at_kill, client.GetJob(job));
  // Steps up to one past the furthest worker may still complete with the dead worker's pushes.
  const uint64_t in_flight = MaxWorkerStep(at_kill) + 1;
  ASSIGN_OR_RETURN(JobStatus vacated, WaitFor(&client, job, [](const JobStatus& s) {
                     for (const WorkerProgress& w : s.workers()) {
                       if (w.vacant()) return true;
                     }
                     return false;
                   }));
  Trial trial;
  trial.detection_s = absl::ToDoubleSeconds(absl::Now() - killed);
  RETURN_IF_ERROR(WaitFor(&client, job, [&](const JobStatus& s) {
                    return s.step() > in_flight;
                  }).status());
  trial.recovery_s = absl::ToDoubleSeconds(absl::Now() - killed);
  trial.steps_lost = 0;
  (void)client.CancelJob(job);
  cluster->Stop(absl::Seconds(2));
  return trial;
}

Json Summary(const std::vector<Trial>& trials) {
  std::vector<double> detection, recovery, lost;
  for (const Trial& t : trials) {
    detection.push_back(t.detection_s);
    recovery.push_back(t.recovery_s);
    lost.push_back(t.steps_lost);
  }
  Json out;
  out["trials"] = trials.size();
  out["detection_s_median"] = Quantile(detection, 0.5);
  out["recovery_s_median"] = Quantile(recovery, 0.5);
  out["recovery_s_max"] = Quantile(recovery, 1.0);
  out["steps_lost_median"] = Quantile(lost, 0.5);
  out["detection_s"] = detection;
  out["recovery_s"] = recovery;
  out["steps_lost"] = lost;
  return out;
}

int Run(const char* argv0) {
  absl::StatusOr<LocalBinaries> binaries = FindLocalBinaries("", argv0);
  if (!binaries.ok()) {
    std::cerr << binaries.status() << std::endl;
    return 1;
  }
  const std::string data = FromWorkspace(absl::GetFlag(FLAGS_data));
  Json report = ResultHeader("recovery", absl::GetFlag(FLAGS_commit));
  report["heartbeat_interval_ms"] = absl::GetFlag(FLAGS_heartbeat_interval_ms);
  report["dead_after_ms"] = 10 * absl::GetFlag(FLAGS_heartbeat_interval_ms);
  report["checkpoint_every_steps"] = absl::GetFlag(FLAGS_checkpoint_every);
  using TrialFn = absl::StatusOr<Trial> (*)(const LocalBinaries&, const std::string&);
  const std::pair<const char*, TrialFn> scenarios[] = {
      {"replicated_primary_killed_backups_promoted", ReplicatedTrial},
      {"server_killed_restart_from_checkpoint", ServerTrial},
      {"worker_killed_sync_goes_on", WorkerTrial}};
  for (const auto& [name, fn] : scenarios) {
    std::vector<Trial> trials;
    for (int i = 0; i < absl::GetFlag(FLAGS_trials); ++i) {
      absl::StatusOr<Trial> trial = fn(*binaries, data);
      if (!trial.ok()) {
        std::cerr << name << " trial " << i << ": " << trial.status() << std::endl;
        return 1;
      }
      std::cout << name << " trial " << i << ": detection " << trial->detection_s
                << " s, recovery " << trial->recovery_s << " s, steps lost " << trial->steps_lost
                << std::endl;
      trials.push_back(*trial);
    }
    report[name] = Summary(trials);
  }
  absl::StatusOr<Json> cost = ReplicationCost(*binaries, data);
  if (!cost.ok()) {
    std::cerr << "replication cost: " << cost.status() << std::endl;
    return 1;
  }
  std::cout << "replication cost: " << cost->dump() << std::endl;
  report["replication_cost_mlp_2_servers_1_worker"] = *cost;
  return WriteResult(report, absl::GetFlag(FLAGS_out), "recovery");
}

}  // namespace
}  // namespace psrv

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "Measures recovery after SIGKILL of a server or a worker on a local cluster.\n"
      "Usage: bazel run //bench:recovery_bench -- [--trials=5] [--heartbeat_interval_ms=100]\n"
      "       [--commit=$(git rev-parse HEAD)] [--out=bench/results/recovery_<host>.json]");
  absl::ParseCommandLine(argc, argv);
  return psrv::Run(argv[0]);
}
