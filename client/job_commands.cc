// psctl's job commands: turn flags into coordinator RPCs and their results into tables, JSON or a
// progress bar.
#include "client/job_commands.h"

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cmath>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "client/cli_flags.h"
#include "client/curves.h"
#include "client/job_progress.h"
#include "client/proto_json.h"
#include "common/job_spec.h"
#include "common/format.h"

namespace psrv {
namespace {

std::string StepText(const JobStatus& job) {
  return absl::StrCat(job.step(), "/", job.spec().training().steps());
}

absl::Status InterruptedStatus(const CommandEnv& env) {
  return env.interrupted() ? absl::CancelledError("interrupted") : absl::OkStatus();
}

// "gpt, 4 layers, 4 heads, width 128, context 64, dropout 0.1, char tokenizer (65 characters)".
std::string ModelText(const ModelSpec& model) {
  std::string text = model.kind();
  if (model.kind() == "mlp") {
    absl::StrAppend(&text, ", context ", model.context(), ", embedding ", model.embedding_dim(),
                    ", hidden ", model.hidden_dim());
  } else {
    absl::StrAppend(&text, ", ", model.layers(), " layers, ", model.heads(), " heads, width ",
                    model.width(), ", context ", model.context());
    if (model.dropout() > 0) absl::StrAppend(&text, ", dropout ", model.dropout());
  }
  absl::StrAppend(&text, ", ", model.tokenizer(), " tokenizer");
  if (model.tokenizer() == "char") {
    absl::StrAppend(&text, " (", model.vocabulary().size(), " characters)");
  } else if (model.tokenizer() == "bpe") {
    absl::StrAppend(&text, " (", model.vocab_size(), " pieces)");
  } else if (model.tokenizer() == "ids") {
    absl::StrAppend(&text, " (", model.vocab_size(), " ids)");
  }
  return text;
}

// "ADAMW lr 0.001 (beta1 0.9, beta2 0.95, weight decay 0.1), warmup 100 steps, cosine decay to
// 0.0001 at step 5000".
std::string OptimizerText(const OptimizerConfig& optimizer) {
  std::string text =
      absl::StrCat(OptimizerKind_Name(optimizer.kind()), " lr ", optimizer.learning_rate());
  if (optimizer.kind() == MOMENTUM) absl::StrAppend(&text, " momentum ", optimizer.momentum());
  if (optimizer.kind() == ADAMW) {
    absl::StrAppend(&text, " (beta1 ", optimizer.beta1(), ", beta2 ", optimizer.beta2());
    if (optimizer.weight_decay() > 0) {
      absl::StrAppend(&text, ", weight decay ", optimizer.weight_decay());
    }
    absl::StrAppend(&text, ")");
  }
  if (optimizer.warmup_steps() > 0) {
    absl::StrAppend(&text, ", warmup ", optimizer.warmup_steps(), " steps");
  }
  if (optimizer.decay_steps() > optimizer.warmup_steps()) {
    absl::StrAppend(&text, ", cosine decay to ", optimizer.min_learning_rate(), " at step ",
                    optimizer.decay_steps());
  }
  return text;
}

// "1.912 at step 400, best 1.850 at step 300"; "-" before the first validation loss.
std::string ValidationText(const JobStatus& job) {
  if (!HasValLoss(job)) return "-";
  std::string text = FormatLoss(job.val_loss());
  if (job.val_history_size() == 0) return text;
  const uint64_t last_step = job.val_history(job.val_history_size() - 1).step();
  absl::StrAppend(&text, " at step ", last_step);
  const std::optional<ValidationPoint> best = BestValidation(job);
  if (best.has_value() && best->step() != last_step) {
    absl::StrAppend(&text, ", best ", FormatLoss(best->loss()), " at step ", best->step());
  }
  return text;
}

// "data.txt (10% for validation)".
std::string DataText(const DataSpec& data) {
  std::string text = data.path();
  if (data.validation_fraction() > 0) {
    absl::StrAppend(&text, " (", std::lround(data.validation_fraction() * 100),
                    "% for validation)");
  }
  return text;
}

// "SYNC, ADAMW lr 0.001 (...), batch 12, grad clip 1, seed 1".
std::string TrainingText(const TrainingSpec& t) {
  std::string text = absl::StrCat(ConsistencyMode_Name(t.consistency()), ", ",
                                  OptimizerText(t.optimizer()), ", batch ", t.batch_size());
  if (t.grad_clip() > 0) absl::StrAppend(&text, ", grad clip ", t.grad_clip());
  absl::StrAppend(&text, ", seed ", t.seed());
  return text;
}

// The failures a job survived, as "name: value" rows: checkpoints, restarts, fail-overs.
void AddRecoveryFields(const JobStatus& job,
                       const std::function<void(const std::string&, const std::string&)>& field) {
  if (job.checkpoints_size() > 0) {
    const CheckpointManifest& last = job.checkpoints(job.checkpoints_size() - 1);
    field("checkpoints", absl::StrCat(job.checkpoints_size(), ", the last at step ", last.step(),
                                      last.bad_reason().empty() ? "" : " (bad)"));
  }
  if (job.restarts() > 0) {
    field("restarts",
          absl::StrCat(job.restarts(), ", resumed from step ", job.resumed_from_step()));
  }
  if (job.shard_map().epoch() > 0) {
    field("fail-overs", absl::StrCat(job.shard_map().epoch(), " (shard map epoch)"));
  }
}

// The "name:  value" lines at the top of `psctl job status`.
std::string JobFieldsText(const JobStatus& job, absl::Time now) {
  const JobSpec& spec = job.spec();
  const TrainingSpec& t = spec.training();
  Table fields({"", ""});
  auto field = [&](const std::string& name, const std::string& value) {
    fields.AddRow({name + ":", value});
  };
  field("job", job.job_id());
  field("name", spec.name());
  field("state", JobState_Name(job.state()));
  field("step", StepText(job));
  field("loss", FormatLoss(job.loss(), HasLoss(job)));
  field("val loss", ValidationText(job));
  field("tokens/s", job.tokens_per_sec() > 0 ? HumanCount(job.tokens_per_sec()) : "-");
  field("submitted", absl::StrCat(FormatAgeSince(job.submit_time_ms(), now), " ago"));
  field("elapsed", job.start_time_ms() != 0 ? FormatClock(JobElapsed(job, now)) : "-");
  field("model", ModelText(spec.model()));
  field("data", DataText(spec.data()));
  field("training", TrainingText(t));
  field("eval", absl::StrCat(t.eval_every() > 0 ? absl::StrCat("every ", t.eval_every(), " steps")
                                                : "at the end",
                             ", ", t.eval_batches(), " batches"));
  field("cluster", absl::StrCat(spec.num_servers(), " server(s), ", spec.num_workers(),
                                " worker(s), ", spec.replicas() >= 2 ? "shards backed up" : "no backups"));
  if (PipelineStages(spec) > 1) {
    field("parallelism",
          absl::StrCat(DataGroups(spec), " data-parallel group(s) x ", PipelineStages(spec),
                       " pipeline stages, ", spec.parallelism().micro_batches(),
                       " micro-batches, ", PipelineScheduleKind_Name(spec.parallelism().schedule())));
  }
  AddRecoveryFields(job, field);
  if (!job.message().empty()) field("message", job.message());
  // The header row of a two-column key/value table is empty: drop it.
  std::string rendered = fields.Render();
  rendered.erase(0, rendered.find('\n') + 1);
  return rendered;
}

// One row per worker, by rank (pipeline jobs: its group and stage; the loss and tokens are the
// last stage's).
std::string WorkersTable(const JobStatus& job) {
  const uint32_t stages = PipelineStages(job.spec());
  const bool piped = stages > 1;
  Table workers(piped ? std::vector<std::string>{"RANK", "GROUP/STAGE", "WORKER", "STEP", "LOSS",
                                                 "TOK/S", "DONE"}
                      : std::vector<std::string>{"RANK", "WORKER", "STEP", "LOSS", "TOK/S", "DONE"});
  for (int c : {0, 2, 3, 4}) workers.SetRightAligned(c + (piped && c > 0 ? 1 : 0));
  std::vector<WorkerProgress> sorted(job.workers().begin(), job.workers().end());
  std::sort(sorted.begin(), sorted.end(),
            [](const WorkerProgress& a, const WorkerProgress& b) { return a.rank() < b.rank(); });
  for (const WorkerProgress& w : sorted) {
    const bool has_loss = w.rank() % stages == stages - 1;
    std::vector<std::string> row = {absl::StrCat(w.rank()), w.worker_id(), absl::StrCat(w.step()),
                                    FormatLoss(w.loss(), w.step() > 0 && has_loss),
                                    w.tokens_per_sec() > 0 ? HumanCount(w.tokens_per_sec()) : "-",
                                    w.done() ? "yes" : w.vacant() ? "vacant" : "no"};
    if (piped) row.insert(row.begin() + 1, absl::StrCat(w.rank() / stages, "/", w.rank() % stages));
    workers.AddRow(row);
  }
  return workers.Render();
}

}  // namespace

absl::StatusOr<JobStatus> WatchJobWithProgress(
    const CommandEnv& env, CoordinatorClient& client, const std::string& job_id,
    const std::function<absl::Status()>& poll,
    const std::function<void(const JobStatus&)>& observe) {
  JobProgressPrinter printer(env.out, JobProgressPrinter::Options{env.tty});
  absl::StatusOr<JobStatus> final_status = client.WatchJob(
      job_id,
      [&](const JobStatus& status) {
        if (observe) observe(status);
        printer.Update(status);
      },
      poll);
  if (!final_status.ok()) {
    printer.EndLine();
    return final_status;
  }
  printer.Finish(*final_status);
  return final_status;
}

int ExitCodeForJob(const JobStatus& status) {
  return status.state() == SUCCEEDED ? kExitOk : kExitFailure;
}

int JobSubmitCommand(const CommandEnv& env, const JobSpecFlags& flags, bool watch, bool json) {
  absl::StatusOr<JobSpec> spec = BuildJobSpec(flags);
  if (!spec.ok()) return ReportError(env, spec.status());
  CoordinatorClient client = MakeCoordinatorClient(env);
  absl::StatusOr<std::string> job_id = client.SubmitJob(*spec);
  if (!job_id.ok()) return ReportError(env, job_id.status());
  if (!watch) {
    if (json) {
      nlohmann::ordered_json out = {{"job_id", *job_id}};
      *env.out << out.dump(2) << "\n";
    } else {
      *env.out << *job_id << "\n";
    }
    return kExitOk;
  }
  if (json) {
    // One JSON document: the final status (it holds the job id).
    absl::StatusOr<JobStatus> final_status =
        client.WatchJob(*job_id, nullptr, [&] { return InterruptedStatus(env); });
    if (!final_status.ok()) return ReportError(env, final_status.status());
    *env.out << ToJson(*final_status) << "\n";
    return ExitCodeForJob(*final_status);
  }
  *env.out << "submitted job " << *job_id << "\n";
  return JobWatchCommand(env, *job_id);
}

int JobListCommand(const CommandEnv& env, bool json) {
  CoordinatorClient client = MakeCoordinatorClient(env);
  absl::StatusOr<std::vector<JobStatus>> jobs = client.ListJobs();
  if (!jobs.ok()) return ReportError(env, jobs.status());
  if (json) {
    ListJobsResponse response;
    for (const JobStatus& job : *jobs) *response.add_jobs() = job;
    *env.out << ToJson(response) << "\n";
    return kExitOk;
  }
  if (jobs->empty()) {
    *env.out << "no jobs\n";
    return kExitOk;
  }
  const absl::Time now = absl::Now();
  Table table({"ID", "NAME", "STATE", "STEP", "LOSS", "VAL", "TOK/S", "AGE"});
  for (int c : {3, 4, 5, 6, 7}) table.SetRightAligned(c);
  for (const JobStatus& job : *jobs) {
    table.AddRow({job.job_id(), job.spec().name(), JobState_Name(job.state()), StepText(job),
                  FormatLoss(job.loss(), HasLoss(job)), FormatLoss(job.val_loss(), HasValLoss(job)),
                  job.tokens_per_sec() > 0 ? HumanCount(job.tokens_per_sec()) : "-",
                  FormatAgeSince(job.submit_time_ms(), now)});
  }
  *env.out << table.Render();
  return kExitOk;
}

int JobStatusCommand(const CommandEnv& env, const std::string& job_id, bool json) {
  CoordinatorClient client = MakeCoordinatorClient(env);
  absl::StatusOr<JobStatus> job = client.GetJob(job_id);
  if (!job.ok()) return ReportError(env, job.status());
  if (json) {
    *env.out << ToJson(*job) << "\n";
    return kExitOk;
  }
  std::ostream& out = *env.out;
  out << JobFieldsText(*job, absl::Now());
  if (job->workers_size() > 0) out << "\n" << WorkersTable(*job);
  if (!job->sample().empty()) {
    std::string sample = PrintableText(job->sample());
    if (sample.back() != '\n') sample += '\n';
    out << "\nSample of generated text:\n" << sample;
  }
  return kExitOk;
}

int JobWatchCommand(const CommandEnv& env, const std::string& job_id) {
  CoordinatorClient client = MakeCoordinatorClient(env);
  absl::StatusOr<JobStatus> final_status =
      WatchJobWithProgress(env, client, job_id, [&] { return InterruptedStatus(env); });
  if (!final_status.ok()) {
    if (env.interrupted()) {
      *env.err << "psctl: stopped watching job " << job_id
               << "; it keeps running (psctl job cancel " << job_id << " stops it)\n";
      return kExitInterrupted;
    }
    return ReportError(env, final_status.status());
  }
  return ExitCodeForJob(*final_status);
}

int JobCancelCommand(const CommandEnv& env, const std::string& job_id) {
  CoordinatorClient client = MakeCoordinatorClient(env);
  absl::StatusOr<JobStatus> job = client.CancelJob(job_id);
  if (!job.ok()) return ReportError(env, job.status());
  *env.out << "job " << job->job_id() << ": " << JobState_Name(job->state()) << "\n";
  return kExitOk;
}

int CheckpointCommand(const CommandEnv& env, const std::string& job_id, const std::string& directory,
                      bool json) {
  CoordinatorClient client = MakeCoordinatorClient(env);
  absl::StatusOr<CheckpointManifest> manifest = client.CheckpointJob(job_id, directory);
  if (!manifest.ok()) return ReportError(env, manifest.status());
  if (json) {
    *env.out << ToJson(*manifest) << "\n";
    return kExitOk;
  }
  *env.out << "job " << job_id << ": checkpoint at step " << manifest->step() << ", "
           << manifest->files_size() << " files\n";
  for (const CheckpointFile& file : manifest->files()) {
    *env.out << "  " << file.server_id() << "  " << file.path() << "  crc32 " << file.crc32()
             << "\n";
  }
  return kExitOk;
}

int JobCurvesCommand(const CommandEnv& env, const std::string& job_id, const std::string& out_dir) {
  CoordinatorClient client = MakeCoordinatorClient(env);
  absl::StatusOr<JobStatus> job = client.GetJob(job_id);
  if (!job.ok()) return ReportError(env, job.status());
  const std::string dir = ResolveUserPath(out_dir.empty() ? "." : out_dir);
  absl::StatusOr<CurveFiles> files =
      WriteCurves(*job, dir, env.gnuplot.has_value() ? *env.gnuplot : FindGnuplot());
  if (!files.ok()) return ReportError(env, files.status());
  *env.out << "wrote " << files->csv << "\n";
  if (!files->png.empty()) *env.out << "wrote " << files->png << "\n";
  if (!files->note.empty()) *env.err << "psctl: " << files->note << "\n";
  return kExitOk;
}

// The commands' flags, bound to CLI11.

namespace {

// A command whose only argument is a job id.
CLI::Option* AddJobIdArgument(CLI::App* command, std::string* job_id) {
  return command->add_option("id", *job_id, "Job id")->required();
}

}  // namespace

CommandHandler BindJobSubmit(CLI::App* command) {
  struct Flags {
    JobSpecFlags spec;
    bool watch = false;
    bool json = false;
  };
  auto flags = std::make_shared<Flags>();
  AddJobSpecFlags(command, &flags->spec, /*cluster_size=*/true);
  command->add_flag("--watch", flags->watch, "Then watch it like `psctl job watch`");
  command->add_flag("--json", flags->json,
                    "Print {\"job_id\": ...} (with --watch: the final job status) as JSON");
  return [flags](const CommandEnv& env) {
    return JobSubmitCommand(env, flags->spec, flags->watch, flags->json);
  };
}

CommandHandler BindJobList(CLI::App* command) {
  auto json = std::make_shared<bool>(false);
  command->add_flag("--json", *json, "Print the jobs as JSON");
  return [json](const CommandEnv& env) { return JobListCommand(env, *json); };
}

CommandHandler BindJobStatus(CLI::App* command) {
  struct Flags {
    std::string job_id;
    bool json = false;
  };
  auto flags = std::make_shared<Flags>();
  AddJobIdArgument(command, &flags->job_id);
  command->add_flag("--json", flags->json, "Print the full JobStatus as JSON");
  return [flags](const CommandEnv& env) {
    return JobStatusCommand(env, flags->job_id, flags->json);
  };
}

CommandHandler BindJobWatch(CLI::App* command) {
  auto job_id = std::make_shared<std::string>();
  AddJobIdArgument(command, job_id.get());
  return [job_id](const CommandEnv& env) { return JobWatchCommand(env, *job_id); };
}

CommandHandler BindJobCancel(CLI::App* command) {
  auto job_id = std::make_shared<std::string>();
  AddJobIdArgument(command, job_id.get());
  return [job_id](const CommandEnv& env) { return JobCancelCommand(env, *job_id); };
}

CommandHandler BindCheckpoint(CLI::App* command) {
  struct Flags {
    std::string job_id;
    std::string directory;
    bool json = false;
  };
  auto flags = std::make_shared<Flags>();
  AddJobIdArgument(command, &flags->job_id);
  command
      ->add_option("--directory", flags->directory,
                   "Directory on the servers (default: the job's checkpoint.directory)")
      ->type_name("DIR");
  command->add_flag("--json", flags->json, "Print the manifest as JSON");
  return [flags](const CommandEnv& env) {
    return CheckpointCommand(env, flags->job_id, flags->directory, flags->json);
  };
}

CommandHandler BindJobCurves(CLI::App* command) {
  struct Flags {
    std::string job_id;
    std::string out = ".";
  };
  auto flags = std::make_shared<Flags>();
  AddJobIdArgument(command, &flags->job_id);
  command->add_option("--out", flags->out, "Folder for the files (default: .)")->type_name("DIR");
  return [flags](const CommandEnv& env) {
    return JobCurvesCommand(env, flags->job_id, flags->out);
  };
}

}  // namespace psrv
