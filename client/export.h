// `psctl export`: a job's current parameters written as a safetensors file, one tensor per table
// with its name and shape (readable by Python's `safetensors` library), and a BPE job's tokenizer
// beside it as a SentencePiece .model file (readable by Python's `sentencepiece`).
#ifndef PSRV_CLIENT_EXPORT_H_
#define PSRV_CLIENT_EXPORT_H_

#include <string>

#include "absl/status/status.h"
#include "client/command_env.h"

namespace psrv {

struct ExportFlags {
  std::string job_id;
  std::string format = "safetensors";  // The only format today.
  std::string out;                      // Output path; default <job_id>.safetensors.
  // Print {"job_id", "path", "tensors", "parameters"} (and "tokenizer_model" for BPE jobs).
  bool json = false;
};

// Pulls the job's parameters (client/job_parameters.h) and writes them with metadata (job id,
// name, step, the JSON of the model spec). A job with tokenizer "bpe" also gets its SentencePiece
// model written to TokenizerPathBeside(path), named in the metadata as "tokenizer_model" and left
// out of the model spec's JSON. Errors: NOT_FOUND / FAILED_PRECONDITION as PullJobParameters
// (exit 1); an unknown --format (exit 2); a write failure (exit 1).
int ExportCommand(const CommandEnv& env, const ExportFlags& flags);

// "out/m.safetensors" -> "out/m.tokenizer.model" (any other name gets ".tokenizer.model" added).
std::string TokenizerPathBeside(const std::string& safetensors_path);


}  // namespace psrv

#endif  // PSRV_CLIENT_EXPORT_H_
