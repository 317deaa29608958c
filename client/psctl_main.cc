// psctl: the command-line client of the parameter-server cluster. Only flag parsing lives here;
// the commands are in commands.cc.
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdint>
#include <iostream>
#include <optional>
#include <string>

#include "client/commands.h"
#include "client/interrupt.h"

namespace psrv {
namespace {

template <typename T>
CLI::Option* AddOptional(CLI::App* app, const std::string& name, std::optional<T>* target,
                         const std::string& help) {
  return app->add_option_function<T>(
      name, [target](const T& value) { *target = value; }, help);
}

std::optional<std::string>* Str(std::optional<std::string>* s) { return s; }

// The job spec flags shared by `job submit` and `local`. `cluster_size`: add --servers/--workers
// (local has its own, with other defaults).
void AddSpecFlags(CLI::App* app, JobSpecFlags* flags, bool cluster_size) {
  app->add_option("--spec", flags->spec_file,
                  "Job spec file, JSON (.json) or YAML (.yaml/.yml), '-' for stdin; the flags "
                  "below override its fields. Fields: name, model{kind,context,embedding_dim,"
                  "hidden_dim}, data{path}, training{steps,batch_size,optimizer{kind,"
                  "learning_rate,momentum},consistency,seed,report_every,sample_length,"
                  "wire_dtype}, num_servers, num_workers")
      ->type_name("FILE");
  AddOptional(app, "--name", Str(&flags->name), "Job name (default \"job\")")->type_name("NAME");
  AddOptional(app, "--data", Str(&flags->data),
              "Training text file, as the workers see it (data.path; required)")
      ->type_name("FILE");
  AddOptional(app, "--steps", &flags->steps, "Optimizer steps per worker, 1..1e9 (default 1000)")
      ->type_name("N");
  AddOptional(app, "--batch-size", &flags->batch_size,
              "Examples per worker per step, 1..65536 (default 64)")
      ->type_name("N");
  AddOptional(app, "--lr", &flags->lr, "Learning rate, in (0, 10] (default 0.1)")
      ->type_name("RATE");
  AddOptional(app, "--optimizer", Str(&flags->optimizer), "sgd or momentum (default sgd)")
      ->type_name("KIND")
      ->check(CLI::IsMember({"sgd", "momentum"}, CLI::ignore_case));
  AddOptional(app, "--momentum", &flags->momentum,
              "Momentum in [0, 1) (default 0.9); implies --optimizer momentum unless set")
      ->type_name("M");
  AddOptional(app, "--mode", Str(&flags->mode),
              "Consistency: sync (servers average every worker's step) or async (apply each "
              "push as it arrives) (default sync)")
      ->type_name("MODE")
      ->check(CLI::IsMember({"sync", "async"}, CLI::ignore_case));
  if (cluster_size) {
    AddOptional(app, "--servers", &flags->servers,
                "Servers to shard the parameters over, 1..64 (default 1)")
        ->type_name("N");
    AddOptional(app, "--workers", &flags->workers, "Data-parallel workers, 1..64 (default 1)")
        ->type_name("N");
  }
  AddOptional(app, "--seed", &flags->seed, "Seed of initialisation and sampling (default 1)")
      ->type_name("N");
  AddOptional(app, "--context", &flags->context, "Bytes of context of the MLP, 1..64 (default 8)")
      ->type_name("N");
  AddOptional(app, "--embedding-dim", &flags->embedding_dim,
              "Per-byte embedding width, 1..1024 (default 24)")
      ->type_name("N");
  AddOptional(app, "--hidden-dim", &flags->hidden_dim, "Hidden layer width, 1..16384 (default 256)")
      ->type_name("N");
}

int Main(int argc, char** argv) {
  InstallInterruptHandlers();

  CLI::App app{
      "psctl: control a parameter-server cluster that trains byte-level language models.\n"
      "Talks to the coordinator (--coordinator) for jobs and nodes, and to each parameter "
      "server's Admin service for shards; `psctl local` runs a whole cluster on this machine."};
  app.name("psctl");
  app.fallthrough();  // Global flags may also follow the command.
  app.require_subcommand(1);
  std::string coordinator = "127.0.0.1:7070";
  double timeout_s = 10;
  app.add_option("--coordinator", coordinator,
                 "Coordinator address host:port (default 127.0.0.1:7070)")
      ->envname("PSCTL_COORDINATOR")
      ->type_name("ADDR");
  app.add_option("--timeout", timeout_s, "Seconds to wait for each RPC (default 10)")
      ->check(CLI::PositiveNumber)
      ->type_name("SECONDS");

  // psctl job ...
  CLI::App* job =
      app.add_subcommand("job", "Submit, list, inspect, watch and cancel training jobs");
  job->require_subcommand(1);

  JobSpecFlags submit_flags;
  bool submit_watch = false, submit_json = false;
  CLI::App* submit = job->add_subcommand(
      "submit",
      "Submit a job: reads --spec (if any), applies the flags, fills defaults, checks it, and "
      "prints the new job id");
  AddSpecFlags(submit, &submit_flags, /*cluster_size=*/true);
  submit->add_flag("--watch", submit_watch, "Then watch it like `psctl job watch`");
  submit->add_flag("--json", submit_json,
                   "Print {\"job_id\": ...} (with --watch: the final job status) as JSON");

  bool list_json = false;
  CLI::App* list =
      job->add_subcommand("list", "List jobs: id, name, state, step/steps, loss, tokens/s and age");
  list->add_flag("--json", list_json, "Print the jobs as JSON");

  std::string status_id;
  bool status_json = false;
  CLI::App* status = job->add_subcommand(
      "status", "Show one job: spec, progress, per-worker progress, failure message and sample");
  status->add_option("id", status_id, "Job id")->required();
  status->add_flag("--json", status_json, "Print the full JobStatus as JSON");

  std::string watch_id;
  CLI::App* watch = job->add_subcommand(
      "watch",
      "Follow a job until it ends with a progress bar (step, loss, tokens/s, ETA), then print "
      "its final state and generated sample. Exit code 0 if it SUCCEEDED, 1 otherwise; Ctrl-C "
      "stops watching but not the job");
  watch->add_option("id", watch_id, "Job id")->required();

  std::string cancel_id;
  CLI::App* cancel = job->add_subcommand("cancel", "Cancel a PENDING or RUNNING job");
  cancel->add_option("id", cancel_id, "Job id")->required();

  // psctl shards
  std::string shards_job;
  bool shards_json = false;
  CLI::App* shards = app.add_subcommand(
      "shards",
      "Ask every registered server (Admin.GetStatus) for its shards: table, key range, size, "
      "version, consistency mode, push/pull counts and bytes, last update, workers seen. "
      "Unreachable servers are listed with their error");
  shards->add_option("--job", shards_job, "Only this job's shards")->type_name("ID");
  shards->add_flag("--json", shards_json,
                   "Print {\"servers\": [ServerStatus...], \"errors\": [...]} as JSON");

  // psctl cluster
  bool cluster_json = false;
  CLI::App* cluster = app.add_subcommand(
      "cluster",
      "List the nodes registered with the coordinator: id, role, address, health, last "
      "heartbeat, job and rank");
  cluster->add_flag("--json", cluster_json, "Print the nodes as JSON");

  // psctl local
  JobSpecFlags local_spec_flags;
  LocalFlags local_flags;
  double startup_timeout_s = 60;
  CLI::App* local = app.add_subcommand(
      "local",
      "Run one job on a whole cluster of local processes (127.0.0.1): ps_coordinator, N "
      "ps_server and M ps_worker, each logging to its own file; watch the job, print its sample, "
      "then stop every process. Ctrl-C cancels the job and stops the processes. The binaries are "
      "taken from --bin-dir, else next to psctl (and its sibling bazel-bin folders), else from "
      "Bazel runfiles");
  AddOptional(local, "--servers", &local_flags.servers,
              "Parameter servers to start (default: the spec's num_servers, else 2)")
      ->type_name("N");
  AddOptional(local, "--workers", &local_flags.workers,
              "Workers to start (default: the spec's num_workers, else 2)")
      ->type_name("N");
  AddSpecFlags(local, &local_spec_flags, /*cluster_size=*/false);
  local
      ->add_option("--bin-dir", local_flags.bin_dir,
                   "Folder holding ps_coordinator, ps_server and ps_worker")
      ->type_name("DIR");
  local
      ->add_option("--log-dir", local_flags.log_dir,
                   "Folder for the processes' logs (kept); default: a fresh temporary folder, "
                   "removed after a successful run")
      ->type_name("DIR");
  local->add_flag("--keep-logs", local_flags.keep_logs, "Keep the temporary log folder");
  local
      ->add_option("--startup-timeout", startup_timeout_s,
                   "Seconds for the job to start running before giving up (default 60)")
      ->check(CLI::PositiveNumber)
      ->type_name("SECONDS");

  // Set last: subcommands copy their parent's footer when they are added.
  app.footer(
      "Examples:\n"
      "  psctl local --data /usr/share/games/fortunes/fortunes --steps 200\n"
      "  psctl job submit --spec job.yaml --servers 2 --workers 2 --watch\n"
      "  psctl job list\n"
      "  psctl job watch JOB_ID\n"
      "  psctl shards --job JOB_ID\n"
      "Exit codes: 0 success, 1 failure (RPC error, job FAILED or CANCELLED), 2 bad input, "
      "130 interrupted.");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);  // --help.
    std::cerr << "psctl: " << e.what() << "\n(psctl --help, psctl COMMAND --help: usage)\n";
    return kExitBadInput;
  }

  CommandEnv env;
  env.out = &std::cout;
  env.err = &std::cerr;
  env.tty = isatty(STDOUT_FILENO) == 1;
  env.interrupted = &Interrupted;
  env.coordinator = coordinator;
  env.timeout = absl::Seconds(timeout_s);
  env.argv0 = argc > 0 ? argv[0] : "psctl";

  if (*submit) return JobSubmitCommand(env, submit_flags, submit_watch, submit_json);
  if (*list) return JobListCommand(env, list_json);
  if (*status) return JobStatusCommand(env, status_id, status_json);
  if (*watch) return JobWatchCommand(env, watch_id);
  if (*cancel) return JobCancelCommand(env, cancel_id);
  if (*shards) return ShardsCommand(env, shards_job, shards_json);
  if (*cluster) return ClusterCommand(env, cluster_json);
  if (*local) {
    local_flags.startup_timeout = absl::Seconds(startup_timeout_s);
    return LocalCommand(env, local_spec_flags, local_flags);
  }
  std::cerr << app.help();
  return kExitBadInput;
}

}  // namespace
}  // namespace psrv

int main(int argc, char** argv) { return psrv::Main(argc, argv); }
