// psctl: the command-line client of the parameter-server cluster. Here: the table of commands, the
// global flags and the dispatch; each command's flags and code live with its group
// (job_commands, monitor_commands, model_commands, local_command).
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <iostream>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "client/command_env.h"
#include "client/command_table.h"
#include "client/interrupt.h"
#include "client/job_commands.h"
#include "client/local_command.h"
#include "client/model_commands.h"
#include "client/monitor_commands.h"
#include "common/auth_tokens.h"
#include "common/tls.h"

namespace psrv {
namespace {

constexpr char kDescription[] =
    "psctl: control a parameter-server cluster that trains language models (a GPT-style "
    "transformer or a small MLP, over bytes or characters).\n"
    "Talks to the coordinator (--coordinator) for jobs and nodes, to each parameter server's "
    "Admin service for shards, and to the parameter servers themselves for `generate`; "
    "`psctl local` runs a whole cluster on this machine.";

constexpr char kFooter[] =
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
    "130 interrupted.";

// `psctl GROUP COMMAND`: the groups, each with its one-line help.
const std::pair<const char*, const char*> kGroups[] = {
    {"job", "Submit, list, inspect, watch and cancel training jobs; write their training curves"},
};

// Every command, in the order `psctl --help` and `psctl GROUP --help` list them.
const CliCommand kCommands[] = {
    {"job", "submit",
     "Submit a job: reads --spec (if any), applies the flags, fills defaults, checks it, and "
     "prints the new job id",
     BindJobSubmit},
    {"job", "list",
     "List jobs: id, name, state, step/steps, loss, latest validation loss, tokens/s and age",
     BindJobList},
    {"job", "status",
     "Show one job: spec, progress, validation losses, per-worker progress, failure message and "
     "sample",
     BindJobStatus},
    {"job", "watch",
     "Follow a job until it ends with a progress bar (step, loss, validation loss, tokens/s, "
     "ETA), then print its final state, final training loss, best validation loss and "
     "generated sample. Exit code 0 if it SUCCEEDED, 1 otherwise; Ctrl-C "
     "stops watching but not the job",
     BindJobWatch},
    {"job", "cancel", "Cancel a PENDING or RUNNING job", BindJobCancel},
    {"", "checkpoint",
     "Checkpoint a RUNNING SYNC job now: every server writes its shards' parameters and optimizer "
     "state at one common step (atomically, with a CRC-32); prints the manifest. The job's spec "
     "can also ask for periodic checkpoints (checkpoint.directory, checkpoint.every_steps, "
     "checkpoint.every_seconds)",
     BindCheckpoint},
    {"job", "curves",
     "Write a job's training curves to DIR/JOB_ID.csv (step, train_loss, val_loss, "
     "tokens_per_sec) and DIR/JOB_ID.png (loss and throughput, drawn by gnuplot; skipped with a "
     "note if gnuplot is not installed)",
     BindJobCurves},
    {"", "shards",
     "Ask every registered server (Admin.GetStatus) for its shards: table, key range, size, "
     "version, consistency mode, push/pull counts, rates (last ~10 s) and bytes, last update, "
     "workers seen, the workers a SYNC step waits for and since when, and the last rejected "
     "push. Unreachable servers are listed with their error",
     BindShards},
    {"", "top",
     "A live view of the busiest shards (pushes + pulls per second over the last ~10 s) and the "
     "slowest workers of running jobs (lowest tokens/s, with their step time, how many steps "
     "they are behind and how many shards wait for them), refreshed until Ctrl-C",
     BindTop},
    {"", "cluster",
     "List the nodes registered with the coordinator: id, role, address, health, last "
     "heartbeat, job and rank",
     BindCluster},
    {"", "export",
     "Write a job's current parameters to a safetensors file: one F32 tensor per table, with its "
     "name and shape, and the job id, step and model spec as metadata (readable with Python's "
     "safetensors library); a BPE job's tokenizer goes beside it as NAME.tokenizer.model "
     "(SentencePiece). The parameters are pulled from the job's parameter servers",
     BindExport},
    {"", "generate",
     "Sample text from a job's current parameters on this machine's CPU: pulls them from the "
     "job's parameter servers (RUNNING or ended jobs whose servers are still up) and prints the "
     "prompt followed by the generated text",
     BindGenerate},
    {"", "local",
     "Run one job on a whole cluster of local processes (127.0.0.1): ps_coordinator, N "
     "ps_server and M ps_worker, each logging to its own file and serving its metrics on a free "
     "port (the coordinator's status page address is printed); watch the job, print its sample, "
     "write its training curves (JOB_ID.csv, JOB_ID.png) into the log folder (kept when the rest "
     "of a temporary one is removed), then stop every process. Ctrl-C cancels the job and stops "
     "the processes. The binaries are "
     "taken from --bin-dir, else next to psctl (and its sibling bazel-bin folders), else from "
     "Bazel runfiles",
     BindLocal},
};

// The flags that come before (or after) any command.
struct GlobalFlags {
  std::string coordinator = "127.0.0.1:7070";
  double timeout_s = 10;
  TlsFiles tls;  // psctl's certificate (OU operator or viewer), its key and the cluster's CA.
  TokenOptions tokens;  // psctl's bearer token (token_file only).
};

void AddGlobalFlags(CLI::App* app, GlobalFlags* flags) {
  app->add_option("--coordinator", flags->coordinator,
                  "Coordinator address host:port (default 127.0.0.1:7070)")
      ->envname("PSCTL_COORDINATOR")
      ->type_name("ADDR");
  app->add_option("--timeout", flags->timeout_s, "Seconds to wait for each RPC (default 10)")
      ->check(CLI::PositiveNumber)
      ->type_name("SECONDS");
  app->add_option("--tls-cert", flags->tls.cert,
                  "For a cluster on mutual TLS: psctl's certificate, signed by --tls-ca, whose "
                  "subject OU is its role (viewer: reads; operator: also submits, cancels, "
                  "checkpoints, exports). Used for every channel psctl opens (README \"Security\")")
      ->envname("PSCTL_TLS_CERT")
      ->type_name("PEM");
  app->add_option("--tls-key", flags->tls.key, "The private key of --tls-cert")
      ->envname("PSCTL_TLS_KEY")
      ->type_name("PEM");
  app->add_option("--tls-ca", flags->tls.ca,
                  "The cluster CA's certificate, which must have signed the servers' certificates "
                  "(alone, without --tls-cert: TLS with a --token-file instead of a certificate)")
      ->envname("PSCTL_TLS_CA")
      ->type_name("PEM");
  app->add_option("--token-file", flags->tokens.token_file,
                  "File holding psctl's bearer token, sent on every call; the cluster's "
                  "--auth_tokens_file gives it its role (viewer or operator). Needs --tls-ca, or "
                  "--allow-insecure-tokens where TLS ends at a proxy (README \"Security\")")
      ->envname("PSCTL_TOKEN_FILE")
      ->type_name("FILE");
  app->add_flag("--allow-insecure-tokens", flags->tokens.allow_insecure_tokens,
                "Send --token-file's token without TLS (only behind a proxy that encrypts)");
}

// Adds every group and command of the table to `app`; returns each command's subcommand with the
// handler that runs it.
std::vector<std::pair<CLI::App*, CommandHandler>> AddCommands(CLI::App* app) {
  std::map<std::string, CLI::App*> parents = {{"", app}};
  for (const auto& [name, help] : kGroups) {
    CLI::App* group = app->add_subcommand(name, help);
    group->require_subcommand(1);
    parents[name] = group;
  }
  std::vector<std::pair<CLI::App*, CommandHandler>> commands;
  for (const CliCommand& row : kCommands) {
    CLI::App* command = parents.at(row.group)->add_subcommand(row.name, row.help);
    commands.emplace_back(command, row.bind(command));
  }
  return commands;
}

CommandEnv MakeEnv(const GlobalFlags& flags, int argc, char** argv) {
  CommandEnv env;
  env.out = &std::cout;
  env.err = &std::cerr;
  env.tty = isatty(STDOUT_FILENO) == 1;
  env.interrupted = &Interrupted;
  env.coordinator = flags.coordinator;
  env.timeout = absl::Seconds(flags.timeout_s);
  env.argv0 = argc > 0 ? argv[0] : "psctl";
  return env;
}

int Main(int argc, char** argv) {
  InstallInterruptHandlers();

  CLI::App app{kDescription};
  app.name("psctl");
  app.fallthrough();  // Global flags may also follow the command.
  app.require_subcommand(1);
  GlobalFlags global;
  AddGlobalFlags(&app, &global);
  const std::vector<std::pair<CLI::App*, CommandHandler>> commands = AddCommands(&app);
  app.footer(kFooter);  // Set last: subcommands copy their parent's footer when they are added.

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);  // --help.
    std::cerr << "psctl: " << e.what() << "\n(psctl --help, psctl COMMAND --help: usage)\n";
    return kExitBadInput;
  }

  // Before any channel: every channel psctl opens uses these credentials (common/tls.h).
  absl::Status tls = EnableTls(global.tls);
  if (tls.ok()) tls = EnableTokens(global.tokens);
  if (!tls.ok()) {
    std::cerr << "psctl: " << tls.message() << "\n";
    return kExitBadInput;
  }
  const CommandEnv env = MakeEnv(global, argc, argv);
  for (const auto& [command, run] : commands) {
    if (command->parsed()) return run(env);
  }
  std::cerr << app.help();
  return kExitBadInput;
}

}  // namespace
}  // namespace psrv

int main(int argc, char** argv) { return psrv::Main(argc, argv); }
