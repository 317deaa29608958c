// JobSpec parsing (JSON directly through protobuf's JSON mapping; YAML converted to that JSON by
// common/yaml_to_json.h under the guidance of the JobSpec descriptor, so errors can name the field
// and the YAML line), defaults and validation.
#include "common/job_spec.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/string_view.h"
#include "common/bpe.h"
#include "common/model_layout.h"
#include "common/names.h"
#include "common/status_macros.h"
#include "common/yaml_to_json.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/util/json_util.h"

namespace psrv {
namespace {

// protobuf's JSON parser reports "Unexpected token" and similar with the offending text; keep its
// message but trim it to one line.
std::string OneLine(absl::string_view s) {
  std::string out = absl::StrReplaceAll(s, {{"\n", " "}});
  return std::string(absl::StripAsciiWhitespace(out));
}

absl::StatusOr<JobSpec> JsonToSpec(const std::string& json) {
  JobSpec spec;
  google::protobuf::util::JsonParseOptions options;
  options.ignore_unknown_fields = false;
  const auto status = google::protobuf::util::JsonStringToMessage(json, &spec, options);
  if (!status.ok()) {
    return absl::InvalidArgumentError(std::string(status.message()));
  }
  return spec;
}

std::string Range(uint64_t lo, uint64_t hi) { return absl::StrCat("[", lo, ", ", hi, "]"); }

absl::Status CheckRange(const std::string& field, uint64_t value, uint64_t lo, uint64_t hi) {
  if (value < lo || value > hi) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, " must be in ", Range(lo, hi), ", got ", value));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<JobSpec> ParseJobSpec(const std::string& text) {
  const absl::string_view trimmed = absl::StripLeadingAsciiWhitespace(text);
  if (trimmed.empty()) return absl::InvalidArgumentError("the job spec is empty");
  if (trimmed[0] == '{') {
    // JSON: protobuf's own parser decides. Its messages carry no position, so on failure a syntax
    // error is reported by nlohmann-json (line and column), and a bad field or value by the YAML
    // walker (JSON is YAML), which names the field and the line.
    absl::StatusOr<JobSpec> spec = JsonToSpec(text);
    if (spec.ok()) return spec;
    try {
      [[maybe_unused]] nlohmann::json parsed = nlohmann::json::parse(text);
    } catch (const nlohmann::json::exception& e) {
      std::string what = e.what();
      const std::size_t prefix_end = what.find("] ");
      if (prefix_end != std::string::npos) what.erase(0, prefix_end + 2);
      return absl::InvalidArgumentError(absl::StrCat("invalid JSON job spec: ", what));
    }
    absl::StatusOr<std::string> yaml_check = YamlToJson(text, JobSpec::descriptor());
    if (!yaml_check.ok() && !absl::StartsWith(yaml_check.status().message(), "invalid YAML")) {
      return absl::InvalidArgumentError(
          absl::StrCat("invalid job spec: ", yaml_check.status().message()));
    }
    return absl::InvalidArgumentError(
        absl::StrCat("invalid JSON job spec: ", OneLine(spec.status().message())));
  }
  absl::StatusOr<std::string> json = YamlToJson(text, JobSpec::descriptor());
  if (!json.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("invalid job spec: ", json.status().message()));
  }
  absl::StatusOr<JobSpec> spec = JsonToSpec(*json);
  if (!spec.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("invalid job spec: ", OneLine(spec.status().message())));
  }
  return spec;
}

absl::StatusOr<JobSpec> ReadJobSpecFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::NotFoundError(
        absl::StrCat("cannot read job spec file ", path, ": ", std::strerror(errno)));
  }
  std::stringstream buffer;
  buffer << in.rdbuf();
  absl::StatusOr<JobSpec> spec = ParseJobSpec(buffer.str());
  if (!spec.ok()) {
    return absl::Status(spec.status().code(), absl::StrCat(path, ": ", spec.status().message()));
  }
  return spec;
}

void ApplyJobDefaults(JobSpec* spec) {
  if (spec->name().empty()) spec->set_name("job");
  ModelSpec* model = spec->mutable_model();
  if (model->kind().empty()) model->set_kind("gpt");
  if (model->tokenizer().empty()) model->set_tokenizer("byte");
  if (model->tokenizer() == "bpe" && model->vocab_size() == 0) {
    model->set_vocab_size(kDefaultBpeVocabSize);
  }
  if (model->kind() == "mlp") {
    if (model->context() == 0) model->set_context(8);
    if (model->embedding_dim() == 0) model->set_embedding_dim(24);
    if (model->hidden_dim() == 0) model->set_hidden_dim(256);
  } else {
    if (model->context() == 0) model->set_context(64);
    if (model->layers() == 0) model->set_layers(4);
    if (model->heads() == 0) model->set_heads(4);
    if (model->width() == 0) model->set_width(128);
  }
  DataSpec* data = spec->mutable_data();
  if (data->validation_fraction() == 0) data->set_validation_fraction(0.1f);
  TrainingSpec* training = spec->mutable_training();
  if (training->steps() == 0) training->set_steps(1000);
  if (training->batch_size() == 0) training->set_batch_size(12);
  OptimizerConfig* optimizer = training->mutable_optimizer();
  if (optimizer->kind() == OPTIMIZER_UNSPECIFIED) optimizer->set_kind(ADAMW);
  if (optimizer->learning_rate() == 0) {
    optimizer->set_learning_rate(optimizer->kind() == ADAMW ? 1e-3f : 0.1f);
  }
  if (optimizer->kind() == MOMENTUM && optimizer->momentum() == 0) optimizer->set_momentum(0.9f);
  if (optimizer->kind() == ADAMW) {
    if (optimizer->beta1() == 0) optimizer->set_beta1(0.9f);
    if (optimizer->beta2() == 0) optimizer->set_beta2(0.95f);
    if (optimizer->epsilon() == 0) optimizer->set_epsilon(1e-8f);
  }
  if (training->consistency() == CONSISTENCY_UNSPECIFIED) training->set_consistency(SYNC);
  if (training->seed() == 0) training->set_seed(1);
  if (training->report_every() == 0) training->set_report_every(10);
  if (training->sample_length() == 0) training->set_sample_length(200);
  // GPTs exchange bf16 (half the bytes; the servers keep fp32 master weights and optimizer state):
  // bench/README.md measured the same validation loss as FP32.
  if (training->wire_dtype() == DTYPE_UNSPECIFIED) {
    training->set_wire_dtype(spec->model().kind() == "gpt" ? BF16 : FP32);
  }
  if (training->eval_batches() == 0) training->set_eval_batches(20);
  if (training->grad_accumulation_steps() == 0) training->set_grad_accumulation_steps(1);
  if (!training->has_step_timeout_seconds()) training->set_step_timeout_seconds(600);
  if (spec->num_servers() == 0) spec->set_num_servers(1);
  if (spec->num_workers() == 0) spec->set_num_workers(1);
  if (spec->replicas() == 0) spec->set_replicas(spec->num_servers() >= 2 ? 2 : 1);
  // Pipelines only: without one, parallelism stays empty (data = num_workers, micro-batches =
  // training.grad_accumulation_steps).
  if (spec->parallelism().pipeline() > 1) {
    ParallelismSpec* parallelism = spec->mutable_parallelism();
    if (parallelism->data() == 0) {
      parallelism->set_data(std::max<uint32_t>(1, spec->num_workers() / parallelism->pipeline()));
    }
    if (parallelism->micro_batches() == 0) {
      parallelism->set_micro_batches(training->grad_accumulation_steps());
    }
    if (parallelism->schedule() == PIPELINE_SCHEDULE_UNSPECIFIED) {
      parallelism->set_schedule(ONE_F_ONE_B);
    }
    if (parallelism->on_stage_loss() == STAGE_LOSS_POLICY_UNSPECIFIED) {
      parallelism->set_on_stage_loss(REFORM_GROUP);
    }
  }
}

namespace {

// Tokenizer "bpe": model.vocab_size in [kMinBpeVocabSize, kMaxBpeVocabSize].
absl::Status CheckBpeVocabSize(uint32_t vocab_size) {
  if (vocab_size < kMinBpeVocabSize || vocab_size > kMaxBpeVocabSize) {
    return absl::InvalidArgumentError(
        absl::StrCat("model.vocab_size must be ", kMinBpeVocabSize, "..", kMaxBpeVocabSize,
                     " for tokenizer \"bpe\", got ", vocab_size));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status FillVocabulary(JobSpec* spec) {
  ModelSpec* model = spec->mutable_model();
  if (model->tokenizer() == "bpe" && model->vocabulary().empty()) return TrainBpeVocabulary(spec);
  if (model->tokenizer() != "char" || !model->vocabulary().empty()) return absl::OkStatus();
  std::ifstream in(spec->data().path(), std::ios::binary);
  if (!in) {
    return absl::NotFoundError(absl::StrCat(
        "model.tokenizer is \"char\" but model.vocabulary is empty and data.path ",
        spec->data().path(), " cannot be read here to build it: ", std::strerror(errno)));
  }
  bool seen[256] = {false};
  char buffer[1 << 16];
  while (in.read(buffer, sizeof(buffer)) || in.gcount() > 0) {
    for (std::streamsize i = 0; i < in.gcount(); ++i) seen[static_cast<unsigned char>(buffer[i])] = true;
  }
  std::string vocabulary;
  for (int b = 0; b < 256; ++b) {
    if (seen[b]) vocabulary.push_back(static_cast<char>(b));
  }
  model->set_vocabulary(vocabulary);
  return absl::OkStatus();
}

absl::Status TrainBpeVocabulary(JobSpec* spec) {
  ModelSpec* model = spec->mutable_model();
  const std::string& path = spec->data().path();
  std::error_code error;
  const uint64_t bytes = std::filesystem::file_size(path, error);
  if (error) {
    return absl::NotFoundError(absl::StrCat(
        "model.tokenizer is \"bpe\" but model.vocabulary is empty and data.path ", path,
        " cannot be read here to train it: ", error.message()));
  }
  if (!spec->data().format().empty() && spec->data().format() != "text") {
    return absl::InvalidArgumentError(
        "model.tokenizer \"bpe\" reads text: data.format must be \"text\"");
  }
  // The training split only: the validation text is not seen by the tokenizer either.
  const double fraction =
      spec->data().validation_fraction() > 0 ? spec->data().validation_fraction() : 0.1;
  const uint64_t train_bytes = static_cast<uint64_t>(static_cast<double>(bytes) * (1.0 - fraction));
  RETURN_IF_ERROR(CheckBpeVocabSize(model->vocab_size()));
  std::string serialized;
  const std::string failed =
      TrainBpe(path, train_bytes, static_cast<int>(model->vocab_size()), &serialized);
  if (!failed.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(failed, " (a smaller model.vocab_size fits less text)"));
  }
  model->set_vocabulary(std::move(serialized));
  return absl::OkStatus();
}

namespace {

// Tokenizer "bpe": a SentencePiece model of exactly model.vocab_size pieces.
absl::Status CheckBpeVocabulary(const ModelSpec& model) {
  RETURN_IF_ERROR(CheckBpeVocabSize(model.vocab_size()));
  if (model.vocabulary().empty()) {
    return absl::InvalidArgumentError(
        "model.vocabulary must hold the SentencePiece model for tokenizer \"bpe\" (psctl trains "
        "it on data.path when it can read the file)");
  }
  std::string error;
  const std::unique_ptr<BpeModel> bpe = BpeModel::Load(model.vocabulary(), &error);
  if (bpe == nullptr) return absl::InvalidArgumentError(absl::StrCat("model.vocabulary: ", error));
  if (bpe->vocab_size() != static_cast<int>(model.vocab_size())) {
    return absl::InvalidArgumentError(absl::StrCat(
        "model.vocabulary is a BPE model of ", bpe->vocab_size(), " pieces but model.vocab_size is ",
        model.vocab_size()));
  }
  return absl::OkStatus();
}

// The model's kind and sizes, and its tokenizer.
absl::Status CheckModel(const ModelSpec& model) {
  if (model.kind() == "mlp") {
    RETURN_IF_ERROR(CheckRange("model.context", model.context(), 1, 64));
    RETURN_IF_ERROR(CheckRange("model.embedding_dim", model.embedding_dim(), 1, 1024));
    RETURN_IF_ERROR(CheckRange("model.hidden_dim", model.hidden_dim(), 1, 16384));
  } else if (model.kind() == "gpt") {
    RETURN_IF_ERROR(CheckRange("model.context", model.context(), 1, 4096));
    RETURN_IF_ERROR(CheckRange("model.layers", model.layers(), 1, 96));
    RETURN_IF_ERROR(CheckRange("model.width", model.width(), 1, 16384));
    RETURN_IF_ERROR(CheckRange("model.heads", model.heads(), 1, model.width()));
    if (model.width() % model.heads() != 0) {
      return absl::InvalidArgumentError(absl::StrCat("model.heads (", model.heads(),
                                                     ") must divide model.width (", model.width(),
                                                     ")"));
    }
    if (!std::isfinite(model.dropout()) || model.dropout() < 0 || model.dropout() >= 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("model.dropout must be in [0, 1), got ", model.dropout()));
    }
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("model.kind must be \"gpt\" or \"mlp\", got \"", model.kind(), "\""));
  }
  if (model.tokenizer() == "char") {
    if (model.vocabulary().empty()) {
      return absl::InvalidArgumentError(
          "model.vocabulary must list the corpus's characters for tokenizer \"char\" (psctl fills "
          "it from data.path when it can read the file; or use tokenizer \"byte\")");
    }
    for (size_t i = 1; i < model.vocabulary().size(); ++i) {
      if (static_cast<unsigned char>(model.vocabulary()[i - 1]) >=
          static_cast<unsigned char>(model.vocabulary()[i])) {
        return absl::InvalidArgumentError(
            "model.vocabulary must hold distinct bytes in ascending order");
      }
    }
  } else if (model.tokenizer() == "ids") {
    if (model.vocab_size() < 1 || model.vocab_size() > 65536) {
      return absl::InvalidArgumentError(absl::StrCat(
          "model.vocab_size must be 1..65536 for tokenizer \"ids\", got ", model.vocab_size()));
    }
  } else if (model.tokenizer() == "bpe") {
    RETURN_IF_ERROR(CheckBpeVocabulary(model));
  } else if (model.tokenizer() != "byte") {
    return absl::InvalidArgumentError(
        absl::StrCat("model.tokenizer must be \"byte\", \"char\", \"bpe\" or \"ids\", got \"",
                     model.tokenizer(), "\""));
  }
  if (model.has_tie_embeddings() && model.kind() != "gpt") {
    return absl::InvalidArgumentError(
        "model.tie_embeddings is for gpt models (an mlp's embedding and output are apart)");
  }
  if (model.tokenizer() != "ids" && model.tokenizer() != "bpe" && model.vocab_size() != 0) {
    return absl::InvalidArgumentError("model.vocab_size is for tokenizers \"bpe\" and \"ids\"");
  }
  return absl::OkStatus();
}

absl::Status CheckOptimizer(const OptimizerConfig& optimizer) {
  if (optimizer.kind() != SGD && optimizer.kind() != MOMENTUM && optimizer.kind() != ADAMW) {
    return absl::InvalidArgumentError(
        absl::StrCat("training.optimizer.kind must be SGD, MOMENTUM or ADAMW, got ",
                     OptimizerKind_Name(optimizer.kind())));
  }
  const float lr = optimizer.learning_rate();
  if (!std::isfinite(lr) || lr <= 0 || lr > 10) {
    return absl::InvalidArgumentError(absl::StrCat(
        "training.optimizer.learning_rate must be a finite number in (0, 10], got ", lr));
  }
  const float floor = optimizer.min_learning_rate();
  if (!std::isfinite(floor) || floor < 0 || floor > lr) {
    return absl::InvalidArgumentError(
        absl::StrCat("training.optimizer.min_learning_rate must be in [0, learning_rate = ", lr,
                     "], got ", floor));
  }
  auto check_unit = [](const char* field, float value) -> absl::Status {
    if (!std::isfinite(value) || value < 0 || value >= 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("training.optimizer.", field, " must be in [0, 1), got ", value));
    }
    return absl::OkStatus();
  };
  RETURN_IF_ERROR(check_unit("momentum", optimizer.momentum()));
  RETURN_IF_ERROR(check_unit("beta1", optimizer.beta1()));
  RETURN_IF_ERROR(check_unit("beta2", optimizer.beta2()));
  if (optimizer.kind() == ADAMW && (!std::isfinite(optimizer.epsilon()) || optimizer.epsilon() <= 0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("training.optimizer.epsilon must be > 0, got ", optimizer.epsilon()));
  }
  if (!std::isfinite(optimizer.weight_decay()) || optimizer.weight_decay() < 0 ||
      optimizer.weight_decay() > 10) {
    return absl::InvalidArgumentError(absl::StrCat(
        "training.optimizer.weight_decay must be in [0, 10], got ", optimizer.weight_decay()));
  }
  return absl::OkStatus();
}

// The training loop's settings (and the validation split of `data`).
absl::Status CheckTraining(const TrainingSpec& training, const DataSpec& data) {
  RETURN_IF_ERROR(CheckRange("training.steps", training.steps(), 1, 1000000000));
  RETURN_IF_ERROR(CheckRange("training.batch_size", training.batch_size(), 1, 65536));
  RETURN_IF_ERROR(CheckOptimizer(training.optimizer()));
  if (!std::isfinite(training.grad_clip()) || training.grad_clip() < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "training.grad_clip must be >= 0 (0: no clipping), got ", training.grad_clip()));
  }
  const float validation = data.validation_fraction();
  if (!std::isfinite(validation) || validation < 0 || validation > 0.5f) {
    return absl::InvalidArgumentError(
        absl::StrCat("data.validation_fraction must be in [0, 0.5], got ", validation));
  }
  RETURN_IF_ERROR(CheckRange("training.eval_batches", training.eval_batches(), 1, 10000));
  RETURN_IF_ERROR(CheckRange("training.grad_accumulation_steps",
                             training.grad_accumulation_steps(), 1, 4096));

  if (training.consistency() != SYNC && training.consistency() != ASYNC &&
      training.consistency() != SSP) {
    return absl::InvalidArgumentError(
        absl::StrCat("training.consistency must be SYNC, ASYNC or SSP, got ",
                     ConsistencyMode_Name(training.consistency())));
  }
  if (training.consistency() != SSP && training.staleness() != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "training.staleness is for training.consistency SSP (got ", training.staleness(),
        " with ", ConsistencyMode_Name(training.consistency()), ")"));
  }
  RETURN_IF_ERROR(CheckRange("training.staleness", training.staleness(), 0, 1000000));
  if (training.report_every() < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("training.report_every must be at least 1, got ", training.report_every()));
  }
  RETURN_IF_ERROR(CheckRange("training.sample_length", training.sample_length(), 0, 100000));
  if (training.wire_dtype() == FP16) {
    return absl::InvalidArgumentError(
        "training.wire_dtype FP16 is not supported yet (use FP32 or BF16)");
  }
  if (training.wire_dtype() != FP32 && training.wire_dtype() != BF16) {
    return absl::InvalidArgumentError(absl::StrCat("training.wire_dtype must be FP32 or BF16, got ",
                                                   DType_Name(training.wire_dtype())));
  }
  return absl::OkStatus();
}

absl::Status CheckParallelism(const JobSpec& spec);

// Servers, workers and replicas.
absl::Status CheckCluster(const JobSpec& spec) {
  RETURN_IF_ERROR(CheckRange("num_servers", spec.num_servers(), 1, 64));
  RETURN_IF_ERROR(CheckRange("num_workers", spec.num_workers(), 1, 64));
  RETURN_IF_ERROR(CheckRange("replicas", spec.replicas(), 1, 2));
  if (spec.replicas() > spec.num_servers()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "replicas (", spec.replicas(), ") needs as many servers; num_servers is ", spec.num_servers()));
  }
  const uint32_t aggregate_first = spec.training().aggregate_first();
  if (aggregate_first != 0) {
    if (spec.training().consistency() != SYNC) {
      return absl::InvalidArgumentError(absl::StrCat(
          "training.aggregate_first (backup workers) is for training.consistency SYNC (got ",
          ConsistencyMode_Name(spec.training().consistency()), ")"));
    }
    if (aggregate_first > spec.num_workers()) {
      return absl::InvalidArgumentError(
          absl::StrCat("training.aggregate_first (", aggregate_first,
                       ") must be at most num_workers (", spec.num_workers(), ")"));
    }
    if (spec.parallelism().pipeline() > 1) {
      return absl::InvalidArgumentError(
          "training.aggregate_first (backup workers) is not for pipeline jobs");
    }
  }
  const CompressionSpec& compression = spec.training().compression();
  if (compression.kind() != COMPRESSION_NONE && compression.kind() != TOP_K) {
    return absl::InvalidArgumentError(
        absl::StrCat("training.compression.kind must be COMPRESSION_NONE or TOP_K, got ",
                     CompressionKind_Name(compression.kind())));
  }
  const float fraction = compression.fraction();
  if (compression.kind() == TOP_K && !(fraction > 0 && fraction <= 1)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "training.compression.fraction must be in (0, 1] for TOP_K, got ", fraction));
  }
  if (compression.kind() == COMPRESSION_NONE && fraction != 0) {
    return absl::InvalidArgumentError(
        "training.compression.fraction is for training.compression.kind TOP_K");
  }
  if (compression.kind() != COMPRESSION_NONE && spec.parallelism().pipeline() > 1) {
    return absl::InvalidArgumentError("training.compression is not for pipeline jobs yet");
  }
  return CheckParallelism(spec);
}

// Data x pipeline parallelism.
absl::Status CheckParallelism(const JobSpec& spec) {
  const ParallelismSpec& p = spec.parallelism();
  RETURN_IF_ERROR(CheckRange("parallelism.pipeline", p.pipeline(), 0, 64));
  if (p.pipeline() <= 1) {
    if (p.data() != 0 && p.data() != spec.num_workers()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "parallelism.data (", p.data(), ") must equal num_workers (", spec.num_workers(),
          ") without a pipeline (or be left out)"));
    }
    if (p.micro_batches() != 0 && p.micro_batches() != spec.training().grad_accumulation_steps()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "parallelism.micro_batches (", p.micro_batches(),
          ") is for pipelines; without one, use training.grad_accumulation_steps"));
    }
    return absl::OkStatus();
  }
  RETURN_IF_ERROR(CheckRange("parallelism.data", p.data(), 1, 64));
  RETURN_IF_ERROR(CheckRange("parallelism.micro_batches", p.micro_batches(), 1, 4096));
  if (p.data() * p.pipeline() != spec.num_workers()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "num_workers (", spec.num_workers(), ") must be parallelism.data x parallelism.pipeline (",
        p.data(), " x ", p.pipeline(), " = ", p.data() * p.pipeline(), ")"));
  }
  if (p.schedule() != GPIPE && p.schedule() != ONE_F_ONE_B) {
    return absl::InvalidArgumentError(absl::StrCat(
        "parallelism.schedule must be GPIPE or ONE_F_ONE_B, got ", p.schedule()));
  }
  if (p.activation_dtype() != DTYPE_UNSPECIFIED && p.activation_dtype() != FP32 &&
      p.activation_dtype() != BF16) {
    return absl::InvalidArgumentError(absl::StrCat(
        "parallelism.activation_dtype must be FP32 or BF16, got ", DType_Name(p.activation_dtype())));
  }
  if (p.on_stage_loss() != STAGE_LOSS_POLICY_UNSPECIFIED && p.on_stage_loss() != REFORM_GROUP &&
      p.on_stage_loss() != RESTART_FROM_CHECKPOINT) {
    return absl::InvalidArgumentError(absl::StrCat(
        "parallelism.on_stage_loss must be REFORM_GROUP or RESTART_FROM_CHECKPOINT, got ",
        p.on_stage_loss()));
  }
  if (spec.model().kind() != "gpt") {
    return absl::InvalidArgumentError(absl::StrCat(
        "parallelism.pipeline > 1 needs a gpt model (its layers are what the stages split); "
        "model.kind is \"", spec.model().kind(), "\""));
  }
  if (p.pipeline() > spec.model().layers()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "parallelism.pipeline (", p.pipeline(), ") cannot exceed model.layers (",
        spec.model().layers(), "): each stage holds at least one layer"));
  }
  if (spec.training().consistency() != SYNC) {
    return absl::InvalidArgumentError(
        "parallelism.pipeline > 1 needs training.consistency SYNC (a group's stages step "
        "together)");
  }
  if (!TiesEmbeddings(spec.model())) {
    return absl::InvalidArgumentError(
        "parallelism.pipeline > 1 needs model.tie_embeddings (untied embeddings are not split "
        "over stages yet)");
  }
  const uint32_t accumulation = spec.training().grad_accumulation_steps();
  if (accumulation != 1 && accumulation != p.micro_batches()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "with a pipeline, the micro-batches are the gradient accumulation: set "
        "parallelism.micro_batches (", p.micro_batches(), ") or leave "
        "training.grad_accumulation_steps at 1 (it is ", accumulation, ")"));
  }
  return absl::OkStatus();
}

// The names that end up in file paths on the servers, and where checkpoints go.
absl::Status CheckNamesAndPaths(const JobSpec& spec) {
  ASSIGN_OR_RETURN(std::vector<TableSpec> tables, ModelTables(spec.model(), spec.training().seed()));
  for (const TableSpec& table : tables) RETURN_IF_ERROR(CheckName("table name", table.name()));
  const std::string& directory = spec.checkpoint().directory();
  if (!directory.empty() && directory.front() != '/') {
    return absl::InvalidArgumentError(absl::StrCat(
        "checkpoint.directory must be an absolute path (the servers' working directories differ), "
        "got \"", directory, "\""));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ValidateJobSpec(const JobSpec& spec) {
  RETURN_IF_ERROR(CheckName("name", spec.name()));
  RETURN_IF_ERROR(CheckModel(spec.model()));
  RETURN_IF_ERROR(CheckNamesAndPaths(spec));
  if (spec.data().path().empty()) {
    return absl::InvalidArgumentError("data.path must name the training text file");
  }
  const std::string& format = spec.data().format();
  const bool token_format = format == "nanogpt_bin" || format == "llmc_bin";
  if (!format.empty() && format != "text" && !token_format) {
    return absl::InvalidArgumentError(absl::StrCat(
        "data.format must be \"text\", \"nanogpt_bin\" or \"llmc_bin\", got \"", format, "\""));
  }
  if (token_format != (spec.model().tokenizer() == "ids")) {
    return absl::InvalidArgumentError(absl::StrCat(
        "data.format \"", format.empty() ? "text" : format, "\" needs model.tokenizer ",
        token_format ? "\"ids\" (the file holds token ids)" : "\"byte\" or \"char\"",
        ", got \"", spec.model().tokenizer(), "\""));
  }
  if (!token_format && !spec.data().validation_path().empty()) {
    return absl::InvalidArgumentError(
        "data.validation_path is for token formats (nanogpt_bin, llmc_bin)");
  }
  RETURN_IF_ERROR(CheckTraining(spec.training(), spec.data()));
  return CheckCluster(spec);
}

}  // namespace psrv
