// JobSpec from JSON or YAML text, defaults, and validation with messages a person understands.
#ifndef PSRV_COMMON_JOB_SPEC_H_
#define PSRV_COMMON_JOB_SPEC_H_

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "proto/job.pb.h"

namespace psrv {

// Parses a JobSpec written as JSON (protobuf JSON mapping: field names in lowerCamelCase or
// snake_case, enums by name) or YAML with the same structure. Unknown fields are an error.
// INVALID_ARGUMENT with the parser's message (and line for YAML) on malformed input.
absl::StatusOr<JobSpec> ParseJobSpec(const std::string& text);

// Reads and parses a file; NOT_FOUND if it cannot be read.
absl::StatusOr<JobSpec> ReadJobSpecFile(const std::string& path);

// Fills unset fields with defaults: model gpt (4 layers, 4 heads, width 128, context 64) or mlp
// (context 8, embedding 24, hidden 256), byte tokenizer (bpe: 8192 pieces); validation fraction 0.1; steps 1000,
// batch 12, ADAMW lr 1e-3 (beta1 0.9, beta2 0.95, epsilon 1e-8) or SGD/MOMENTUM lr 0.1 (momentum
// 0.9), SYNC, seed 1, report_every 10, eval_batches 20, sample_length 200, FP32 wire dtype,
// 1 server, 1 worker, name "job".
void ApplyJobDefaults(JobSpec* spec);

// Pieces of a "bpe" tokenizer when model.vocab_size is unset.
inline constexpr int kDefaultBpeVocabSize = 8192;

// For tokenizer "char" with an empty vocabulary: reads data.path and sets the vocabulary to its
// distinct bytes. For tokenizer "bpe" with an empty vocabulary: TrainBpeVocabulary. NOT_FOUND if
// the file cannot be read. Anything else: no change.
absl::Status FillVocabulary(JobSpec* spec);

// Trains a BPE model of model.vocab_size pieces (ApplyJobDefaults sets it) on the training split
// of data.path (text; the first 1 - validation_fraction of its bytes) and stores the serialized
// SentencePiece model in model.vocabulary. NOT_FOUND if the file cannot be read here;
// INVALID_ARGUMENT if data.format is not text or the text cannot make that many pieces.
absl::Status TrainBpeVocabulary(JobSpec* spec);

// Checks every field of a (defaulted) spec. INVALID_ARGUMENT naming the field, the value and the
// allowed range, e.g. "training.batch_size must be in [1, 65536], got 0".
absl::Status ValidateJobSpec(const JobSpec& spec);

// Stages per pipeline group (1: no pipeline) and pipeline groups (the data-parallel ranks the
// parameter servers see) of a job; specs saved before parallelism existed read as 1 and
// num_workers.
inline uint32_t PipelineStages(const JobSpec& spec) {
  return spec.parallelism().pipeline() > 1 ? spec.parallelism().pipeline() : 1;
}
// Whether the servers keep the job's set of workers (ParameterServer.SetWorkers): SYNC steps wait
// for it; SSP's bound is measured against its slowest member. ASYNC has none.
inline bool HasWorkerSet(const JobSpec& spec) {
  return spec.training().consistency() == SYNC || spec.training().consistency() == SSP;
}
inline uint32_t DataGroups(const JobSpec& spec) {
  return PipelineStages(spec) > 1 ? spec.parallelism().data() : spec.num_workers();
}

// True for SUCCEEDED, FAILED and CANCELLED: the job will not change any more.
inline bool IsTerminal(JobState state) {
  return state == SUCCEEDED || state == FAILED || state == CANCELLED;
}

}  // namespace psrv

#endif  // PSRV_COMMON_JOB_SPEC_H_
