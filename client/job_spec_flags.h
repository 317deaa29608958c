// The job spec psctl submits (`job submit`, `local`): a spec file plus flag overrides, with the
// defaults filled in and checked before anything is sent.
#ifndef PSRV_CLIENT_JOB_SPEC_FLAGS_H_
#define PSRV_CLIENT_JOB_SPEC_FLAGS_H_

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "proto/job.pb.h"

namespace psrv {

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
  std::optional<std::string> mode;       // "sync", "async" or "ssp", any case.
  std::optional<int64_t> staleness;      // SSP's bound (training.staleness).
  std::optional<int64_t> aggregate_first;  // Backup workers (training.aggregate_first).
  std::optional<double> top_k;             // TOP_K compression's fraction.
  std::optional<int64_t> servers;
  std::optional<int64_t> workers;
  std::optional<uint64_t> seed;
  // Pipeline parallelism (parallelism.*).
  std::optional<int64_t> pipeline;
  std::optional<int64_t> micro_batches;
  std::optional<std::string> schedule;  // "gpipe" or "1f1b", any case.
  // The model.
  std::optional<std::string> model;  // "gpt" or "mlp", any case.
  std::optional<int64_t> context;
  std::optional<int64_t> embedding_dim;  // mlp only.
  std::optional<int64_t> hidden_dim;     // mlp only.
  std::optional<int64_t> layers;         // gpt only.
  std::optional<int64_t> heads;          // gpt only.
  std::optional<int64_t> width;          // gpt only.
  std::optional<double> dropout;         // gpt only.
  std::optional<std::string> tokenizer;  // "byte", "char" or "bpe", any case.
  std::optional<uint32_t> vocab_size;
  std::optional<bool> tie_embeddings;
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

// The two halves of BuildJobSpec, for callers that look at the file before choosing overrides.
// The spec file of `flags`, parsed but without defaults; an empty spec if there is none.
absl::StatusOr<JobSpec> LoadJobSpecFile(const JobSpecFlags& flags);
// Applies the flag overrides to `spec`, then the defaults, fills the vocabulary, then validates.
absl::StatusOr<JobSpec> ApplyJobSpecFlags(JobSpec spec, const JobSpecFlags& flags);

}  // namespace psrv

#endif  // PSRV_CLIENT_JOB_SPEC_FLAGS_H_
