// The psctl commands, independent of the command-line parser: each takes its parsed flags and the
// environment (output streams, coordinator address, Ctrl-C flag) and returns the exit code:
// 0 success, 1 failure (RPC error, job FAILED/CANCELLED), 2 bad input, 130 interrupted.
#ifndef PSRV_CLIENT_COMMANDS_H_
#define PSRV_CLIENT_COMMANDS_H_

#include <cstdint>
#include <functional>
#include <optional>
#include <ostream>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "proto/job.pb.h"

namespace psrv {

inline constexpr int kExitOk = 0;
inline constexpr int kExitFailure = 1;
inline constexpr int kExitBadInput = 2;
inline constexpr int kExitInterrupted = 130;

struct CommandEnv {
  std::ostream* out = nullptr;
  std::ostream* err = nullptr;
  bool tty = false;  // stdout is a terminal: redraw the progress bar in place.
  std::function<bool()> interrupted = [] { return false; };
  std::string coordinator = "127.0.0.1:7070";
  absl::Duration timeout = absl::Seconds(10);  // Per unary RPC.
  std::string argv0;                           // To find binaries and runfiles.
  // gnuplot for the PNG of `job curves` and `local`: unset finds it on PATH; "" means none.
  std::optional<std::string> gnuplot;
};

// A job spec from an optional file plus flag overrides (unset optionals leave the file's value).
struct JobSpecFlags {
  std::string spec_file;  // .json, .yaml or .yml; "-" reads stdin; "" for none.
  std::optional<std::string> name;
  std::optional<std::string> data;
  std::optional<std::string> init_from;  // safetensors file to start from (psctl export).
  std::optional<int64_t> steps;
  std::optional<int64_t> batch_size;
  std::optional<double> lr;
  std::optional<std::string> optimizer;  // "sgd", "momentum" or "adamw", any case.
  std::optional<double> momentum;        // Also selects MOMENTUM if no optimizer was chosen.
  std::optional<std::string> mode;       // "sync" or "async", any case.
  std::optional<int64_t> servers;
  std::optional<int64_t> workers;
  std::optional<uint64_t> seed;
  // The model.
  std::optional<std::string> model;  // "gpt" or "mlp", any case.
  std::optional<int64_t> context;
  std::optional<int64_t> embedding_dim;  // mlp only.
  std::optional<int64_t> hidden_dim;     // mlp only.
  std::optional<int64_t> layers;         // gpt only.
  std::optional<int64_t> heads;          // gpt only.
  std::optional<int64_t> width;          // gpt only.
  std::optional<double> dropout;         // gpt only.
  std::optional<std::string> tokenizer;  // "byte" or "char", any case.
  // Data and evaluation.
  std::optional<double> validation_fraction;
  std::optional<double> grad_clip;
  std::optional<int64_t> eval_every;
  std::optional<int64_t> eval_batches;
  // AdamW and the learning-rate schedule.
  std::optional<double> beta1;
  std::optional<double> beta2;
  std::optional<double> weight_decay;
  std::optional<int64_t> warmup_steps;
  std::optional<int64_t> decay_steps;
  std::optional<double> min_lr;
};

// Reads the spec file, applies the overrides and the defaults, fills a "char" tokenizer's
// vocabulary from the data file (FillVocabulary) and validates. INVALID_ARGUMENT with a message
// naming the field or flag, also for an unreadable spec or data file.
absl::StatusOr<JobSpec> BuildJobSpec(const JobSpecFlags& flags);

// A relative path as the user meant it: under `bazel run`, relative to BUILD_WORKING_DIRECTORY.
std::string ResolveUserPath(const std::string& path);

// Prints "psctl: <message>" to env.err and returns the exit code for `status`: 2 for
// INVALID_ARGUMENT (bad input), 130 for CANCELLED by Ctrl-C, else 1.
int ReportError(const CommandEnv& env, const absl::Status& status);

int JobSubmitCommand(const CommandEnv& env, const JobSpecFlags& flags, bool watch, bool json);
int JobListCommand(const CommandEnv& env, bool json);
int JobStatusCommand(const CommandEnv& env, const std::string& job_id, bool json);
int JobWatchCommand(const CommandEnv& env, const std::string& job_id);
int JobCancelCommand(const CommandEnv& env, const std::string& job_id);
// Checkpoints a RUNNING SYNC job now and prints the manifest (step, files) or, with json, it as
// JSON.
int CheckpointCommand(const CommandEnv& env, const std::string& job_id, const std::string& directory,
                      bool json);
// Writes <out_dir>/<job_id>.csv and .png (client/curves.h) and prints their paths.
int JobCurvesCommand(const CommandEnv& env, const std::string& job_id, const std::string& out_dir);

struct ShardsFlags {
  std::string job_id;  // Only this job's shards; "" for all.
  bool json = false;   // With watch: one compact JSON document per line and refresh.
  bool watch = false;  // Refresh every `interval` until Ctrl-C (or `count` refreshes).
  absl::Duration interval = absl::Seconds(2);
  int count = 0;  // Refreshes before stopping; 0: until Ctrl-C.
};
int ShardsCommand(const CommandEnv& env, const ShardsFlags& flags);

struct TopFlags {
  std::string job_id;  // Only this job's shards and workers; "" for all.
  bool once = false;   // One view, no refresh.
  absl::Duration interval = absl::Seconds(2);
  int count = 0;   // Refreshes before stopping; 0: until Ctrl-C.
  int limit = 10;  // Rows per table.
};
int TopCommand(const CommandEnv& env, const TopFlags& flags);

int ClusterCommand(const CommandEnv& env, bool json);

struct LocalFlags {
  std::optional<int64_t> servers;  // Default: the spec's num_servers if set, else 2.
  std::optional<int64_t> workers;  // Default: the spec's num_workers if set, else 2.
  std::string bin_dir;
  std::string log_dir;  // "" for a fresh temporary directory (removed after a successful run).
  bool keep_logs = false;
  // Extra ps_worker flags, each "--name=value" (not those psctl local sets itself).
  std::vector<std::string> worker_args;
  absl::Duration startup_timeout = absl::Seconds(60);  // Until the job leaves PENDING.
  std::string transport = "unix";  // Between workers and servers: "unix" sockets or "tcp".
};

int LocalCommand(const CommandEnv& env, const JobSpecFlags& spec_flags,
                 const LocalFlags& local_flags);

}  // namespace psrv

#endif  // PSRV_CLIENT_COMMANDS_H_
