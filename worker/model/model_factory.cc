// Building a LanguageModel from a job's ModelSpec (model_factory.h).
#include "worker/model/model_factory.h"

#include "absl/strings/str_cat.h"
#include "common/model_layout.h"
#include "worker/model/gpt_model.h"
#include "worker/model/mlp_model.h"

namespace psrv {

GptConfig GptConfigFromSpec(const ModelSpec& spec, int vocab_size) {
  GptConfig config;
  config.layers = static_cast<int>(spec.layers());
  config.heads = static_cast<int>(spec.heads());
  config.width = static_cast<int>(spec.width());
  config.context = static_cast<int>(spec.context());
  config.vocab = vocab_size;
  config.dropout = spec.dropout();
  config.tie_embeddings = TiesEmbeddings(spec);
  return config;
}

absl::StatusOr<std::unique_ptr<LanguageModel>> CreateLanguageModel(const ModelSpec& spec,
                                                                   int vocab_size) {
  if (spec.kind() == "mlp") {
    absl::StatusOr<MlpModel> model = MlpModel::Create(spec, vocab_size);
    if (!model.ok()) return model.status();
    return std::unique_ptr<LanguageModel>(new MlpModel(std::move(*model)));
  }
  if (spec.kind() == "gpt") {
    return CreateGptModel(GptConfigFromSpec(spec, vocab_size));
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown model kind \"", spec.kind(), "\" (known: mlp, gpt)"));
}

}  // namespace psrv
