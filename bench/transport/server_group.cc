#include "bench/transport/server_group.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <utility>

#include <grpcpp/client_context.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/channel.h"
#include "common/grpc_status.h"
#include "common/local_ca.h"
#include "common/status_macros.h"
#include "tools/cpp/runfiles/runfiles.h"

namespace psrv {
namespace transport {
namespace {

constexpr char kTableName[] = "bench";

// The last `chars` characters of the file at `path` ("" if it cannot be read).
std::string LastCharsOfFile(const std::string& path, size_t chars) {
  std::ifstream in(path);
  std::stringstream buffer;
  buffer << in.rdbuf();
  const std::string text = buffer.str();
  return text.size() <= chars ? text : text.substr(text.size() - chars);
}

}  // namespace

absl::StatusOr<std::string> FindBinary(const std::string& flag_value, const std::string& package,
                                       const std::string& name, const std::string& argv0) {
  std::vector<std::string> candidates;
  if (!flag_value.empty()) {
    candidates.push_back(flag_value);
  } else {
    std::string error;
    std::unique_ptr<bazel::tools::cpp::runfiles::Runfiles> runfiles(
        bazel::tools::cpp::runfiles::Runfiles::Create(argv0, &error));
    if (runfiles != nullptr) {
      const std::string path = runfiles->Rlocation(absl::StrCat("psrv/", package, "/", name));
      if (!path.empty()) candidates.push_back(path);
    }
    std::error_code ec;
    const std::filesystem::path self = std::filesystem::read_symlink("/proc/self/exe", ec);
    if (!ec) {
      const std::filesystem::path beside = self.parent_path() / ".." / package / name;
      candidates.push_back(beside.lexically_normal().string());
    }
  }
  for (const std::string& path : candidates) {
    if (access(path.c_str(), X_OK) == 0) return path;
  }
  return absl::NotFoundError(absl::StrCat("cannot find ", name, " (looked at: ",
                                          absl::StrJoin(candidates, ", "), "); build //", package,
                                          ":", name, " or pass its path by flag"));
}

absl::StatusOr<std::unique_ptr<ServerGroup>> ServerGroup::Start(
    const ServerGroupOptions& options) {
  std::unique_ptr<ServerGroup> group(new ServerGroup());
  group->kind_ = options.kind;
  std::shared_ptr<grpc::ChannelCredentials> coordinator_credentials;  // Null: plaintext.
  if (!options.tls_dir.empty()) {
    ASSIGN_OR_RETURN(coordinator_credentials, LocalCaCredentials(options.tls_dir, "coordinator"));
    ASSIGN_OR_RETURN(group->worker_credentials_, LocalCaCredentials(options.tls_dir, "worker"));
  }
  for (int i = 0; i < options.count; ++i) {
    const std::string stem =
        absl::StrCat(options.scratch_dir, "/", options.kind, options.count, "_", i);
    auto process = std::make_unique<Subprocess>();
    std::vector<std::string> argv = {options.binary, "--host=127.0.0.1", "--port=0",
                                     absl::StrCat("--port_file=", stem, ".port")};
    if (options.unix_sockets) argv.push_back(absl::StrCat("--unix_socket=", stem, ".sock"));
    if (!options.tls_dir.empty()) {
      const TlsFiles tls = LocalCaFiles(options.tls_dir, "server");
      argv.insert(argv.end(),
                  {"--tls_cert=" + tls.cert, "--tls_key=" + tls.key, "--tls_ca=" + tls.ca});
    }
    RETURN_IF_ERROR(process->Start(argv, stem + ".log"));
    group->logs_.push_back(stem + ".log");
    group->processes_.push_back(std::move(process));
    absl::StatusOr<int> port =
        WaitForPortFile(stem + ".port", absl::Seconds(30), group->processes_.back().get());
    if (!port.ok()) {
      return absl::Status(port.status().code(),
                          absl::StrCat(port.status().message(), "; server log:\n",
                                       LastCharsOfFile(stem + ".log", 2000)));
    }
    const std::string address = options.unix_sockets ? absl::StrCat("unix:", stem, ".sock")
                                                     : absl::StrCat("127.0.0.1:", *port);
    group->slots_.push_back(ServerSlot{absl::StrCat("server", i), address});
    group->stubs_.push_back(ParameterServer::NewStub(
        coordinator_credentials ? CreateChannelWithCredentials(address, coordinator_credentials)
                                : CreateChannel(address)));
  }
  return group;
}

ServerGroup::~ServerGroup() {
  for (auto& process : processes_) process->Stop(absl::Seconds(3));
}

std::vector<pid_t> ServerGroup::pids() const {
  std::vector<pid_t> pids;
  for (const auto& process : processes_) pids.push_back(process->pid());
  return pids;
}

absl::StatusOr<ShardMap> ServerGroup::CreateJob(const std::string& job_id, uint64_t elements,
                                                uint64_t min_shard_elements) {
  TableSpec table;
  table.set_name(kTableName);
  table.add_shape(elements);
  table.mutable_init()->set_kind(InitSpec::ONES);
  ShardMap map;
  map.set_job_id(job_id);
  *map.add_tables() = table;
  for (ShardAssignment& shard : PlanShards({table}, slots_, min_shard_elements)) {
    *map.add_shards() = std::move(shard);
  }
  for (size_t s = 0; s < slots_.size(); ++s) {
    CreateShardsRequest request;
    request.set_job_id(job_id);
    request.set_consistency(ASYNC);
    request.mutable_optimizer()->set_kind(SGD);
    request.mutable_optimizer()->set_learning_rate(kLearningRate);
    request.set_num_workers(1);
    for (const ShardAssignment& shard : map.shards()) {
      if (shard.server_address() != slots_[s].address) continue;
      ShardSpec* spec = request.add_shards();
      *spec->mutable_table() = table;
      *spec->mutable_range() = shard.range();
    }
    if (request.shards().empty()) continue;
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(30)));
    CreateShardsResponse response;
    RETURN_IF_ERROR(FromGrpcStatus(stubs_[s]->CreateShards(&context, request, &response),
                                   absl::StrCat("CreateShards on ", slots_[s].address)));
  }
  return map;
}

void ServerGroup::DropJob(const std::string& job_id) {
  for (auto& stub : stubs_) {
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
    DropJobRequest request;
    request.set_job_id(job_id);
    DropJobResponse response;
    stub->DropJob(&context, request, &response);  // NOT_FOUND for servers without a shard.
  }
}

std::string ServerGroup::LogTails() const {
  std::string out;
  for (const std::string& log : logs_) {
    absl::StrAppend(&out, "--- ", log, "\n", LastCharsOfFile(log, 1500), "\n");
  }
  return out;
}

}  // namespace transport
}  // namespace psrv
