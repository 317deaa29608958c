// Building the worker's CPU language model from a job's ModelSpec (worker/cuda/device_model.h
// picks between it and the CUDA GPT).
#ifndef PSRV_WORKER_MODEL_MODEL_FACTORY_H_
#define PSRV_WORKER_MODEL_MODEL_FACTORY_H_

#include <memory>

#include "absl/status/statusor.h"
#include "proto/job.pb.h"
#include "worker/model/gpt_config.h"
#include "worker/model/language_model.h"

namespace psrv {

// Builds the model of spec.kind() ("mlp" or "gpt") over `vocab_size` tokens; INVALID_ARGUMENT for
// another kind or sizes out of range.
absl::StatusOr<std::unique_ptr<LanguageModel>> CreateLanguageModel(const ModelSpec& spec,
                                                                   int vocab_size);

// The GptConfig of a job's model (kind "gpt") over `vocab_size` tokens; not validated (the models'
// Create functions do).
GptConfig GptConfigFromSpec(const ModelSpec& spec, int vocab_size);

}  // namespace psrv

#endif  // PSRV_WORKER_MODEL_MODEL_FACTORY_H_
