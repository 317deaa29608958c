// psctl generate: GetJob -> tokenizer and model from the job's spec -> Pull the parameters from
// every shard -> sample on the CPU -> print.
#include "client/generate.h"

#include <cmath>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "client/coordinator_client.h"
#include "client/job_parameters.h"
#include "common/format.h"
#include "worker/model/language_model.h"
#include "worker/model/tokenizer.h"
#include "worker/model/model_factory.h"
#include "worker/model/sampling.h"

namespace psrv {
namespace {

absl::Status CheckFlags(const GenerateFlags& flags) {
  if (flags.length < 1 || flags.length > 100000) {
    return absl::InvalidArgumentError(
        absl::StrCat("--length must be in [1, 100000], got ", flags.length));
  }
  if (!(flags.temperature > 0 && flags.temperature <= 100)) {  // NaN fails too.
    return absl::InvalidArgumentError(
        absl::StrCat("--temperature must be in (0, 100], got ", flags.temperature));
  }
  if (flags.top_k < 0 || flags.top_k > 1000000) {
    return absl::InvalidArgumentError(
        absl::StrCat("--top-k must be in [0, 1000000] (0: all tokens), got ", flags.top_k));
  }
  return absl::OkStatus();
}

uint64_t RandomSeed() {
  std::random_device device;
  return (static_cast<uint64_t>(device()) << 32) | device();
}

}  // namespace

int GenerateCommand(const CommandEnv& env, const GenerateFlags& flags) {
  absl::Status valid = CheckFlags(flags);
  if (!valid.ok()) return ReportError(env, valid);

  // 1. The job: its model and where its parameters live.
  absl::StatusOr<JobStatus> job = GetJobWithParameters(env, flags.job_id);
  if (!job.ok()) return ReportError(env, job.status());
  const ModelSpec& model_spec = job->spec().model();

  // 2. The prompt, in the job's tokens.
  absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer = CreateTokenizer(model_spec);
  if (!tokenizer.ok()) {
    return ReportError(
        env, WithContext(absl::StrCat("the tokenizer of job ", flags.job_id), tokenizer.status()));
  }
  std::string prompt = flags.prompt;
  absl::StatusOr<std::vector<int32_t>> prompt_ids = (*tokenizer)->Encode(prompt);
  if (!prompt_ids.ok() && !flags.prompt_given) {
    prompt.clear();  // The default "\n" is not in this job's vocabulary: start from token 0.
    prompt_ids = std::vector<int32_t>{};
  }
  if (!prompt_ids.ok()) {
    return ReportError(
        env, absl::InvalidArgumentError(absl::StrCat(
                 "--prompt: ", prompt_ids.status().message(), " (job ", flags.job_id,
                 " has a ", model_spec.tokenizer(), " tokenizer of ", (*tokenizer)->vocab_size(),
                 " tokens)")));
  }

  // 3. The model.
  absl::StatusOr<std::unique_ptr<LanguageModel>> model =
      CreateLanguageModel(model_spec, (*tokenizer)->vocab_size());
  if (!model.ok()) {
    return ReportError(
        env, WithContext(absl::StrCat("the model of job ", flags.job_id), model.status()));
  }
  // 4. Its parameters, pulled from every shard.
  absl::StatusOr<std::vector<float>> pulled = PullJobParameters(env, *job);
  if (!pulled.ok()) return ReportError(env, pulled.status());
  std::vector<float>& params = *pulled;  // (num_parameters)
  if (params.size() != (*model)->num_parameters()) {
    return ReportError(env, absl::FailedPreconditionError(absl::StrCat(
                                "job ", flags.job_id, ": its shard map holds ", params.size(),
                                " parameters but its ", model_spec.kind(), " model has ",
                                (*model)->num_parameters())));
  }

  // 5. Sample.
  const uint64_t seed = flags.seed.has_value() ? *flags.seed : RandomSeed();
  const std::vector<int32_t> sampled =
      Sample(**model, params.data(), *prompt_ids, static_cast<int>(flags.length),
             static_cast<float>(flags.temperature), static_cast<int>(flags.top_k), seed);
  const std::string text = (*tokenizer)->Decode(sampled);

  if (flags.json) {
    nlohmann::ordered_json out = {
        {"job_id", job->job_id()},
        {"state", JobState_Name(job->state())},
        {"step", job->step()},
        {"prompt", prompt},
        {"text", text},
        {"length", sampled.size()},
        {"temperature", flags.temperature},
        {"top_k", flags.top_k},
        {"seed", seed},
    };
    *env.out << out.dump(2, ' ', false, nlohmann::ordered_json::error_handler_t::replace) << "\n";
    return kExitOk;
  }
  std::string all = prompt + text;
  if (env.tty) all = PrintableText(all);  // A byte model can emit anything.
  if (all.empty() || all.back() != '\n') all += '\n';
  *env.out << all;
  env.out->flush();
  return kExitOk;
}

}  // namespace psrv
