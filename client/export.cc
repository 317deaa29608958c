#include "client/export.h"

#include <google/protobuf/util/json_util.h>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "client/job_parameters.h"
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
  std::string model_json;
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  (void)google::protobuf::util::MessageToJsonString(job.spec().model(), &model_json, options);
  const std::map<std::string, std::string> metadata = {
      {"format", "psrv"},
      {"job_id", job.job_id()},
      {"name", job.spec().name()},
      {"step", absl::StrCat(job.step())},
      {"model", model_json},
  };
  const std::string path = flags.out.empty() ? absl::StrCat(flags.job_id, ".safetensors")
                                             : ResolveUserPath(flags.out);
  absl::Status written = WriteSafetensors(path, tensors, metadata);
  if (!written.ok()) return ReportError(env, written);
  if (flags.json) {
    *env.out << nlohmann::ordered_json{{"job_id", job.job_id()},
                                       {"path", path},
                                       {"tensors", tensors.size()},
                                       {"parameters", offset}}
                    .dump()
             << "\n";
  } else {
    *env.out << "wrote " << tensors.size() << " tensors (" << offset << " parameters) of job "
             << job.job_id() << " at step " << job.step() << " to " << path << "\n";
  }
  return 0;
}

}  // namespace psrv
