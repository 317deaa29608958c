// psctl local: check the job, start the processes, submit and watch the job, write its curves,
// stop the processes and tidy the logs.
#include "client/local_command.h"

#include <stdlib.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <memory>
#include <utility>

#include "absl/strings/str_cat.h"
#include "client/cli_flags.h"
#include "client/curves.h"
#include "client/generate.h"
#include "client/job_commands.h"
#include "client/local_cluster.h"
#include "common/files.h"
#include "common/job_spec.h"
#include "common/local_ca.h"
#include "common/rpc_roles.h"
#include "common/status_macros.h"
#include "common/tls.h"

namespace psrv {
namespace {

// --worker-arg values: ps_worker flags, but none that psctl local sets itself.
absl::Status CheckWorkerArgs(const std::vector<std::string>& worker_args) {
  for (const std::string& arg : worker_args) {
    const std::string name = arg.substr(0, arg.find('='));
    if (arg.rfind("--", 0) != 0 || name.size() <= 2) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--worker-arg takes a ps_worker flag, --name=value; got \"", arg, "\""));
    }
    if (name == "--coordinator" || name == "--max_jobs" || name == "--host" ||
        name == "--metrics_port" || name == "--metrics_port_file") {
      return absl::InvalidArgumentError(
          absl::StrCat("--worker-arg ", name, " is set by psctl local itself"));
    }
  }
  return absl::OkStatus();
}

// The job to run: the spec with the flags applied, its cluster size defaulting to the file's, else
// 2 and 2, and its data file an absolute path that this machine can read.
absl::StatusOr<JobSpec> LocalJobSpec(const JobSpecFlags& spec_flags,
                                     const LocalFlags& local_flags) {
  absl::StatusOr<JobSpec> from_file = LoadJobSpecFile(spec_flags);
  if (!from_file.ok()) return from_file.status();
  JobSpecFlags flags = spec_flags;
  flags.servers =
      local_flags.servers.value_or(from_file->num_servers() != 0 ? from_file->num_servers() : 2);
  // (With --pipeline P and no worker count anywhere: one group of P stages.)
  const int64_t default_workers = spec_flags.pipeline ? *spec_flags.pipeline : 2;
  flags.workers = local_flags.workers.value_or(
      from_file->num_workers() != 0 ? from_file->num_workers() : default_workers);
  absl::StatusOr<JobSpec> spec = ApplyJobSpecFlags(*std::move(from_file), flags);
  if (!spec.ok()) return spec.status();
  spec->mutable_data()->set_path(
      std::filesystem::absolute(ResolveUserPath(spec->data().path())).lexically_normal().string());
  if (access(spec->data().path().c_str(), R_OK) != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "cannot read the training data ", spec->data().path(), ": ", std::strerror(errno)));
  }
  return spec;
}

std::string MakeTempDir() {
  const char* tmp = getenv("TMPDIR");
  std::string pattern = absl::StrCat(tmp != nullptr && *tmp ? tmp : "/tmp", "/psctl-local-XXXXXX");
  std::vector<char> buffer(pattern.begin(), pattern.end());
  buffer.push_back('\0');
  if (mkdtemp(buffer.data()) == nullptr) return "";
  return std::string(buffer.data());
}

// Where the processes log: --log-dir (created, kept) or a fresh temporary folder.
struct LogFolder {
  std::string path;
  bool temporary = false;  // Removed after a successful run, but for the training curves.
};

absl::StatusOr<LogFolder> PrepareLogFolder(const LocalFlags& flags) {
  LogFolder logs;
  logs.temporary = flags.log_dir.empty();
  logs.path = logs.temporary ? MakeTempDir() : ResolveUserPath(flags.log_dir);
  if (logs.path.empty()) return absl::InternalError("cannot create a temporary log directory");
  if (!logs.temporary) {
    absl::Status created = CreateDirectories(logs.path, absl::StrCat("--log-dir ", logs.path));
    if (!created.ok()) return absl::InvalidArgumentError(created.message());
  }
  return logs;
}

// With --tls: a CA and a certificate per role in <log folder>/tls, and psctl itself on mutual TLS
// as an operator (before it opens any channel). Returns the folder.
absl::StatusOr<std::string> PrepareCertificates(const std::string& log_dir) {
  const std::string dir = log_dir + "/tls";
  RETURN_IF_ERROR(CreateDirectories(dir));
  RETURN_IF_ERROR(MakeLocalClusterCertificates(dir));
  RETURN_IF_ERROR(EnableTls(LocalCaFiles(dir, kRoleOperator)));
  return dir;
}

// How a LocalJob ended, for the clean-up.
struct LocalJobResult {
  int exit_code = kExitFailure;
  bool succeeded = false;
  std::vector<std::string> curve_files;  // Kept when the rest of a temporary log folder goes.
};

// Removes a temporary log folder after a successful run (but for the curves), else says where
// the logs are.
void CleanUpLogs(const CommandEnv& env, const LogFolder& logs, bool keep_logs,
                 const LocalJobResult& result) {
  if (!result.succeeded || !logs.temporary || keep_logs) {
    *env.err << "psctl: logs of the local cluster are in " << logs.path << "\n";
    return;
  }
  std::error_code ignored;
  if (result.curve_files.empty()) {
    std::filesystem::remove_all(logs.path, ignored);
    return;
  }
  for (const auto& entry : std::filesystem::directory_iterator(logs.path, ignored)) {
    if (std::find(result.curve_files.begin(), result.curve_files.end(), entry.path().string()) ==
        result.curve_files.end()) {
      std::filesystem::remove_all(entry.path(), ignored);
    }
  }
}

// `status` with "local cluster: " in front of its message.
absl::Status ClusterError(const absl::Status& status) {
  return absl::Status(status.code(), absl::StrCat("local cluster: ", status.message()));
}

// One job on a started LocalCluster: submitted, watched to its end (or a dead process, a job that
// does not start in time, Ctrl-C), its curves written into the log folder.
class LocalJob {
 public:
  LocalJob(const CommandEnv& env, const LocalFlags& flags, LocalCluster* cluster,
           const LocalClusterOptions& options)
      : env_(env), flags_(flags), cluster_(cluster), options_(options) {
    job_env_ = env;
    job_env_.coordinator = cluster->coordinator_address();
  }

  LocalJobResult Run(const JobSpec& spec) {
    CoordinatorClient client = MakeCoordinatorClient(job_env_);
    absl::StatusOr<std::string> submitted = client.SubmitJob(spec);
    if (!submitted.ok()) {
      absl::Status dead = cluster_->CheckProcesses();
      return Failed(ReportError(env_, dead.ok() ? submitted.status() : dead));
    }
    job_id_ = *submitted;
    *env_.out << "coordinator at " << cluster_->coordinator_address() << "; submitted job "
              << job_id_ << " (" << spec.name() << ")\n";
    absl::StatusOr<JobStatus> final_status = Watch(client);
    if (!final_status.ok()) return Failed(StoppedWatching(final_status.status()));
    LocalJobResult result;
    result.succeeded = final_status->state() == SUCCEEDED;
    if (result.succeeded) PrintPipelineSample(*final_status);
    if (final_status->loss_history_size() > 0) result.curve_files = WriteCurvesHere(*final_status);
    if (!result.succeeded) {
      // A job that failed because one of its processes died: say which.
      absl::Status dead = cluster_->CheckProcesses();
      if (!dead.ok()) *env_.err << "psctl: local cluster: " << dead.message() << "\n";
    }
    result.exit_code = ExitCodeForJob(*final_status);
    return result;
  }

 private:
  // A pipeline job's workers report no sample (no worker holds the whole model): generated here,
  // on the CPU, from the servers' final parameters (as `psctl generate` does), with the job's
  // sample length and seed.
  void PrintPipelineSample(const JobStatus& status) {
    const TrainingSpec& training = status.spec().training();
    if (!status.sample().empty() || PipelineStages(status.spec()) == 1 ||
        training.sample_length() == 0) {
      return;
    }
    *env_.out << "\nSample of generated text (a pipeline job: generated here, on the CPU, from "
                 "the servers' final parameters):\n";
    env_.out->flush();
    GenerateFlags generate;
    generate.job_id = status.job_id();
    generate.length = training.sample_length();
    generate.seed = training.seed();
    // Printed as the workers' samples are (PrintableText: a byte model can emit anything).
    CommandEnv env = job_env_;
    env.tty = true;
    if (GenerateCommand(env, generate) != 0) {
      *env_.err << "psctl: no sample of the pipeline job (above: why)\n";
    }
  }

  static LocalJobResult Failed(int exit_code) {
    LocalJobResult result;
    result.exit_code = exit_code;
    return result;
  }

  // Watches the job, and everything that can go wrong meanwhile.
  absl::StatusOr<JobStatus> Watch(CoordinatorClient& client) {
    JobState state = JOB_STATE_UNSPECIFIED;
    const absl::Time submitted_at = absl::Now();
    return WatchJobWithProgress(
        env_, client, job_id_,
        [&] {
          if (env_.interrupted()) return absl::CancelledError("interrupted");
          absl::Status alive = cluster_->CheckProcesses();
          if (!alive.ok()) return alive;
          if (state != RUNNING && absl::Now() - submitted_at > flags_.startup_timeout) {
            return NotStartedError(client);
          }
          return absl::OkStatus();
        },
        [&](const JobStatus& status) { state = status.state(); });
  }

  // DEADLINE_EXCEEDED, with how many processes registered.
  absl::Status NotStartedError(CoordinatorClient& client) {
    std::string counts;
    absl::StatusOr<std::vector<NodeInfo>> nodes = client.ListNodes();
    if (nodes.ok()) {
      int servers = 0, workers = 0;
      for (const NodeInfo& node : *nodes) {
        if (node.role() == SERVER) ++servers;
        if (node.role() == WORKER) ++workers;
      }
      counts = absl::StrCat("; registered: ", servers, "/", options_.num_servers, " server(s), ",
                            workers, "/", options_.num_workers, " worker(s)");
    }
    return absl::DeadlineExceededError(absl::StrCat("job ", job_id_, " did not start within ",
                                                    absl::FormatDuration(flags_.startup_timeout),
                                                    counts));
  }

  // The exit code once the watch ended without a final status: Ctrl-C cancels the job.
  int StoppedWatching(const absl::Status& status) {
    if (env_.interrupted()) {
      *env_.err << "psctl: interrupted: cancelling job " << job_id_
                << " and stopping the local cluster\n";
      CommandEnv quick = job_env_;
      quick.timeout = absl::Seconds(2);
      (void)MakeCoordinatorClient(quick).CancelJob(job_id_);
      return kExitInterrupted;
    }
    absl::Status dead = cluster_->CheckProcesses();
    return ReportError(env_, dead.ok() ? status : ClusterError(dead));
  }

  // The training curves, next to the logs; returns the files written.
  std::vector<std::string> WriteCurvesHere(const JobStatus& job) {
    std::vector<std::string> files;
    absl::StatusOr<CurveFiles> curves = WriteCurves(
        job, options_.log_dir, env_.gnuplot.has_value() ? *env_.gnuplot : FindGnuplot());
    if (!curves.ok()) {
      *env_.err << "psctl: training curves: " << curves.status().message() << "\n";
      return files;
    }
    files.push_back(curves->csv);
    *env_.out << "training curves: " << curves->csv;
    if (!curves->png.empty()) {
      files.push_back(curves->png);
      *env_.out << ", " << curves->png;
    }
    *env_.out << "\n";
    if (!curves->note.empty()) *env_.out << "(" << curves->note << ")\n";
    return files;
  }

  const CommandEnv& env_;
  const LocalFlags& flags_;
  LocalCluster* cluster_;
  const LocalClusterOptions& options_;
  CommandEnv job_env_;  // env_, talking to the local coordinator.
  std::string job_id_;
};

// Starts the processes and runs the job on them.
LocalJobResult StartAndRun(const CommandEnv& env, const LocalFlags& flags, const JobSpec& spec,
                           LocalCluster* cluster, const LocalClusterOptions& options) {
  *env.out << "starting a local cluster: 1 coordinator, " << options.num_servers << " server(s), "
           << options.num_workers << " worker(s); logs in " << options.log_dir << "\n";
  env.out->flush();
  absl::Status started = cluster->Start();
  if (!started.ok()) {
    LocalJobResult result;
    if (env.interrupted()) {
      *env.err << "psctl: interrupted: stopping the local cluster\n";
      result.exit_code = kExitInterrupted;
    } else {
      result.exit_code = ReportError(env, ClusterError(started));
    }
    return result;
  }
  if (!cluster->status_page_url().empty()) {
    *env.out << "status page: " << cluster->status_page_url() << " (metrics: "
             << cluster->status_page_url() << "metrics)\n";
  }
  if (!options.tls_dir.empty()) {
    const TlsFiles tls = LocalCaFiles(options.tls_dir, kRoleOperator);
    *env.out << "mutual TLS on; to talk to this cluster (as operator; viewer.crt/.key only "
                "read):\n"
             << "  psctl --coordinator " << cluster->coordinator_address() << " --tls-cert "
             << tls.cert << " --tls-key " << tls.key << " --tls-ca " << tls.ca << " job list\n";
  }
  return LocalJob(env, flags, cluster, options).Run(spec);
}

}  // namespace

int LocalCommand(const CommandEnv& env, const JobSpecFlags& spec_flags,
                 const LocalFlags& local_flags) {
  // 1. The job and the worker flags, checked before anything starts.
  absl::Status worker_args = CheckWorkerArgs(local_flags.worker_args);
  if (!worker_args.ok()) return ReportError(env, worker_args);
  absl::StatusOr<JobSpec> spec = LocalJobSpec(spec_flags, local_flags);
  if (!spec.ok()) return ReportError(env, spec.status());
  absl::StatusOr<LocalBinaries> binaries =
      FindLocalBinaries(ResolveUserPath(local_flags.bin_dir), env.argv0);
  if (!binaries.ok()) return ReportError(env, binaries.status());

  // 2. Where the logs go.
  absl::StatusOr<LogFolder> logs = PrepareLogFolder(local_flags);
  if (!logs.ok()) return ReportError(env, logs.status());
  // The processes log with glog: to stderr, i.e. to their log files.
  setenv("GLOG_logtostderr", "1", /*overwrite=*/0);

  // 3. The processes, the job on them, and the clean-up.
  LocalClusterOptions options;
  options.binaries = *binaries;
  options.num_servers = static_cast<int>(spec->num_servers());
  options.num_workers = static_cast<int>(spec->num_workers());
  options.log_dir = logs->path;
  options.interrupted = env.interrupted;
  options.worker_args = local_flags.worker_args;
  options.unix_sockets = local_flags.transport == "unix";
  options.checkpoint_root = local_flags.checkpoint_root;
  if (local_flags.tls) {
    absl::StatusOr<std::string> tls_dir = PrepareCertificates(logs->path);
    if (!tls_dir.ok()) return ReportError(env, tls_dir.status());
    options.tls_dir = *tls_dir;
  }
  LocalCluster cluster(options);
  const LocalJobResult result = StartAndRun(env, local_flags, *spec, &cluster, options);
  cluster.Stop();
  CleanUpLogs(env, *logs, local_flags.keep_logs, result);
  return result.exit_code;
}

CommandHandler BindLocal(CLI::App* command) {
  struct Flags {
    JobSpecFlags spec;
    LocalFlags local;
    double startup_timeout_s = 60;
  };
  auto flags = std::make_shared<Flags>();
  AddOptional(command, "--servers", &flags->local.servers,
              "Parameter servers to start (default: the spec's num_servers, else 2)")
      ->type_name("N");
  AddOptional(command, "--workers", &flags->local.workers,
              "Workers to start (default: the spec's num_workers, else 2)")
      ->type_name("N");
  AddJobSpecFlags(command, &flags->spec, /*cluster_size=*/false);
  command
      ->add_option("--bin-dir", flags->local.bin_dir,
                   "Folder holding ps_coordinator, ps_server and ps_worker")
      ->type_name("DIR");
  command
      ->add_option("--log-dir", flags->local.log_dir,
                   "Folder for the processes' logs (kept); default: a fresh temporary folder, "
                   "removed after a successful run")
      ->type_name("DIR");
  command->add_flag("--keep-logs", flags->local.keep_logs, "Keep the temporary log folder");
  command
      ->add_option("--worker-arg", flags->local.worker_args,
                   "A flag for every ps_worker, e.g. --worker-arg=--cuda_attention=flash or "
                   "--worker-arg=--device=cpu (repeatable; see ps_worker --help)")
      ->type_name("--FLAG=VALUE");
  command
      ->add_option("--transport", flags->local.transport,
                   "How workers and servers talk: unix (Unix domain sockets, all processes "
                   "being on this machine; the default) or tcp (loopback TCP)")
      ->check(CLI::IsMember({"unix", "tcp"}))
      ->type_name("unix|tcp");
  command->add_flag("--tls", flags->local.tls,
                    "Run every process on mutual TLS with role checks: makes a throw-away CA and a "
                    "certificate per role (OU coordinator, server, worker, operator, viewer) with "
                    "openssl in <log folder>/tls, and prints the psctl flags that talk to the "
                    "cluster");
  command
      ->add_option("--checkpoint-root", flags->local.checkpoint_root,
                   "Folder the servers confine checkpoints to: the job's checkpoint.directory "
                   "(and psctl checkpoint --directory) must be an absolute path under it "
                   "(ps_server --checkpoint_root); default /, any absolute path")
      ->type_name("DIR");
  command
      ->add_option("--startup-timeout", flags->startup_timeout_s,
                   "Seconds for the job to start running before giving up (default 60)")
      ->check(CLI::PositiveNumber)
      ->type_name("SECONDS");
  return [flags](const CommandEnv& env) {
    LocalFlags local = flags->local;
    local.startup_timeout = absl::Seconds(flags->startup_timeout_s);
    return LocalCommand(env, flags->spec, local);
  };
}

}  // namespace psrv
