#include "client/export.h"

#include <google/protobuf/util/json_util.h>

#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "client/job_parameters.h"
#include "common/files.h"
#include "common/model_layout.h"
#include "common/safetensors.h"

namespace psrv {

int ExportCommand(const CommandEnv& env, const ExportFlags& flags) {
  if (flags.format != "safetensors") {
    return ReportError(env, absl::InvalidArgumentError(absl::StrCat(
                                "--format must be safetensors, got \"", flags.format, "\"")));
  }
  absl::StatusOr<JobStatus> found = GetJobWithParameters(env, flags.job_id);
  if (!found.ok()) return ReportError(env, found.status());
  const JobStatus& job = *found;
  absl::StatusOr<std::vector<float>> pulled = PullJobParameters(env, job);
  if (!pulled.ok()) return ReportError(env, pulled.status());

  std::vector<NamedTensor> tensors;
  uint64_t offset = 0;
  for (const TableSpec& table : job.shard_map().tables()) {
    const uint64_t n = TableElements(table);
    NamedTensor t;
    t.name = table.name();
    t.shape.assign(table.shape().begin(), table.shape().end());
    t.values.assign(pulled->begin() + offset, pulled->begin() + offset + n);
    offset += n;
    tensors.push_back(std::move(t));
  }
  const std::string path = flags.out.empty() ? absl::StrCat(flags.job_id, ".safetensors")
                                             : ResolveUserPath(flags.out);
  // A BPE model goes into a file of its own beside the tensors, not into the metadata.
  ModelSpec model = job.spec().model();
  std::string tokenizer_path;
  if (model.tokenizer() == "bpe") {
    tokenizer_path = TokenizerPathBeside(path);
    absl::Status written = WriteFileAtomically(tokenizer_path, model.vocabulary());
    if (!written.ok()) return ReportError(env, written);
    model.clear_vocabulary();
  }
  std::string model_json;
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  (void)google::protobuf::util::MessageToJsonString(model, &model_json, options);
  std::map<std::string, std::string> metadata = {
      {"format", "psrv"},
      {"job_id", job.job_id()},
      {"name", job.spec().name()},
      {"step", absl::StrCat(job.step())},
      {"model", model_json},
  };
  if (!tokenizer_path.empty()) {
    metadata["tokenizer_model"] = std::filesystem::path(tokenizer_path).filename().string();
  }
  absl::Status written = WriteSafetensors(path, tensors, metadata);
  if (!written.ok()) return ReportError(env, written);
  if (flags.json) {
    nlohmann::ordered_json json{{"job_id", job.job_id()},
                                {"path", path},
                                {"tensors", tensors.size()},
                                {"parameters", offset}};
    if (!tokenizer_path.empty()) json["tokenizer_model"] = tokenizer_path;
    *env.out << json.dump() << "\n";
  } else {
    *env.out << "wrote " << tensors.size() << " tensors (" << offset << " parameters) of job "
             << job.job_id() << " at step " << job.step() << " to " << path << "\n";
    if (!tokenizer_path.empty()) {
      *env.out << "wrote its BPE tokenizer (SentencePiece model, " << model.vocab_size()
               << " pieces) to " << tokenizer_path << "\n";
    }
  }
  return 0;
}

std::string TokenizerPathBeside(const std::string& safetensors_path) {
  absl::string_view stem = safetensors_path;
  absl::ConsumeSuffix(&stem, ".safetensors");
  return absl::StrCat(stem, ".tokenizer.model");
}

}  // namespace psrv
