// psctl's commands: turn flags into RPCs and RPC results into tables, JSON or a progress bar.
#include "client/commands.h"

#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <future>
#include <iostream>
#include <iterator>
#include <limits>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "client/coordinator_client.h"
#include "client/curves.h"
#include "client/format.h"
#include "client/job_progress.h"
#include "client/local_cluster.h"
#include "client/monitor_views.h"
#include "common/job_spec.h"
#include "common/status.h"
#include "google/protobuf/util/json_util.h"

namespace psrv {
namespace {

std::string ToJson(const google::protobuf::Message& message, bool pretty = true) {
  google::protobuf::util::JsonPrintOptions options;
  options.always_print_primitive_fields = true;
  options.preserve_proto_field_names = true;
  options.add_whitespace = pretty;
  std::string json;
  const auto status = google::protobuf::util::MessageToJsonString(message, &json, options);
  if (!status.ok()) return JsonQuote(absl::StrCat("cannot print as JSON: ", status.ToString()));
  while (!json.empty() && json.back() == '\n') json.pop_back();
  return json;
}

nlohmann::ordered_json ToJsonValue(const google::protobuf::Message& message) {
  return nlohmann::ordered_json::parse(ToJson(message, /*pretty=*/false));
}

CoordinatorClient MakeClient(const CommandEnv& env) {
  return CoordinatorClient(CoordinatorClientOptions{env.coordinator, env.timeout});
}

absl::Status FlagRange(const char* flag, int64_t value, int64_t lo, int64_t hi) {
  if (value < lo || value > hi) {
    return absl::InvalidArgumentError(
        absl::StrCat(flag, " must be in [", lo, ", ", hi, "], got ", value));
  }
  return absl::OkStatus();
}

// Sets a uint32 spec field from a flag after checking its range here: in the spec 0 means "unset,
// use the default", and a value above 2^32 would wrap.
absl::Status SetUint32(const char* flag, const std::optional<int64_t>& value, int64_t lo,
                       int64_t hi, const std::function<void(uint32_t)>& set) {
  if (!value.has_value()) return absl::OkStatus();
  absl::Status status = FlagRange(flag, *value, lo, hi);
  if (!status.ok()) return status;
  set(static_cast<uint32_t>(*value));
  return absl::OkStatus();
}

absl::StatusOr<std::string> ReadSpecText(const std::string& spec_file) {
  if (spec_file == "-") {
    return std::string(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
  }
  std::ifstream in(ResolveUserPath(spec_file), std::ios::binary);
  if (!in) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot read --spec ", spec_file, ": ", std::strerror(errno)));
  }
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

// Waits for `job_id` to end while drawing its progress. `poll` may abort the watch. Prints the
// final summary and returns the final status.
absl::StatusOr<JobStatus> WatchWithProgress(
    const CommandEnv& env, CoordinatorClient& client, const std::string& job_id,
    const std::function<absl::Status()>& poll,
    const std::function<void(const JobStatus&)>& observe = nullptr) {
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

std::string StepText(const JobStatus& job) {
  return absl::StrCat(job.step(), "/", job.spec().training().steps());
}

std::string MakeTempDir() {
  const char* tmp = getenv("TMPDIR");
  std::string pattern = absl::StrCat(tmp != nullptr && *tmp ? tmp : "/tmp", "/psctl-local-XXXXXX");
  std::vector<char> buffer(pattern.begin(), pattern.end());
  buffer.push_back('\0');
  if (mkdtemp(buffer.data()) == nullptr) return "";
  return std::string(buffer.data());
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

}  // namespace

std::string ResolveUserPath(const std::string& path) {
  if (path.empty() || path[0] == '/' || path == "-") return path;
  const char* base = getenv("BUILD_WORKING_DIRECTORY");
  if (base != nullptr && *base != '\0') return absl::StrCat(base, "/", path);
  return path;
}

namespace {

// The spec file of `flags`, parsed but without defaults; an empty spec if there is none.
absl::StatusOr<JobSpec> LoadSpecFile(const JobSpecFlags& flags) {
  JobSpec spec;
  if (!flags.spec_file.empty()) {
    if (flags.spec_file != "-" && !absl::EndsWith(flags.spec_file, ".json") &&
        !absl::EndsWith(flags.spec_file, ".yaml") && !absl::EndsWith(flags.spec_file, ".yml")) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--spec ", flags.spec_file, ": expected a .json, .yaml or .yml file (or - for stdin)"));
    }
    absl::StatusOr<std::string> text = ReadSpecText(flags.spec_file);
    if (!text.ok()) return text.status();
    absl::StatusOr<JobSpec> parsed = ParseJobSpec(*text);
    if (!parsed.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat(flags.spec_file, ": ", parsed.status().message()));
    }
    spec = *std::move(parsed);
  }
  return spec;
}

// The lower-cased value of a flag that takes one of `choices`.
absl::StatusOr<std::string> Choice(const char* flag, const std::string& value,
                                   const std::vector<std::string>& choices) {
  const std::string lower = absl::AsciiStrToLower(value);
  if (std::find(choices.begin(), choices.end(), lower) == choices.end()) {
    std::string names = absl::StrJoin(choices, ", ");
    const std::size_t last_comma = names.rfind(", ");
    if (last_comma != std::string::npos) names.replace(last_comma, 2, " or ");
    return absl::InvalidArgumentError(absl::StrCat(flag, " must be ", names, ", got ", value));
  }
  return lower;
}

// The values a real-valued flag accepts: from lo to hi, each end included unless marked open.
struct Interval {
  double lo;
  double hi;  // Infinity: no upper bound.
  bool lo_open = false;
  bool hi_open = false;
};

// Sets a float spec field from a flag after checking it lies in `interval` (NaN never does).
absl::Status SetFloat(const char* flag, const std::optional<double>& value, Interval interval,
                      const std::function<void(float)>& set) {
  if (!value.has_value()) return absl::OkStatus();
  const double v = *value;
  const bool above_lo = interval.lo_open ? v > interval.lo : v >= interval.lo;
  const bool below_hi = interval.hi_open ? v < interval.hi : v <= interval.hi;
  if (!(above_lo && below_hi)) {  // Written so that NaN fails.
    std::string range;
    if (std::isinf(interval.hi)) {
      range = absl::StrCat(interval.lo_open ? "> " : ">= ", interval.lo);
    } else {
      range = absl::StrCat("in ", interval.lo_open ? "(" : "[", interval.lo, ", ", interval.hi,
                           interval.hi_open ? ")" : "]");
    }
    return absl::InvalidArgumentError(absl::StrCat(flag, " must be ", range, ", got ", v));
  }
  set(static_cast<float>(v));
  return absl::OkStatus();
}

// Flags that only mean something for one model or optimizer, checked once the defaults chose them:
// a flag the job would silently ignore is a mistake worth reporting.
absl::Status CheckFlagsFitSpec(const JobSpec& spec, const JobSpecFlags& flags) {
  const std::string& kind = spec.model().kind();
  const std::pair<const char*, bool> mlp_flags[] = {
      {"--embedding-dim", flags.embedding_dim.has_value()},
      {"--hidden-dim", flags.hidden_dim.has_value()}};
  const std::pair<const char*, bool> gpt_flags[] = {{"--layers", flags.layers.has_value()},
                                                    {"--heads", flags.heads.has_value()},
                                                    {"--width", flags.width.has_value()},
                                                    {"--dropout", flags.dropout.has_value()}};
  if (kind == "gpt") {
    for (const auto& [flag, set] : mlp_flags) {
      if (set) {
        return absl::InvalidArgumentError(absl::StrCat(
            flag, " is for the mlp model, but the job's model is gpt (--model mlp selects it)"));
      }
    }
  } else if (kind == "mlp") {
    for (const auto& [flag, set] : gpt_flags) {
      if (set) {
        return absl::InvalidArgumentError(absl::StrCat(
            flag, " is for the gpt model, but the job's model is mlp (--model gpt selects it)"));
      }
    }
  }
  const OptimizerKind optimizer = spec.training().optimizer().kind();
  if (optimizer != ADAMW) {
    const std::pair<const char*, bool> adamw_flags[] = {
        {"--beta1", flags.beta1.has_value()},
        {"--beta2", flags.beta2.has_value()},
        {"--weight-decay", flags.weight_decay.has_value()}};
    for (const auto& [flag, set] : adamw_flags) {
      if (set) {
        return absl::InvalidArgumentError(
            absl::StrCat(flag, " is for --optimizer adamw, but the job's optimizer is ",
                         absl::AsciiStrToLower(OptimizerKind_Name(optimizer))));
      }
    }
  } else if (flags.momentum) {
    return absl::InvalidArgumentError(
        "--momentum is for --optimizer momentum, but the job's optimizer is adamw (it has "
        "--beta1 and --beta2)");
  }
  return absl::OkStatus();
}

// For a "char" tokenizer without a vocabulary: the distinct bytes of the data file, read where
// psctl runs (the path as the user meant it, see ResolveUserPath).
absl::Status FillVocabularyHere(JobSpec* spec) {
  if (spec->data().path().empty())
    return absl::OkStatus();  // ValidateJobSpec says what is missing.
  JobSpec here = *spec;
  here.mutable_data()->set_path(ResolveUserPath(spec->data().path()));
  absl::Status filled = FillVocabulary(&here);
  if (absl::IsNotFound(filled)) {
    return absl::InvalidArgumentError(absl::StrCat(
        filled.message(),
        " (run psctl where the file is readable, set model.vocabulary in --spec, or use "
        "--tokenizer byte)"));
  }
  RETURN_IF_ERROR(filled);
  spec->mutable_model()->set_vocabulary(here.model().vocabulary());
  return absl::OkStatus();
}

// Applies the flag overrides to `spec`, then the defaults, fills the vocabulary, then validates.
absl::StatusOr<JobSpec> ApplyFlags(JobSpec spec, const JobSpecFlags& flags) {
  if (flags.name) spec.set_name(*flags.name);
  if (flags.data) spec.mutable_data()->set_path(*flags.data);
  if (flags.init_from) spec.set_init_from(ResolveUserPath(*flags.init_from));
  ModelSpec* model = spec.mutable_model();
  TrainingSpec* training = spec.mutable_training();
  OptimizerConfig* optimizer = training->mutable_optimizer();

  // The model.
  if (flags.model) {
    ASSIGN_OR_RETURN(const std::string kind, Choice("--model", *flags.model, {"gpt", "mlp"}));
    model->set_kind(kind);
  }
  // The range that fits the model is checked by ValidateJobSpec (gpt 1..4096, mlp 1..64).
  RETURN_IF_ERROR(
      SetUint32("--context", flags.context, 1, 4096, [&](uint32_t v) { model->set_context(v); }));
  RETURN_IF_ERROR(SetUint32("--embedding-dim", flags.embedding_dim, 1, 1024,
                            [&](uint32_t v) { model->set_embedding_dim(v); }));
  RETURN_IF_ERROR(SetUint32("--hidden-dim", flags.hidden_dim, 1, 16384,
                            [&](uint32_t v) { model->set_hidden_dim(v); }));
  RETURN_IF_ERROR(
      SetUint32("--layers", flags.layers, 1, 96, [&](uint32_t v) { model->set_layers(v); }));
  RETURN_IF_ERROR(
      SetUint32("--width", flags.width, 1, 16384, [&](uint32_t v) { model->set_width(v); }));
  RETURN_IF_ERROR(
      SetUint32("--heads", flags.heads, 1, 16384, [&](uint32_t v) { model->set_heads(v); }));
  RETURN_IF_ERROR(SetFloat("--dropout", flags.dropout, {0, 1, false, /*hi_open=*/true},
                           [&](float v) { model->set_dropout(v); }));
  if (flags.tokenizer) {
    ASSIGN_OR_RETURN(const std::string tokenizer,
                     Choice("--tokenizer", *flags.tokenizer, {"byte", "char"}));
    if (tokenizer != model->tokenizer()) model->clear_vocabulary();  // Belongs to the other one.
    model->set_tokenizer(tokenizer);
  }

  // Data and training.
  RETURN_IF_ERROR(SetFloat("--validation-fraction", flags.validation_fraction,
                           {0, 0.5, /*lo_open=*/true},
                           [&](float v) { spec.mutable_data()->set_validation_fraction(v); }));
  if (flags.steps) {
    RETURN_IF_ERROR(FlagRange("--steps", *flags.steps, 1, 1000000000));
    training->set_steps(*flags.steps);
  }
  RETURN_IF_ERROR(SetUint32("--batch-size", flags.batch_size, 1, 65536,
                            [&](uint32_t v) { training->set_batch_size(v); }));
  RETURN_IF_ERROR(SetFloat("--grad-clip", flags.grad_clip,
                           {0, std::numeric_limits<double>::infinity()},
                           [&](float v) { training->set_grad_clip(v); }));
  RETURN_IF_ERROR(SetUint32("--eval-every", flags.eval_every, 0, 1000000000,
                            [&](uint32_t v) { training->set_eval_every(v); }));
  RETURN_IF_ERROR(SetUint32("--eval-batches", flags.eval_batches, 1, 10000,
                            [&](uint32_t v) { training->set_eval_batches(v); }));

  // The optimizer and its schedule.
  if (flags.lr) {
    if (!(*flags.lr > 0)) {  // 0 would mean "default"; NaN fails too.
      return absl::InvalidArgumentError(absl::StrCat("--lr must be in (0, 10], got ", *flags.lr));
    }
    optimizer->set_learning_rate(static_cast<float>(*flags.lr));
  }
  if (flags.optimizer) {
    ASSIGN_OR_RETURN(const std::string kind,
                     Choice("--optimizer", *flags.optimizer, {"sgd", "momentum", "adamw"}));
    optimizer->set_kind(kind == "sgd" ? SGD : kind == "momentum" ? MOMENTUM : ADAMW);
  }
  if (flags.momentum) {
    optimizer->set_momentum(static_cast<float>(*flags.momentum));
    if (optimizer->kind() == OPTIMIZER_UNSPECIFIED) optimizer->set_kind(MOMENTUM);
  }
  // 0 would mean "default" for the betas.
  RETURN_IF_ERROR(SetFloat("--beta1", flags.beta1, {0, 1, true, true},
                           [&](float v) { optimizer->set_beta1(v); }));
  RETURN_IF_ERROR(SetFloat("--beta2", flags.beta2, {0, 1, true, true},
                           [&](float v) { optimizer->set_beta2(v); }));
  RETURN_IF_ERROR(SetFloat("--weight-decay", flags.weight_decay, {0, 10},
                           [&](float v) { optimizer->set_weight_decay(v); }));
  if (flags.warmup_steps) {
    RETURN_IF_ERROR(FlagRange("--warmup-steps", *flags.warmup_steps, 0, 1000000000));
    optimizer->set_warmup_steps(*flags.warmup_steps);
  }
  if (flags.decay_steps) {
    RETURN_IF_ERROR(FlagRange("--decay-steps", *flags.decay_steps, 0, 1000000000));
    optimizer->set_decay_steps(*flags.decay_steps);
  }
  RETURN_IF_ERROR(SetFloat("--min-lr", flags.min_lr, {0, 10},
                           [&](float v) { optimizer->set_min_learning_rate(v); }));

  // The cluster.
  if (flags.mode) {
    ASSIGN_OR_RETURN(const std::string mode, Choice("--mode", *flags.mode, {"sync", "async"}));
    training->set_consistency(mode == "sync" ? SYNC : ASYNC);
  }
  RETURN_IF_ERROR(
      SetUint32("--servers", flags.servers, 1, 64, [&](uint32_t v) { spec.set_num_servers(v); }));
  RETURN_IF_ERROR(
      SetUint32("--workers", flags.workers, 1, 64, [&](uint32_t v) { spec.set_num_workers(v); }));
  if (flags.seed) training->set_seed(*flags.seed);

  ApplyJobDefaults(&spec);
  RETURN_IF_ERROR(CheckFlagsFitSpec(spec, flags));
  RETURN_IF_ERROR(FillVocabularyHere(&spec));
  absl::Status valid = ValidateJobSpec(spec);
  if (!valid.ok()) {
    std::string message = absl::StrCat("invalid job spec: ", valid.message());
    if (spec.data().path().empty()) {
      absl::StrAppend(&message, " (pass --data FILE or set data.path in --spec)");
    }
    return absl::InvalidArgumentError(message);
  }
  return spec;
}

}  // namespace

absl::StatusOr<JobSpec> BuildJobSpec(const JobSpecFlags& flags) {
  absl::StatusOr<JobSpec> spec = LoadSpecFile(flags);
  if (!spec.ok()) return spec.status();
  return ApplyFlags(*std::move(spec), flags);
}

int ReportError(const CommandEnv& env, const absl::Status& status) {
  *env.err << "psctl: " << status.message() << "\n";
  env.err->flush();
  switch (status.code()) {
    case absl::StatusCode::kInvalidArgument:
      return kExitBadInput;
    case absl::StatusCode::kCancelled:
      return env.interrupted() ? kExitInterrupted : kExitFailure;
    default:
      return kExitFailure;
  }
}

int JobSubmitCommand(const CommandEnv& env, const JobSpecFlags& flags, bool watch, bool json) {
  absl::StatusOr<JobSpec> spec = BuildJobSpec(flags);
  if (!spec.ok()) return ReportError(env, spec.status());
  CoordinatorClient client = MakeClient(env);
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
    absl::StatusOr<JobStatus> final_status = client.WatchJob(*job_id, nullptr, [&] {
      return env.interrupted() ? absl::CancelledError("interrupted") : absl::OkStatus();
    });
    if (!final_status.ok()) return ReportError(env, final_status.status());
    *env.out << ToJson(*final_status) << "\n";
    return ExitCodeForJob(*final_status);
  }
  *env.out << "submitted job " << *job_id << "\n";
  return JobWatchCommand(env, *job_id);
}

int JobListCommand(const CommandEnv& env, bool json) {
  CoordinatorClient client = MakeClient(env);
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
  CoordinatorClient client = MakeClient(env);
  absl::StatusOr<JobStatus> job = client.GetJob(job_id);
  if (!job.ok()) return ReportError(env, job.status());
  if (json) {
    *env.out << ToJson(*job) << "\n";
    return kExitOk;
  }
  const absl::Time now = absl::Now();
  const JobSpec& spec = job->spec();
  const TrainingSpec& t = spec.training();
  std::ostream& out = *env.out;
  Table fields({"", ""});
  auto field = [&](const std::string& name, const std::string& value) {
    fields.AddRow({name + ":", value});
  };
  field("job", job->job_id());
  field("name", spec.name());
  field("state", JobState_Name(job->state()));
  field("step", StepText(*job));
  field("loss", FormatLoss(job->loss(), HasLoss(*job)));
  field("val loss", ValidationText(*job));
  field("tokens/s", job->tokens_per_sec() > 0 ? HumanCount(job->tokens_per_sec()) : "-");
  field("submitted", absl::StrCat(FormatAgeSince(job->submit_time_ms(), now), " ago"));
  field("elapsed", job->start_time_ms() != 0 ? FormatClock(JobElapsed(*job, now)) : "-");
  field("model", ModelText(spec.model()));
  std::string data = spec.data().path();
  if (spec.data().validation_fraction() > 0) {
    absl::StrAppend(&data, " (", std::lround(spec.data().validation_fraction() * 100),
                    "% for validation)");
  }
  field("data", data);
  std::string training = absl::StrCat(ConsistencyMode_Name(t.consistency()), ", ",
                                      OptimizerText(t.optimizer()), ", batch ", t.batch_size());
  if (t.grad_clip() > 0) absl::StrAppend(&training, ", grad clip ", t.grad_clip());
  absl::StrAppend(&training, ", seed ", t.seed());
  field("training", training);
  field("eval", absl::StrCat(t.eval_every() > 0 ? absl::StrCat("every ", t.eval_every(), " steps")
                                                : "at the end",
                             ", ", t.eval_batches(), " batches"));
  field("cluster", absl::StrCat(spec.num_servers(), " server(s), ", spec.num_workers(),
                                " worker(s), ", spec.replicas() >= 2 ? "shards backed up" : "no backups"));
  if (job->checkpoints_size() > 0) {
    const CheckpointManifest& last = job->checkpoints(job->checkpoints_size() - 1);
    field("checkpoints", absl::StrCat(job->checkpoints_size(), ", the last at step ", last.step(),
                                      last.bad_reason().empty() ? "" : " (bad)"));
  }
  if (job->restarts() > 0) {
    field("restarts", absl::StrCat(job->restarts(), ", resumed from step ",
                                   job->resumed_from_step()));
  }
  if (job->shard_map().epoch() > 0) {
    field("fail-overs", absl::StrCat(job->shard_map().epoch(), " (shard map epoch)"));
  }
  if (!job->message().empty()) field("message", job->message());
  // The header row of a two-column key/value table is empty: drop it.
  std::string rendered = fields.Render();
  rendered.erase(0, rendered.find('\n') + 1);
  out << rendered;

  if (job->workers_size() > 0) {
    Table workers({"RANK", "WORKER", "STEP", "LOSS", "TOK/S", "DONE"});
    for (int c : {0, 2, 3, 4}) workers.SetRightAligned(c);
    std::vector<WorkerProgress> sorted(job->workers().begin(), job->workers().end());
    std::sort(sorted.begin(), sorted.end(),
              [](const WorkerProgress& a, const WorkerProgress& b) { return a.rank() < b.rank(); });
    for (const WorkerProgress& w : sorted) {
      workers.AddRow({absl::StrCat(w.rank()), w.worker_id(), absl::StrCat(w.step()),
                      FormatLoss(w.loss(), w.step() > 0),
                      w.tokens_per_sec() > 0 ? HumanCount(w.tokens_per_sec()) : "-",
                      w.done() ? "yes" : w.vacant() ? "vacant" : "no"});
    }
    out << "\n" << workers.Render();
  }
  if (!job->sample().empty()) {
    std::string sample = PrintableText(job->sample());
    if (sample.back() != '\n') sample += '\n';
    out << "\nSample of generated text:\n" << sample;
  }
  return kExitOk;
}

int JobWatchCommand(const CommandEnv& env, const std::string& job_id) {
  CoordinatorClient client = MakeClient(env);
  absl::StatusOr<JobStatus> final_status = WatchWithProgress(env, client, job_id, [&] {
    return env.interrupted() ? absl::CancelledError("interrupted") : absl::OkStatus();
  });
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
  CoordinatorClient client = MakeClient(env);
  absl::StatusOr<JobStatus> job = client.CancelJob(job_id);
  if (!job.ok()) return ReportError(env, job.status());
  *env.out << "job " << job->job_id() << ": " << JobState_Name(job->state()) << "\n";
  return kExitOk;
}

int CheckpointCommand(const CommandEnv& env, const std::string& job_id, const std::string& directory,
                      bool json) {
  CoordinatorClient client = MakeClient(env);
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

int ClusterCommand(const CommandEnv& env, bool json) {
  CoordinatorClient client = MakeClient(env);
  absl::StatusOr<std::vector<NodeInfo>> nodes = client.ListNodes();
  if (!nodes.ok()) return ReportError(env, nodes.status());
  if (json) {
    ListNodesResponse response;
    for (const NodeInfo& node : *nodes) *response.add_nodes() = node;
    *env.out << ToJson(response) << "\n";
    return kExitOk;
  }
  if (nodes->empty()) {
    *env.out << "no nodes registered at " << env.coordinator << "\n";
    return kExitOk;
  }
  const absl::Time now = absl::Now();
  Table table({"ID", "ROLE", "ADDRESS", "HEALTH", "HEARTBEAT", "JOB", "RANK"});
  table.SetRightAligned(4);
  table.SetRightAligned(6);
  for (const NodeInfo& node : *nodes) {
    const bool has_job = !node.job_id().empty();
    table.AddRow({node.node_id(), NodeRole_Name(node.role()), node.address(),
                  NodeHealth_Name(node.health()), FormatAgeSince(node.last_heartbeat_ms(), now),
                  has_job ? node.job_id() : "-",
                  has_job && node.role() == WORKER ? absl::StrCat(node.rank()) : "-"});
  }
  *env.out << table.Render();
  return kExitOk;
}

namespace {

// Every registered server's Admin.GetStatus, asked all at once: one slow or dead server costs one
// timeout, not one each. Fails only if the coordinator cannot list the nodes.
absl::StatusOr<std::vector<ServerReply>> AskServers(const CommandEnv& env,
                                                    const std::string& job_id) {
  CoordinatorClient client = MakeClient(env);
  absl::StatusOr<std::vector<NodeInfo>> nodes = client.ListNodes();
  if (!nodes.ok()) return nodes.status();
  std::vector<NodeInfo> servers;
  for (const NodeInfo& node : *nodes) {
    if (node.role() == SERVER) servers.push_back(node);
  }
  std::vector<std::future<absl::StatusOr<ServerStatus>>> replies;
  for (const NodeInfo& server : servers) {
    replies.push_back(std::async(std::launch::async, [&env, &job_id, address = server.address()] {
      return GetServerStatus(address, job_id, env.timeout);
    }));
  }
  std::vector<ServerReply> results;
  for (std::size_t i = 0; i < servers.size(); ++i) {
    results.push_back(ServerReply{servers[i], replies[i].get()});
  }
  return results;
}

nlohmann::ordered_json ShardsJson(const std::vector<ServerReply>& results) {
  nlohmann::ordered_json out = {{"servers", nlohmann::ordered_json::array()},
                                {"errors", nlohmann::ordered_json::array()}};
  for (const ServerReply& reply : results) {
    if (reply.status.ok()) {
      out["servers"].push_back(ToJsonValue(*reply.status));
    } else {
      out["errors"].push_back({{"node_id", reply.node.node_id()},
                               {"address", reply.node.address()},
                               {"code", absl::StatusCodeToString(reply.status.status().code())},
                               {"error", std::string(reply.status.status().message())}});
    }
  }
  return out;
}

// Shows `frame()` every `interval` until Ctrl-C or `count` frames (0: no limit). On a terminal
// (and unless `append`) each frame replaces the screen, under a title line; otherwise frames follow
// one another. An error is shown in place of a frame and the view goes on. Returns 0, or 1 if the
// last frame was an error.
int Refresh(const CommandEnv& env, const std::string& title, absl::Duration interval, int count,
            bool append, const std::function<absl::StatusOr<std::string>()>& frame) {
  const bool redraw = env.tty && !append;
  bool failed = false;
  for (int n = 0; count == 0 || n < count; ++n) {
    if (n > 0) {
      const absl::Time next = absl::Now() + interval;
      while (absl::Now() < next && !env.interrupted()) absl::SleepFor(absl::Milliseconds(50));
    }
    if (env.interrupted()) break;
    absl::StatusOr<std::string> text = frame();
    failed = !text.ok();
    std::string body = text.ok() ? *text : absl::StrCat("error: ", text.status().message(), "\n");
    if (append) {
      *env.out << body;
    } else {
      const std::string header =
          absl::StrCat(title, " · every ", absl::FormatDuration(interval), " · ",
                       absl::FormatTime("%H:%M:%S", absl::Now(), absl::LocalTimeZone()),
                       " · Ctrl-C stops\n\n");
      if (redraw) *env.out << "\033[H\033[2J";  // Home, clear the screen.
      else if (n > 0) *env.out << "\n";
      *env.out << header << body;
    }
    env.out->flush();
  }
  return failed ? kExitFailure : kExitOk;
}

}  // namespace

int ShardsCommand(const CommandEnv& env, const ShardsFlags& flags) {
  if (flags.watch) {
    return Refresh(env, "psctl shards", flags.interval, flags.count, flags.json,
                   [&]() -> absl::StatusOr<std::string> {
                     ASSIGN_OR_RETURN(std::vector<ServerReply> results,
                                      AskServers(env, flags.job_id));
                     if (flags.json) return ShardsJson(results).dump() + "\n";
                     if (results.empty()) {
                       return absl::StrCat("no servers registered at ", env.coordinator, "\n");
                     }
                     return ShardsTable(results, flags.job_id, absl::Now());
                   });
  }
  absl::StatusOr<std::vector<ServerReply>> results = AskServers(env, flags.job_id);
  if (!results.ok()) return ReportError(env, results.status());
  const bool all_failed =
      !results->empty() && std::none_of(results->begin(), results->end(),
                                        [](const ServerReply& r) { return r.status.ok(); });
  if (flags.json) {
    *env.out << ShardsJson(*results).dump(2) << "\n";
    return all_failed ? kExitFailure : kExitOk;
  }
  if (results->empty()) {
    *env.out << "no servers registered at " << env.coordinator << "\n";
    return kExitOk;
  }
  *env.out << ShardsTable(*results, flags.job_id, absl::Now());
  return all_failed ? kExitFailure : kExitOk;
}

int TopCommand(const CommandEnv& env, const TopFlags& flags) {
  if (flags.limit < 1) {
    return ReportError(env, absl::InvalidArgumentError(
                                absl::StrCat("--limit must be at least 1, got ", flags.limit)));
  }
  auto frame = [&]() -> absl::StatusOr<std::string> {
    CoordinatorClient client = MakeClient(env);
    ASSIGN_OR_RETURN(std::vector<JobStatus> jobs, client.ListJobs());
    if (!flags.job_id.empty()) {
      jobs.erase(std::remove_if(jobs.begin(), jobs.end(),
                                [&](const JobStatus& j) { return j.job_id() != flags.job_id; }),
                 jobs.end());
    }
    ASSIGN_OR_RETURN(std::vector<ServerReply> servers, AskServers(env, flags.job_id));
    return TopView(servers, jobs, flags.limit, absl::Now());
  };
  if (flags.once) {
    absl::StatusOr<std::string> text = frame();
    if (!text.ok()) return ReportError(env, text.status());
    *env.out << *text;
    return kExitOk;
  }
  return Refresh(env, "psctl top", flags.interval, flags.count, /*append=*/false, frame);
}

int JobCurvesCommand(const CommandEnv& env, const std::string& job_id, const std::string& out_dir) {
  CoordinatorClient client = MakeClient(env);
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

int LocalCommand(const CommandEnv& env, const JobSpecFlags& spec_flags,
                 const LocalFlags& local_flags) {
  // 1. The job and the worker flags, checked before anything starts.
  for (const std::string& arg : local_flags.worker_args) {
    const std::string name = arg.substr(0, arg.find('='));
    if (arg.rfind("--", 0) != 0 || name.size() <= 2) {
      return ReportError(env, absl::InvalidArgumentError(absl::StrCat(
                                  "--worker-arg takes a ps_worker flag, --name=value; got \"", arg,
                                  "\"")));
    }
    if (name == "--coordinator" || name == "--max_jobs" || name == "--host" ||
        name == "--metrics_port" || name == "--metrics_port_file") {
      return ReportError(env, absl::InvalidArgumentError(absl::StrCat(
                                  "--worker-arg ", name, " is set by psctl local itself")));
    }
  }
  absl::StatusOr<JobSpec> from_file = LoadSpecFile(spec_flags);
  if (!from_file.ok()) return ReportError(env, from_file.status());
  // --servers/--workers, else the file's num_servers/num_workers, else 2 of each.
  JobSpecFlags flags = spec_flags;
  flags.servers =
      local_flags.servers.value_or(from_file->num_servers() != 0 ? from_file->num_servers() : 2);
  flags.workers =
      local_flags.workers.value_or(from_file->num_workers() != 0 ? from_file->num_workers() : 2);
  absl::StatusOr<JobSpec> spec = ApplyFlags(*std::move(from_file), flags);
  if (!spec.ok()) return ReportError(env, spec.status());
  spec->mutable_data()->set_path(
      std::filesystem::absolute(ResolveUserPath(spec->data().path())).lexically_normal().string());
  if (access(spec->data().path().c_str(), R_OK) != 0) {
    return ReportError(env, absl::InvalidArgumentError(
                                absl::StrCat("cannot read the training data ", spec->data().path(),
                                             ": ", std::strerror(errno))));
  }

  absl::StatusOr<LocalBinaries> binaries =
      FindLocalBinaries(ResolveUserPath(local_flags.bin_dir), env.argv0);
  if (!binaries.ok()) return ReportError(env, binaries.status());

  // 2. Where the logs go.
  const bool temp_logs = local_flags.log_dir.empty();
  const std::string log_dir = temp_logs ? MakeTempDir() : ResolveUserPath(local_flags.log_dir);
  if (log_dir.empty()) {
    return ReportError(env, absl::InternalError("cannot create a temporary log directory"));
  }
  if (!temp_logs) {
    std::error_code error;
    std::filesystem::create_directories(log_dir, error);
    if (error) {
      return ReportError(env, absl::InvalidArgumentError(absl::StrCat(
                                  "cannot create --log-dir ", log_dir, ": ", error.message())));
    }
  }
  // The processes log with glog: to stderr, i.e. to their log files.
  setenv("GLOG_logtostderr", "1", /*overwrite=*/0);

  // 3. The processes.
  LocalClusterOptions options;
  options.binaries = *binaries;
  options.num_servers = static_cast<int>(spec->num_servers());
  options.num_workers = static_cast<int>(spec->num_workers());
  options.log_dir = log_dir;
  options.interrupted = env.interrupted;
  options.worker_args = local_flags.worker_args;
  options.unix_sockets = local_flags.transport == "unix";
  LocalCluster cluster(options);

  bool succeeded = false;
  std::vector<std::string> curve_files;  // Kept when the rest of a temporary log folder goes.
  auto finish = [&](int code) {
    cluster.Stop();
    if (succeeded && temp_logs && !local_flags.keep_logs) {
      std::error_code ignored;
      if (curve_files.empty()) {
        std::filesystem::remove_all(log_dir, ignored);
      } else {
        for (const auto& entry : std::filesystem::directory_iterator(log_dir, ignored)) {
          if (std::find(curve_files.begin(), curve_files.end(), entry.path().string()) ==
              curve_files.end()) {
            std::filesystem::remove_all(entry.path(), ignored);
          }
        }
      }
    } else {
      *env.err << "psctl: logs of the local cluster are in " << log_dir << "\n";
    }
    return code;
  };

  *env.out << "starting a local cluster: 1 coordinator, " << options.num_servers << " server(s), "
           << options.num_workers << " worker(s); logs in " << log_dir << "\n";
  env.out->flush();
  absl::Status started = cluster.Start();
  if (!started.ok()) {
    if (env.interrupted()) {
      *env.err << "psctl: interrupted: stopping the local cluster\n";
      return finish(kExitInterrupted);
    }
    return finish(ReportError(
        env, absl::Status(started.code(), absl::StrCat("local cluster: ", started.message()))));
  }

  if (!cluster.status_page_url().empty()) {
    *env.out << "status page: " << cluster.status_page_url() << " (metrics: "
             << cluster.status_page_url() << "metrics)\n";
  }

  // 4. The job.
  CommandEnv job_env = env;
  job_env.coordinator = cluster.coordinator_address();
  CoordinatorClient client = MakeClient(job_env);
  absl::StatusOr<std::string> submitted = client.SubmitJob(*spec);
  if (!submitted.ok()) {
    absl::Status dead = cluster.CheckProcesses();
    return finish(ReportError(env, dead.ok() ? submitted.status() : dead));
  }
  const std::string job_id = *submitted;
  *env.out << "coordinator at " << cluster.coordinator_address() << "; submitted job " << job_id
           << " (" << spec->name() << ")\n";

  // 5. Watch it, and everything that can go wrong meanwhile.
  JobState state = JOB_STATE_UNSPECIFIED;
  const absl::Time submitted_at = absl::Now();
  absl::StatusOr<JobStatus> final_status = WatchWithProgress(
      env, client, job_id,
      [&] {
        if (env.interrupted()) return absl::CancelledError("interrupted");
        absl::Status alive = cluster.CheckProcesses();
        if (!alive.ok()) return alive;
        if (state != RUNNING && absl::Now() - submitted_at > local_flags.startup_timeout) {
          std::string counts;
          absl::StatusOr<std::vector<NodeInfo>> nodes = client.ListNodes();
          if (nodes.ok()) {
            int servers = 0, workers = 0;
            for (const NodeInfo& node : *nodes) {
              if (node.role() == SERVER) ++servers;
              if (node.role() == WORKER) ++workers;
            }
            counts = absl::StrCat("; registered: ", servers, "/", options.num_servers,
                                  " server(s), ", workers, "/", options.num_workers, " worker(s)");
          }
          return absl::DeadlineExceededError(
              absl::StrCat("job ", job_id, " did not start within ",
                           absl::FormatDuration(local_flags.startup_timeout), counts));
        }
        return absl::OkStatus();
      },
      [&](const JobStatus& status) { state = status.state(); });

  if (!final_status.ok()) {
    if (env.interrupted()) {
      *env.err << "psctl: interrupted: cancelling job " << job_id
               << " and stopping the local cluster\n";
      CommandEnv quick = job_env;
      quick.timeout = absl::Seconds(2);
      (void)MakeClient(quick).CancelJob(job_id);
      return finish(kExitInterrupted);
    }
    absl::Status dead = cluster.CheckProcesses();
    return finish(ReportError(
        env, dead.ok()
                 ? final_status.status()
                 : absl::Status(dead.code(), absl::StrCat("local cluster: ", dead.message()))));
  }
  succeeded = final_status->state() == SUCCEEDED;
  // The training curves, next to the logs.
  if (final_status->loss_history_size() > 0) {
    absl::StatusOr<CurveFiles> curves =
        WriteCurves(*final_status, log_dir, env.gnuplot.has_value() ? *env.gnuplot : FindGnuplot());
    if (curves.ok()) {
      curve_files.push_back(curves->csv);
      *env.out << "training curves: " << curves->csv;
      if (!curves->png.empty()) {
        curve_files.push_back(curves->png);
        *env.out << ", " << curves->png;
      }
      *env.out << "\n";
      if (!curves->note.empty()) *env.out << "(" << curves->note << ")\n";
    } else {
      *env.err << "psctl: training curves: " << curves.status().message() << "\n";
    }
  }
  if (!succeeded) {
    // A job that failed because one of its processes died: say which.
    absl::Status dead = cluster.CheckProcesses();
    if (!dead.ok()) *env.err << "psctl: local cluster: " << dead.message() << "\n";
  }
  return finish(ExitCodeForJob(*final_status));
}

}  // namespace psrv
