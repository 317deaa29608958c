// psctl: the command-line client of the parameter-server cluster. Only flag parsing lives here;
// the commands are in commands.cc.
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdint>
#include <iostream>
#include <optional>
#include <string>

#include "client/commands.h"
#include "client/export.h"
#include "client/generate.h"
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
                  "below override its fields. Fields: name, model{kind,context,layers,heads,width,"
                  "dropout,embedding_dim,hidden_dim,tokenizer,vocabulary}, data{path,"
                  "validation_fraction}, training{steps,batch_size,optimizer{kind,learning_rate,"
                  "momentum,beta1,beta2,epsilon,weight_decay,warmup_steps,decay_steps,"
                  "min_learning_rate},consistency,seed,report_every,sample_length,wire_dtype,"
                  "grad_clip,eval_every,eval_batches}, num_servers, num_workers")
      ->type_name("FILE");
  AddOptional(app, "--name", Str(&flags->name), "Job name (default \"job\")")->type_name("NAME");
  AddOptional(app, "--data", Str(&flags->data),
              "Training text file, as the workers see it (data.path; required)")
      ->type_name("FILE");
  AddOptional(app, "--init-from", Str(&flags->init_from),
              "Start from the parameters in this safetensors file (as written by psctl export; "
              "every server must be able to read it) instead of a random initialisation")
      ->type_name("FILE");
  AddOptional(app, "--validation-fraction", &flags->validation_fraction,
              "Fraction of the data file, at its end, kept for validation, in (0, 0.5] "
              "(default 0.1)")
      ->type_name("F");

  // The model.
  AddOptional(app, "--model", Str(&flags->model),
              "gpt (decoder-only transformer) or mlp (embeddings of the last --context tokens, "
              "one hidden layer) (default gpt)")
      ->type_name("KIND")
      ->check(CLI::IsMember({"gpt", "mlp"}, CLI::ignore_case));
  AddOptional(app, "--context", &flags->context,
              "Tokens of context; depends on the model: gpt block size 1..4096 (default 64), "
              "mlp 1..64 (default 8)")
      ->type_name("N");
  AddOptional(app, "--layers", &flags->layers, "gpt: transformer blocks, 1..96 (default 4)")
      ->type_name("N");
  AddOptional(app, "--heads", &flags->heads,
              "gpt: attention heads, 1..width, must divide --width (default 4)")
      ->type_name("N");
  AddOptional(app, "--width", &flags->width, "gpt: embedding width, 1..16384 (default 128)")
      ->type_name("N");
  AddOptional(app, "--dropout", &flags->dropout, "gpt: dropout probability in [0, 1) (default 0)")
      ->type_name("P");
  AddOptional(app, "--embedding-dim", &flags->embedding_dim,
              "mlp: per-token embedding width, 1..1024 (default 24)")
      ->type_name("N");
  AddOptional(app, "--hidden-dim", &flags->hidden_dim,
              "mlp: hidden layer width, 1..16384 (default 256)")
      ->type_name("N");
  AddOptional(app, "--tokenizer", Str(&flags->tokenizer),
              "byte (256 tokens, one per byte value) or char (one token per distinct byte of the "
              "data file, which psctl reads to list them) (default byte)")
      ->type_name("KIND")
      ->check(CLI::IsMember({"byte", "char"}, CLI::ignore_case));

  // Training.
  AddOptional(app, "--steps", &flags->steps, "Optimizer steps per worker, 1..1e9 (default 1000)")
      ->type_name("N");
  AddOptional(app, "--batch-size", &flags->batch_size,
              "Examples per worker per step, 1..65536 (default 12)")
      ->type_name("N");
  AddOptional(app, "--optimizer", Str(&flags->optimizer),
              "sgd, momentum or adamw (default adamw; momentum if only --momentum is given)")
      ->type_name("KIND")
      ->check(CLI::IsMember({"sgd", "momentum", "adamw"}, CLI::ignore_case));
  AddOptional(app, "--lr", &flags->lr,
              "Peak learning rate, in (0, 10] (default 0.001 for adamw, 0.1 for sgd and momentum)")
      ->type_name("RATE");
  AddOptional(app, "--momentum", &flags->momentum,
              "Momentum of --optimizer momentum, in [0, 1) (default 0.9); selects that optimizer "
              "unless --optimizer is given")
      ->type_name("M");
  AddOptional(app, "--beta1", &flags->beta1, "adamw: beta1 in (0, 1) (default 0.9)")
      ->type_name("B");
  AddOptional(app, "--beta2", &flags->beta2, "adamw: beta2 in (0, 1) (default 0.95)")
      ->type_name("B");
  AddOptional(app, "--weight-decay", &flags->weight_decay,
              "adamw: decoupled weight decay of the weight matrices, in [0, 10] (default 0)")
      ->type_name("W");
  AddOptional(app, "--warmup-steps", &flags->warmup_steps,
              "Learning rate warm-up: linear from lr/N to lr over N steps, 0..1e9 (default 0: "
              "none)")
      ->type_name("N");
  AddOptional(app, "--decay-steps", &flags->decay_steps,
              "Cosine decay of the learning rate from the end of the warm-up to --min-lr at this "
              "step, 0..1e9; must exceed --warmup-steps (default 0: no decay)")
      ->type_name("N");
  AddOptional(app, "--min-lr", &flags->min_lr,
              "Learning rate at the end of the decay, in [0, --lr] (default 0)")
      ->type_name("RATE");
  AddOptional(app, "--grad-clip", &flags->grad_clip,
              "Clip each worker's gradient to this global L2 norm, >= 0 (default 0: off)")
      ->type_name("NORM");
  AddOptional(app, "--eval-every", &flags->eval_every,
              "Steps between validation losses, 0..1e9 (default 0: only at the end)")
      ->type_name("N");
  AddOptional(app, "--eval-batches", &flags->eval_batches,
              "Batches per validation loss, 1..10000 (default 20)")
      ->type_name("N");
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
}

int Main(int argc, char** argv) {
  InstallInterruptHandlers();

  CLI::App app{
      "psctl: control a parameter-server cluster that trains language models (a GPT-style "
      "transformer or a small MLP, over bytes or characters).\n"
      "Talks to the coordinator (--coordinator) for jobs and nodes, to each parameter server's "
      "Admin service for shards, and to the parameter servers themselves for `generate`; "
      "`psctl local` runs a whole cluster on this machine."};
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
      app.add_subcommand("job", "Submit, list, inspect, watch and cancel training jobs; write their training curves");
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
  CLI::App* list = job->add_subcommand(
      "list",
      "List jobs: id, name, state, step/steps, loss, latest validation loss, tokens/s and age");
  list->add_flag("--json", list_json, "Print the jobs as JSON");

  std::string status_id;
  bool status_json = false;
  CLI::App* status = job->add_subcommand(
      "status",
      "Show one job: spec, progress, validation losses, per-worker progress, failure message and "
      "sample");
  status->add_option("id", status_id, "Job id")->required();
  status->add_flag("--json", status_json, "Print the full JobStatus as JSON");

  std::string watch_id;
  CLI::App* watch = job->add_subcommand(
      "watch",
      "Follow a job until it ends with a progress bar (step, loss, validation loss, tokens/s, "
      "ETA), then print its final state, final training loss, best validation loss and "
      "generated sample. Exit code 0 if it SUCCEEDED, 1 otherwise; Ctrl-C "
      "stops watching but not the job");
  watch->add_option("id", watch_id, "Job id")->required();

  std::string cancel_id;
  CLI::App* cancel = job->add_subcommand("cancel", "Cancel a PENDING or RUNNING job");
  cancel->add_option("id", cancel_id, "Job id")->required();

  // psctl checkpoint
  std::string checkpoint_id, checkpoint_directory;
  bool checkpoint_json = false;
  CLI::App* checkpoint = app.add_subcommand(
      "checkpoint",
      "Checkpoint a RUNNING SYNC job now: every server writes its shards' parameters and optimizer "
      "state at one common step (atomically, with a CRC-32); prints the manifest. The job's spec "
      "can also ask for periodic checkpoints (checkpoint.directory, checkpoint.every_steps, checkpoint.every_seconds)");
  checkpoint->add_option("id", checkpoint_id, "Job id")->required();
  checkpoint
      ->add_option("--directory", checkpoint_directory,
                   "Directory on the servers (default: the job's checkpoint.directory)")
      ->type_name("DIR");
  checkpoint->add_flag("--json", checkpoint_json, "Print the manifest as JSON");

  std::string curves_id, curves_out = ".";
  CLI::App* curves = job->add_subcommand(
      "curves",
      "Write a job's training curves to DIR/JOB_ID.csv (step, train_loss, val_loss, "
      "tokens_per_sec) and DIR/JOB_ID.png (loss and throughput, drawn by gnuplot; skipped with a "
      "note if gnuplot is not installed)");
  curves->add_option("id", curves_id, "Job id")->required();
  curves->add_option("--out", curves_out, "Folder for the files (default: .)")->type_name("DIR");

  // psctl shards
  ShardsFlags shards_flags;
  double shards_interval_s = 2;
  CLI::App* shards = app.add_subcommand(
      "shards",
      "Ask every registered server (Admin.GetStatus) for its shards: table, key range, size, "
      "version, consistency mode, push/pull counts, rates (last ~10 s) and bytes, last update, "
      "workers seen, the workers a SYNC step waits for and since when, and the last rejected "
      "push. Unreachable servers are listed with their error");
  shards->add_option("--job", shards_flags.job_id, "Only this job's shards")->type_name("ID");
  shards->add_flag("--json", shards_flags.json,
                   "Print {\"servers\": [ServerStatus...], \"errors\": [...]} as JSON (with "
                   "--watch: one compact document per line and refresh)");
  shards->add_flag("--watch", shards_flags.watch,
                   "Refresh every --interval seconds until Ctrl-C (redrawn in place on a "
                   "terminal)");
  shards->add_option("--interval", shards_interval_s, "Seconds between refreshes (default 2)")
      ->check(CLI::PositiveNumber)
      ->type_name("SECONDS");
  shards
      ->add_option("--count", shards_flags.count,
                   "With --watch: stop after this many refreshes (default 0: until Ctrl-C)")
      ->check(CLI::NonNegativeNumber)
      ->type_name("N");

  // psctl top
  TopFlags top_flags;
  double top_interval_s = 2;
  CLI::App* top = app.add_subcommand(
      "top",
      "A live view of the busiest shards (pushes + pulls per second over the last ~10 s) and the "
      "slowest workers of running jobs (lowest tokens/s, with their step time, how many steps "
      "they are behind and how many shards wait for them), refreshed until Ctrl-C");
  top->add_option("--job", top_flags.job_id, "Only this job")->type_name("ID");
  top->add_flag("--once", top_flags.once, "Print the view once and exit");
  top->add_option("--interval", top_interval_s, "Seconds between refreshes (default 2)")
      ->check(CLI::PositiveNumber)
      ->type_name("SECONDS");
  top->add_option("--count", top_flags.count,
                  "Stop after this many refreshes (default 0: until Ctrl-C)")
      ->check(CLI::NonNegativeNumber)
      ->type_name("N");
  top->add_option("--limit", top_flags.limit, "Rows per table (default 10)")
      ->check(CLI::PositiveNumber)
      ->type_name("N");

  // psctl cluster
  bool cluster_json = false;
  CLI::App* cluster = app.add_subcommand(
      "cluster",
      "List the nodes registered with the coordinator: id, role, address, health, last "
      "heartbeat, job and rank");
  cluster->add_flag("--json", cluster_json, "Print the nodes as JSON");

  // psctl export
  ExportFlags export_flags;
  CLI::App* export_command = app.add_subcommand(
      "export",
      "Write a job's current parameters to a safetensors file: one F32 tensor per table, with its "
      "name and shape, and the job id, step and model spec as metadata (readable with Python's "
      "safetensors library). The parameters are pulled from the job's parameter servers");
  export_command->add_option("id", export_flags.job_id, "Job id")->required();
  export_command
      ->add_option("--format", export_flags.format, "File format: safetensors (the default)")
      ->type_name("FORMAT");
  export_command
      ->add_option("--out", export_flags.out, "Output file (default JOB_ID.safetensors)")
      ->type_name("FILE");
  export_command->add_flag("--json", export_flags.json,
                           "Print {\"job_id\", \"path\", \"tensors\", \"parameters\"}");

  // psctl generate
  GenerateFlags generate_flags;
  CLI::App* generate = app.add_subcommand(
      "generate",
      "Sample text from a job's current parameters on this machine's CPU: pulls them from the "
      "job's parameter servers (RUNNING or ended jobs whose servers are still up) and prints the "
      "prompt followed by the generated text");
  generate->add_option("id", generate_flags.job_id, "Job id")->required();
  CLI::Option* prompt_option =
      generate
          ->add_option("--prompt", generate_flags.prompt,
                       "Text to continue; must be in the job's vocabulary for a char tokenizer "
                       "(default: a newline)")
          ->type_name("TEXT");
  generate
      ->add_option("--length", generate_flags.length, "Tokens to generate, 1..100000 (default 500)")
      ->type_name("N");
  generate
      ->add_option("--temperature", generate_flags.temperature,
                   "Softmax temperature, in (0, 100]; lower is more conservative (default 0.8)")
      ->type_name("T");
  generate
      ->add_option("--top-k", generate_flags.top_k,
                   "Sample among the K most likely tokens, 0..1000000 (default 0: all of them)")
      ->type_name("K");
  AddOptional(generate, "--seed", &generate_flags.seed,
              "Seed of the sampling; the same seed and parameters give the same text (default: "
              "random)")
      ->type_name("N");
  generate->add_flag("--json", generate_flags.json,
                     "Print {\"job_id\", \"state\", \"step\", \"prompt\", \"text\", \"length\", "
                     "\"temperature\", \"top_k\", \"seed\"} as JSON");

  // psctl local
  JobSpecFlags local_spec_flags;
  LocalFlags local_flags;
  double startup_timeout_s = 60;
  CLI::App* local = app.add_subcommand(
      "local",
      "Run one job on a whole cluster of local processes (127.0.0.1): ps_coordinator, N "
      "ps_server and M ps_worker, each logging to its own file and serving its metrics on a free "
      "port (the coordinator's status page address is printed); watch the job, print its sample, "
      "write its training curves (JOB_ID.csv, JOB_ID.png) into the log folder (kept when the rest "
      "of a temporary one is removed), then stop every process. Ctrl-C cancels the job and stops "
      "the processes. The binaries are "
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
      ->add_option("--worker-arg", local_flags.worker_args,
                   "A flag for every ps_worker, e.g. --worker-arg=--cuda_attention=flash or "
                   "--worker-arg=--device=cpu (repeatable; see ps_worker --help)")
      ->type_name("--FLAG=VALUE");
  local
      ->add_option("--transport", local_flags.transport,
                   "How workers and servers talk: unix (Unix domain sockets, all processes "
                   "being on this machine; the default) or tcp (loopback TCP)")
      ->check(CLI::IsMember({"unix", "tcp"}))
      ->type_name("unix|tcp");
  local
      ->add_option("--startup-timeout", startup_timeout_s,
                   "Seconds for the job to start running before giving up (default 60)")
      ->check(CLI::PositiveNumber)
      ->type_name("SECONDS");

  // Set last: subcommands copy their parent's footer when they are added.
  app.footer(
      "Examples:\n"
      "  psctl local --data /usr/share/games/fortunes/fortunes --steps 200\n"
      "  psctl local --data input.txt --tokenizer char --context 128 --eval-every 100\n"
      "  psctl job submit --spec job.yaml --servers 2 --workers 2 --watch\n"
      "  psctl job list\n"
      "  psctl job watch JOB_ID\n"
      "  psctl generate JOB_ID --prompt 'ROMEO:' --length 300\n"
      "  psctl shards --job JOB_ID\n"
      "  psctl shards --watch\n"
      "  psctl top\n"
      "  psctl job curves JOB_ID --out curves/\n"
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
  if (*checkpoint) return CheckpointCommand(env, checkpoint_id, checkpoint_directory, checkpoint_json);
  if (*curves) return JobCurvesCommand(env, curves_id, curves_out);
  if (*shards) {
    shards_flags.interval = absl::Seconds(shards_interval_s);
    return ShardsCommand(env, shards_flags);
  }
  if (*top) {
    top_flags.interval = absl::Seconds(top_interval_s);
    return TopCommand(env, top_flags);
  }
  if (*cluster) return ClusterCommand(env, cluster_json);
  if (*export_command) return ExportCommand(env, export_flags);
  if (*generate) {
    generate_flags.prompt_given = prompt_option->count() > 0;
    return GenerateCommand(env, generate_flags);
  }
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
