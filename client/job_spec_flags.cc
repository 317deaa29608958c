// psctl's job spec: a spec file, flag overrides, defaults and checks (see job_spec_flags.h).
#include "client/job_spec_flags.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>
#include <functional>
#include <iostream>
#include <iterator>
#include <limits>
#include <sstream>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/command_env.h"
#include "common/bpe.h"
#include "common/job_spec.h"
#include "common/status_macros.h"

namespace psrv {
namespace {

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

// For a "char" tokenizer without a vocabulary: the distinct bytes of the data file; for a "bpe"
// one, a BPE model trained on it. The file is read where psctl runs (the path as the user meant
// it, see ResolveUserPath).
absl::Status FillVocabularyHere(JobSpec* spec) {
  if (spec->data().path().empty())
    return absl::OkStatus();  // ValidateJobSpec says what is missing.
  JobSpec here = *spec;
  here.mutable_data()->set_path(ResolveUserPath(spec->data().path()));
  const bool trains_bpe = spec->model().tokenizer() == "bpe" &&
                          spec->model().vocabulary().empty() &&
                          spec->model().vocab_size() >= kMinBpeVocabSize &&
                          spec->model().vocab_size() <= kMaxBpeVocabSize;
  const absl::Time start = absl::Now();
  if (trains_bpe) {  // Training takes a while on big files: say what is happening.
    std::cerr << "psctl: training a " << spec->model().vocab_size() << "-piece BPE tokenizer on "
              << here.data().path() << " ..." << std::flush;
  }
  absl::Status filled = FillVocabulary(&here);
  if (trains_bpe) {
    std::cerr << (filled.ok() ? " done in " : " failed after ")
              << absl::FormatDuration(absl::Trunc(absl::Now() - start, absl::Milliseconds(10)))
              << "\n";
  }
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

absl::Status ApplyModelFlags(const JobSpecFlags& flags, ModelSpec* model) {
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
                     Choice("--tokenizer", *flags.tokenizer, {"byte", "char", "bpe"}));
    if (tokenizer != model->tokenizer()) {  // The vocabulary and its size belong to the other one.
      model->clear_vocabulary();
      model->clear_vocab_size();
    }
    model->set_tokenizer(tokenizer);
  }
  if (flags.tie_embeddings) model->set_tie_embeddings(*flags.tie_embeddings);
  if (flags.vocab_size) {
    RETURN_IF_ERROR(FlagRange("--vocab-size", *flags.vocab_size, 1, 65536));
    // A BPE model trained for another size is trained again.
    if (model->tokenizer() == "bpe" && *flags.vocab_size != model->vocab_size()) {
      model->clear_vocabulary();
    }
    model->set_vocab_size(*flags.vocab_size);
  }
  return absl::OkStatus();
}

absl::Status ApplyDataAndTrainingFlags(const JobSpecFlags& flags, JobSpec* spec) {
  TrainingSpec* training = spec->mutable_training();
  RETURN_IF_ERROR(SetFloat("--validation-fraction", flags.validation_fraction,
                           {0, 0.5, /*lo_open=*/true},
                           [&](float v) { spec->mutable_data()->set_validation_fraction(v); }));
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
  return absl::OkStatus();
}

// The optimizer and its learning-rate schedule.
absl::Status ApplyOptimizerFlags(const JobSpecFlags& flags, OptimizerConfig* optimizer) {
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
  return absl::OkStatus();
}

// The consistency mode, the cluster's size and the seed.
absl::Status ApplyClusterFlags(const JobSpecFlags& flags, JobSpec* spec) {
  TrainingSpec* training = spec->mutable_training();
  if (flags.mode) {
    ASSIGN_OR_RETURN(const std::string mode,
                     Choice("--mode", *flags.mode, {"sync", "async", "ssp"}));
    training->set_consistency(mode == "sync" ? SYNC : mode == "async" ? ASYNC : SSP);
  }
  RETURN_IF_ERROR(SetUint32("--staleness", flags.staleness, 0, 1000000,
                            [&](uint32_t v) { training->set_staleness(v); }));
  RETURN_IF_ERROR(SetUint32("--aggregate-first", flags.aggregate_first, 0, 64,
                            [&](uint32_t v) { training->set_aggregate_first(v); }));
  if (flags.top_k) {
    if (!(*flags.top_k > 0 && *flags.top_k <= 1)) {
      return absl::InvalidArgumentError(
          absl::StrCat("--top-k must be a fraction in (0, 1], got ", *flags.top_k));
    }
    training->mutable_compression()->set_kind(TOP_K);
    training->mutable_compression()->set_fraction(static_cast<float>(*flags.top_k));
  }
  RETURN_IF_ERROR(SetUint32("--servers", flags.servers, 1, 64,
                            [&](uint32_t v) { spec->set_num_servers(v); }));
  RETURN_IF_ERROR(SetUint32("--workers", flags.workers, 1, 64,
                            [&](uint32_t v) { spec->set_num_workers(v); }));
  if (flags.seed) training->set_seed(*flags.seed);
  ParallelismSpec* parallelism = spec->mutable_parallelism();
  RETURN_IF_ERROR(SetUint32("--pipeline", flags.pipeline, 1, 64,
                            [&](uint32_t v) { parallelism->set_pipeline(v); }));
  RETURN_IF_ERROR(SetUint32("--micro-batches", flags.micro_batches, 1, 4096,
                            [&](uint32_t v) { parallelism->set_micro_batches(v); }));
  if (flags.schedule) {
    ASSIGN_OR_RETURN(const std::string schedule,
                     Choice("--schedule", *flags.schedule, {"gpipe", "1f1b"}));
    parallelism->set_schedule(schedule == "gpipe" ? GPIPE : ONE_F_ONE_B);
  }
  if (flags.pipeline || flags.workers) parallelism->clear_data();  // num_workers / pipeline.
  if (!spec->has_parallelism() || spec->parallelism().ByteSizeLong() == 0) {
    spec->clear_parallelism();
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<JobSpec> LoadJobSpecFile(const JobSpecFlags& flags) {
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

absl::StatusOr<JobSpec> ApplyJobSpecFlags(JobSpec spec, const JobSpecFlags& flags) {
  if (flags.name) spec.set_name(*flags.name);
  if (flags.data) spec.mutable_data()->set_path(*flags.data);
  if (flags.init_from) spec.set_init_from(ResolveUserPath(*flags.init_from));
  RETURN_IF_ERROR(ApplyModelFlags(flags, spec.mutable_model()));
  RETURN_IF_ERROR(ApplyDataAndTrainingFlags(flags, &spec));
  RETURN_IF_ERROR(ApplyOptimizerFlags(flags, spec.mutable_training()->mutable_optimizer()));
  RETURN_IF_ERROR(ApplyClusterFlags(flags, &spec));

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

absl::StatusOr<JobSpec> BuildJobSpec(const JobSpecFlags& flags) {
  absl::StatusOr<JobSpec> spec = LoadJobSpecFile(flags);
  if (!spec.ok()) return spec.status();
  return ApplyJobSpecFlags(*std::move(spec), flags);
}

}  // namespace psrv
