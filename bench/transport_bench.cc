// transport_bench: push and pull throughput of the worker's ParameterClient against real ps_server
// processes on 127.0.0.1 (one tensor sharded over 1..N servers, sizes 4 KiB..64 MiB), p50/p99
// latency of small operations, and loopback TCP measured by iperf3 in the same run for comparison.
// Prints a table and writes every number to a JSON file (see bench/README.md).
#include <malloc.h>
#include <stdlib.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include <grpcpp/client_context.h>
#include <nlohmann/json.hpp>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "bench/cpu_usage.h"
#include "bench/machine_info.h"
#include "bench/iperf3_loopback.h"
#include "bench/sample_stats.h"
#include "common/channel.h"
#include "common/key_range.h"
#include "common/grpc_status.h"
#include "common/status_macros.h"
#include "common/subprocess.h"
#include "proto/parameter_server.grpc.pb.h"
#include "tools/cpp/runfiles/runfiles.h"
#include "worker/parameter_client.h"

ABSL_FLAG(std::string, server_binary, "",
          "Path to ps_server. Default: from Bazel runfiles, else ../server/ps_server next to this "
          "binary.");
ABSL_FLAG(std::string, null_server_binary, "",
          "Path to null_server (the baseline). Default: from Bazel runfiles, else next to this "
          "binary.");
ABSL_FLAG(std::vector<std::string>, baseline_servers, std::vector<std::string>({"1"}),
          "Server counts to also measure with null_server, which does no work: the wire-only "
          "baseline (gRPC, kernel and worker). Empty: none.");
ABSL_FLAG(std::vector<std::string>, sizes,
          std::vector<std::string>({"4K", "64K", "1M", "4M", "16M", "64M"}),
          "Tensor sizes in bytes (K, M, G = KiB, MiB, GiB); each a multiple of 4.");
ABSL_FLAG(std::vector<std::string>, servers, std::vector<std::string>({"1", "2"}),
          "Server counts to measure; the tensor is sharded over that many ps_server processes.");
ABSL_FLAG(std::vector<std::string>, client_split, std::vector<std::string>({"1"}),
          "Throughput only: also measure with the worker sending K concurrent requests per shard "
          "(each shard's range cut into K sub-ranges in the client's shard map; the servers keep "
          "one shard each). 1 is what the worker does today; e.g. --client_split=1,4.");
ABSL_FLAG(bool, split_connections, false,
          "With --client_split K > 1: give each of a shard's K requests its own TCP connection. "
          "The worker keeps one channel per address string, so the pieces get equivalent "
          "spellings of the server's address (127.0.0.1:P, dns:///127.0.0.1:P, ipv4:127.0.0.1:P, "
          "dns:127.0.0.1:P); K is limited to 4 then.");
ABSL_FLAG(bool, unix_sockets, false,
          "Reach the servers over Unix domain sockets (unix:PATH) instead of loopback TCP.");
ABSL_FLAG(double, seconds, 1.5,
          "Measured time per size, server count and direction (push and pull alternate).");
ABSL_FLAG(int, min_iterations, 5, "Least number of timed operations per direction.");
ABSL_FLAG(int, warmup_iterations, 3, "Untimed push+pull pairs before each measurement.");
ABSL_FLAG(int, latency_ops, 2000, "Timed operations per direction for the latency measurement.");
ABSL_FLAG(std::string, latency_size, "4K", "Tensor size of the latency measurement.");
ABSL_FLAG(uint64_t, min_shard_elements, 1,
          "PlanShards' min_shard_elements. 1 shards every tensor over all servers; the planner's "
          "default (4096) keeps tensors under 4096 elements per server on one server.");
ABSL_FLAG(bool, iperf, true,
          "Also measure loopback TCP with iperf3 (null in the JSON if it is missing).");
ABSL_FLAG(int, iperf_seconds, 3,
          "iperf3 -t. iperf3 runs before every size and after the last, so that each row's ratio "
          "uses the loopback rate measured right around it.");
ABSL_FLAG(double, quiet_wait_s, 10,
          "Before each measurement, wait up to this long for other processes to leave the CPUs "
          "alone (see --quiet_max_other_cores). 0: never wait.");
ABSL_FLAG(double, quiet_max_other_cores, 0.25,
          "Load from other processes (in cores) below which the machine counts as quiet.");
ABSL_FLAG(std::string, out, "",
          "JSON output path. Default: bench/results/transport_<hostname>_<UTC time>.json. Relative "
          "paths are taken from the directory `bazel run` was started in.");
ABSL_FLAG(std::string, commit, "", "Git commit of the code measured (recorded in the JSON).");
ABSL_FLAG(bool, malloc_tuning, true,
          "If MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_ are not set, set them (32 MiB, "
          "1 GiB) for the servers and apply the same to this process with mallopt().");
ABSL_FLAG(double, target_gbps, 1.5,
          "Target for 1-16 MiB with one server, each direction (reported as met or missed).");

namespace psrv {
namespace {

using Json = nlohmann::ordered_json;
using Clock = std::chrono::steady_clock;

constexpr char kTableName[] = "bench";
constexpr float kLearningRate = 1e-9f;  // Keeps the parameters ~1.0 however many pushes land.
constexpr float kGradient = 1e-3f;
constexpr absl::Duration kRpcTimeout = absl::Seconds(60);

double SecondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

std::string TailOf(const std::string& text, size_t chars) {
  return text.size() <= chars ? text : text.substr(text.size() - chars);
}

// ---------------------------------------------------------------------------------------------
// Machine description: bench/machine_info.h.

// The 1, 5 and 15 minute load averages: other work on the machine skews every number.
std::string LoadAverage() {
  std::string text = ReadFile("/proc/loadavg");
  std::vector<std::string> fields = absl::StrSplit(text, ' ', absl::SkipEmpty());
  if (fields.size() < 3) return "unknown";
  return absl::StrCat(fields[0], " ", fields[1], " ", fields[2]);
}

// ---------------------------------------------------------------------------------------------
// Servers.

// `flag_value` if set, else the binary from Bazel runfiles ("psrv/<package>/<name>"), else
// <package>/<name> beside this binary's package in bazel-bin.
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

// `count` server processes (ps_server, or null_server for the baseline) on 127.0.0.1, stopped when
// destroyed. Not thread-safe.
class ServerGroup {
 public:
  static absl::StatusOr<std::unique_ptr<ServerGroup>> Start(const std::string& kind,
                                                            const std::string& binary, int count,
                                                            const std::string& scratch_dir) {
    std::unique_ptr<ServerGroup> group(new ServerGroup());
    group->kind_ = kind;
    for (int i = 0; i < count; ++i) {
      const std::string stem = absl::StrCat(scratch_dir, "/", kind, count, "_", i);
      auto process = std::make_unique<Subprocess>();
      std::vector<std::string> argv = {binary, "--host=127.0.0.1", "--port=0",
                                       absl::StrCat("--port_file=", stem, ".port")};
      const bool unix_socket = absl::GetFlag(FLAGS_unix_sockets);
      if (unix_socket) argv.push_back(absl::StrCat("--unix_socket=", stem, ".sock"));
      RETURN_IF_ERROR(process->Start(argv, stem + ".log"));
      group->logs_.push_back(stem + ".log");
      group->processes_.push_back(std::move(process));
      absl::StatusOr<int> port =
          WaitForPortFile(stem + ".port", absl::Seconds(30), group->processes_.back().get());
      if (!port.ok()) {
        return absl::Status(port.status().code(),
                            absl::StrCat(port.status().message(), "; server log:\n",
                                         TailOf(ReadFile(stem + ".log"), 2000)));
      }
      const std::string address = unix_socket ? absl::StrCat("unix:", stem, ".sock")
                                              : absl::StrCat("127.0.0.1:", *port);
      group->slots_.push_back(ServerSlot{absl::StrCat("server", i), address});
      group->stubs_.push_back(ParameterServer::NewStub(CreateChannel(address)));
    }
    return group;
  }

  ~ServerGroup() {
    for (auto& process : processes_) process->Stop(absl::Seconds(3));
  }

  int size() const { return static_cast<int>(slots_.size()); }
  const std::string& kind() const { return kind_; }  // "ps_server" or "null_server".

  std::vector<pid_t> pids() const {
    std::vector<pid_t> pids;
    for (const auto& process : processes_) pids.push_back(process->pid());
    return pids;
  }

  // Creates an ASYNC job holding one FP32 table of `elements` elements (initialised to ones),
  // sharded over this group's servers by PlanShards, and returns its shard map.
  absl::StatusOr<ShardMap> CreateJob(const std::string& job_id, uint64_t elements,
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

  // Frees the job's memory on every server (best effort).
  void DropJob(const std::string& job_id) {
    for (auto& stub : stubs_) {
      grpc::ClientContext context;
      context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
      DropJobRequest request;
      request.set_job_id(job_id);
      DropJobResponse response;
      stub->DropJob(&context, request, &response);  // NOT_FOUND for servers without a shard.
    }
  }

  std::string LogTails() const {
    std::string out;
    for (const std::string& log : logs_) {
      absl::StrAppend(&out, "--- ", log, "\n", TailOf(ReadFile(log), 1500), "\n");
    }
    return out;
  }

 private:
  ServerGroup() = default;

  std::string kind_;
  std::vector<std::unique_ptr<Subprocess>> processes_;
  std::vector<std::string> logs_;
  std::vector<ServerSlot> slots_;
  std::vector<std::unique_ptr<ParameterServer::Stub>> stubs_;
};

// ---------------------------------------------------------------------------------------------
// Measurements.

// The worker side of one job: a client and its two flat buffers.
struct Worker {
  ShardMap map;  // As created on the servers.
  int requests_per_op = 0;
  std::unique_ptr<ParameterClient> client;
  std::vector<float> grads;   // (elements) sent by Push.
  std::vector<float> params;  // (elements) filled by Pull.
  uint64_t step = 0;
};

// Equivalent gRPC targets for "127.0.0.1:P" (each gets its own channel in the worker).
std::string AddressSpelling(const std::string& address, int k) {
  static constexpr const char* kPrefixes[] = {"", "dns:///", "ipv4:", "dns:"};
  return absl::StrCat(kPrefixes[k % 4], address);
}

// The client's view of `map` with every shard cut into `split` contiguous sub-ranges (at least one
// element each), so that the client sends that many concurrent requests per shard; with
// `separate_connections`, each over its own connection.
ShardMap SplitShards(const ShardMap& map, int split, bool separate_connections) {
  ShardMap out = map;
  out.clear_shards();
  for (const ShardAssignment& shard : map.shards()) {
    const uint64_t size = RangeSize(shard.range());
    const uint64_t pieces = std::max<uint64_t>(1, std::min<uint64_t>(split, size));
    uint64_t begin = shard.range().begin();
    for (uint64_t k = 0; k < pieces; ++k) {
      const uint64_t length = size / pieces + (k < size % pieces ? 1 : 0);
      ShardAssignment* piece = out.add_shards();
      *piece = shard;
      *piece->mutable_range() = MakeRange(begin, begin + length);
      if (separate_connections) {
        piece->set_server_address(AddressSpelling(shard.server_address(), static_cast<int>(k)));
      }
      begin += length;
    }
  }
  return out;
}

absl::StatusOr<Worker> MakeWorker(ServerGroup* group, const std::string& job_id, uint64_t bytes,
                                  int split = 1) {
  Worker worker;
  ASSIGN_OR_RETURN(worker.map,
                   group->CreateJob(job_id, bytes / sizeof(float),
                                    absl::GetFlag(FLAGS_min_shard_elements)));
  const ShardMap client_map =
      SplitShards(worker.map, split, absl::GetFlag(FLAGS_split_connections));
  worker.requests_per_op = client_map.shards_size();
  ASSIGN_OR_RETURN(worker.client, ParameterClient::Create(client_map, /*worker_rank=*/0));
  // Both buffers are written once here, so page faults stay out of the timings.
  worker.grads.assign(bytes / sizeof(float), kGradient);
  worker.params.assign(bytes / sizeof(float), 0.0f);
  return worker;
}

absl::Status PushOnce(Worker* w) {
  return w->client->Push(++w->step, w->grads.data(), kRpcTimeout);
}

absl::Status PullOnce(Worker* w) {
  return w->client->Pull(w->step + 1, w->params.data(), kRpcTimeout);
}

// The values pulled must be the table's (ones, minus tiny SGD updates): catches a pull that moved
// no data.
absl::Status CheckPulledValues(const ServerGroup& group, const Worker& w) {
  if (group.kind() != "ps_server") return absl::OkStatus();  // null_server sends zeros.
  const size_t n = w.params.size();
  for (size_t i : {size_t{0}, n / 2, n - 1}) {
    if (!(std::fabs(w.params[i] - 1.0f) < 1e-3f)) {
      return absl::DataLossError(
          absl::StrCat("pulled value ", w.params[i], " at index ", i, ", expected ~1.0"));
    }
  }
  return absl::OkStatus();
}

struct DirectionStats {
  std::vector<double> gbps;  // Per operation.
  double total_seconds = 0;
  uint64_t total_bytes = 0;
};

Json DirectionJson(const DirectionStats& d) {
  const SampleSummary s = Summarize(d.gbps);
  Json j;
  j["iterations"] = s.count;
  j["median_gbps"] = s.p50;
  j["p10_gbps"] = s.p10;
  j["p90_gbps"] = s.p90;
  j["min_gbps"] = s.min;
  j["max_gbps"] = s.max;
  j["aggregate_gbps"] = d.total_seconds > 0 ? d.total_bytes / d.total_seconds / 1e9 : 0.0;
  return j;
}

Json CpuJson(const CpuCores& c) {
  Json j;
  j["benchmark"] = c.self;
  j["servers"] = c.watched;
  j["irq"] = c.irq;
  j["steal"] = c.steal;
  j["other"] = c.other;
  j["idle"] = c.idle;
  return j;
}

// What all measurements share: the processes whose CPU time is ours, and the quiet-machine wait.
struct MeasureContext {
  std::vector<pid_t> server_pids;  // Of every group (idle groups still count as ours).
  int job_counter = 0;

  // Waits (bounded) for a quiet machine; returns the seconds waited.
  double WaitForQuiet() const {
    const double max_wait = absl::GetFlag(FLAGS_quiet_wait_s);
    if (max_wait <= 0) return 0;
    return absl::ToDoubleSeconds(WaitForQuietMachine(
        server_pids, absl::GetFlag(FLAGS_quiet_max_other_cores), absl::Seconds(max_wait)));
  }
};

struct ThroughputResult {
  std::string server_kind;
  uint64_t bytes = 0;
  int servers = 0;
  int shards = 0;
  int split = 1;             // Concurrent requests per shard (--client_split).
  int requests_per_op = 0;
  DirectionStats push, pull;
  CpuCores cpu;              // During the timed loop (push and pull together).
  double waited_s = 0;       // For a quiet machine before it.
  double iperf3_gbps = 0;    // Loopback TCP measured right before and after (0: none).
};

// Alternates timed pushes and pulls of the whole tensor until each direction has had `seconds` and
// at least `min_iterations` operations.
absl::StatusOr<ThroughputResult> MeasureThroughput(ServerGroup* group, uint64_t bytes, int split,
                                                   MeasureContext* context) {
  const std::string job_id = absl::StrCat("bench-", ++context->job_counter);
  absl::StatusOr<Worker> made = MakeWorker(group, job_id, bytes, split);
  if (!made.ok()) return made.status();
  Worker& w = *made;
  ThroughputResult result;
  result.server_kind = group->kind();
  result.bytes = bytes;
  result.servers = group->size();
  result.shards = w.map.shards_size();
  result.split = split;
  result.requests_per_op = w.requests_per_op;

  for (int i = 0; i < absl::GetFlag(FLAGS_warmup_iterations); ++i) {
    RETURN_IF_ERROR(PushOnce(&w));
    RETURN_IF_ERROR(PullOnce(&w));
  }
  RETURN_IF_ERROR(PullOnce(&w));
  RETURN_IF_ERROR(CheckPulledValues(*group, w));

  result.waited_s = context->WaitForQuiet();
  const CpuSnapshot cpu_start = TakeCpuSnapshot(context->server_pids);
  const double seconds = absl::GetFlag(FLAGS_seconds);
  const size_t min_iterations = static_cast<size_t>(absl::GetFlag(FLAGS_min_iterations));
  while (result.push.total_seconds < seconds || result.pull.total_seconds < seconds ||
         result.push.gbps.size() < min_iterations) {
    Clock::time_point start = Clock::now();
    RETURN_IF_ERROR(PushOnce(&w));
    double elapsed = SecondsSince(start);
    result.push.gbps.push_back(bytes / elapsed / 1e9);
    result.push.total_seconds += elapsed;
    result.push.total_bytes += bytes;

    start = Clock::now();
    RETURN_IF_ERROR(PullOnce(&w));
    elapsed = SecondsSince(start);
    result.pull.gbps.push_back(bytes / elapsed / 1e9);
    result.pull.total_seconds += elapsed;
    result.pull.total_bytes += bytes;
  }
  result.cpu = CoresBetween(cpu_start, TakeCpuSnapshot(context->server_pids));
  RETURN_IF_ERROR(CheckPulledValues(*group, w));
  w.client.reset();
  group->DropJob(job_id);
  return result;
}

struct LatencyResult {
  std::string server_kind;
  uint64_t bytes = 0;
  int servers = 0;
  int shards = 0;
  std::vector<double> push_us, pull_us;
  CpuCores cpu;
  double waited_s = 0;
};

Json LatencyJson(const std::vector<double>& us) {
  const SampleSummary s = Summarize(us);
  Json j;
  j["ops"] = s.count;
  j["p50_us"] = s.p50;
  j["p90_us"] = s.p90;
  j["p99_us"] = s.p99;
  j["mean_us"] = s.mean;
  j["min_us"] = s.min;
  j["max_us"] = s.max;
  return j;
}

// One operation at a time, pushes and pulls alternating.
absl::StatusOr<LatencyResult> MeasureLatency(ServerGroup* group, uint64_t bytes,
                                             MeasureContext* context) {
  const std::string job_id = absl::StrCat("bench-", ++context->job_counter);
  absl::StatusOr<Worker> made = MakeWorker(group, job_id, bytes);
  if (!made.ok()) return made.status();
  Worker& w = *made;
  LatencyResult result;
  result.server_kind = group->kind();
  result.bytes = bytes;
  result.servers = group->size();
  result.shards = w.map.shards_size();
  const int ops = absl::GetFlag(FLAGS_latency_ops);
  for (int i = 0; i < std::max(10, ops / 20); ++i) {
    RETURN_IF_ERROR(PushOnce(&w));
    RETURN_IF_ERROR(PullOnce(&w));
  }
  result.waited_s = context->WaitForQuiet();
  const CpuSnapshot cpu_start = TakeCpuSnapshot(context->server_pids);
  for (int i = 0; i < ops; ++i) {
    Clock::time_point start = Clock::now();
    RETURN_IF_ERROR(PushOnce(&w));
    result.push_us.push_back(SecondsSince(start) * 1e6);
    start = Clock::now();
    RETURN_IF_ERROR(PullOnce(&w));
    result.pull_us.push_back(SecondsSince(start) * 1e6);
  }
  result.cpu = CoresBetween(cpu_start, TakeCpuSnapshot(context->server_pids));
  RETURN_IF_ERROR(CheckPulledValues(*group, w));
  w.client.reset();
  group->DropJob(job_id);
  return result;
}

// ---------------------------------------------------------------------------------------------
// The run.

// Makes the glibc settings of ENVIRONMENT.md hold for this process and the servers it starts.
Json ApplyMallocTuning() {
  Json j;
  const char* mmap = getenv("MALLOC_MMAP_THRESHOLD_");
  const char* trim = getenv("MALLOC_TRIM_THRESHOLD_");
  j["from_environment"] = mmap != nullptr && trim != nullptr;
  if (absl::GetFlag(FLAGS_malloc_tuning)) {
    if (mmap == nullptr) {
      setenv("MALLOC_MMAP_THRESHOLD_", "33554432", 1);
      mallopt(M_MMAP_THRESHOLD, 33554432);
    }
    if (trim == nullptr) {
      setenv("MALLOC_TRIM_THRESHOLD_", "1073741824", 1);
      mallopt(M_TRIM_THRESHOLD, 1073741824);
    }
  }
  mmap = getenv("MALLOC_MMAP_THRESHOLD_");
  trim = getenv("MALLOC_TRIM_THRESHOLD_");
  j["MALLOC_MMAP_THRESHOLD_"] = mmap != nullptr ? Json(mmap) : Json(nullptr);
  j["MALLOC_TRIM_THRESHOLD_"] = trim != nullptr ? Json(trim) : Json(nullptr);
  return j;
}

std::string ResolveOutputPath(const std::string& date_compact) {
  std::string out = absl::GetFlag(FLAGS_out);
  if (out.empty()) {
    out = absl::StrCat("bench/results/transport_", MachineInfo()["hostname"].get<std::string>(), "_", date_compact, ".json");
  }
  const char* cwd = getenv("BUILD_WORKING_DIRECTORY");  // Set by `bazel run`.
  if (!out.empty() && out[0] != '/' && cwd != nullptr) out = absl::StrCat(cwd, "/", out);
  return out;
}

// "1 ps_server", "2 null_server".
std::string ServersLabel(int servers, const std::string& kind) {
  return absl::StrCat(servers, " ", kind);
}

std::string Ratio(double value, double reference) {
  return reference > 0 ? absl::StrFormat("%.2f", value / reference) : "-";
}

Json RatioJson(double value, double reference) {
  return reference > 0 ? Json(value / reference) : Json(nullptr);
}

int Run(const std::string& argv0) {
  const absl::Time now = absl::Now();
  const std::string date = absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", now, absl::UTCTimeZone());
  const std::string date_compact = absl::FormatTime("%Y%m%dT%H%M%SZ", now, absl::UTCTimeZone());
  Json malloc_settings = ApplyMallocTuning();
  const std::string load_at_start = LoadAverage();

  std::vector<uint64_t> sizes;
  for (const std::string& text : absl::GetFlag(FLAGS_sizes)) {
    absl::StatusOr<uint64_t> size = ParseByteSize(text);
    if (!size.ok() || *size % sizeof(float) != 0) {
      absl::FPrintF(stderr, "--sizes: bad size \"%s\" (a positive multiple of 4 bytes)\n", text);
      return 2;
    }
    sizes.push_back(*size);
  }
  auto parse_counts = [](const std::vector<std::string>& texts, const char* flag,
                         std::vector<int>* counts) {
    for (const std::string& text : texts) {
      int n = 0;
      if (!absl::SimpleAtoi(text, &n) || n < 1 || n > 64) {
        absl::FPrintF(stderr, "--%s: bad server count \"%s\"\n", flag, text);
        return false;
      }
      counts->push_back(n);
    }
    return true;
  };
  std::vector<int> server_counts, baseline_counts, splits;
  if (!parse_counts(absl::GetFlag(FLAGS_servers), "servers", &server_counts) ||
      !parse_counts(absl::GetFlag(FLAGS_baseline_servers), "baseline_servers", &baseline_counts) ||
      !parse_counts(absl::GetFlag(FLAGS_client_split), "client_split", &splits) || splits.empty()) {
    return 2;
  }
  for (int split : splits) {
    if (absl::GetFlag(FLAGS_split_connections) && split > 4) {
      absl::FPrintF(stderr, "--split_connections allows --client_split up to 4\n");
      return 2;
    }
  }
  absl::StatusOr<uint64_t> latency_bytes = ParseByteSize(absl::GetFlag(FLAGS_latency_size));
  if (!latency_bytes.ok() || *latency_bytes % sizeof(float) != 0) {
    absl::FPrintF(stderr, "--latency_size: bad size\n");
    return 2;
  }
  absl::StatusOr<std::string> server_binary =
      FindBinary(absl::GetFlag(FLAGS_server_binary), "server", "ps_server", argv0);
  if (!server_binary.ok()) {
    absl::FPrintF(stderr, "%s\n", server_binary.status().ToString());
    return 1;
  }
  absl::StatusOr<std::string> null_server_binary =
      baseline_counts.empty()
          ? absl::StatusOr<std::string>("")
          : FindBinary(absl::GetFlag(FLAGS_null_server_binary), "bench", "null_server", argv0);
  if (!null_server_binary.ok()) {
    absl::FPrintF(stderr, "%s\n", null_server_binary.status().ToString());
    return 1;
  }

  char scratch_template[] = "/tmp/transport_bench.XXXXXX";
  if (mkdtemp(scratch_template) == nullptr) {
    absl::FPrintF(stderr, "cannot create a scratch directory in /tmp\n");
    return 1;
  }
  const std::string scratch_dir = scratch_template;

  // Every server group runs for the whole sweep so that each size is measured for every server
  // count back to back (idle servers cost nothing measurable).
  std::vector<std::unique_ptr<ServerGroup>> groups;
  MeasureContext context;
  auto start_groups = [&](const std::string& kind, const std::string& binary,
                          const std::vector<int>& counts) {
    for (int count : counts) {
      absl::StatusOr<std::unique_ptr<ServerGroup>> group =
          ServerGroup::Start(kind, binary, count, scratch_dir);
      if (!group.ok()) {
        absl::FPrintF(stderr, "cannot start %d %s process(es): %s\n", count, kind,
                      group.status().ToString());
        return false;
      }
      for (pid_t pid : (*group)->pids()) context.server_pids.push_back(pid);
      groups.push_back(std::move(*group));
    }
    return true;
  };
  if (!start_groups("ps_server", *server_binary, server_counts) ||
      !start_groups("null_server", *null_server_binary, baseline_counts)) {
    return 1;
  }

  // iperf3 runs before every size and after the last one: iperf_samples[i] is the loopback rate
  // right before size i (0 where it failed). After the first failure it is not tried again.
  const bool want_iperf = absl::GetFlag(FLAGS_iperf);
  std::vector<double> iperf_samples;
  std::string iperf_note;
  Iperf3Options iperf_options;
  iperf_options.duration = absl::Seconds(absl::GetFlag(FLAGS_iperf_seconds));
  iperf_options.scratch_dir = scratch_dir;
  auto run_iperf = [&]() {
    double gbps = 0;
    if (want_iperf && iperf_note.empty()) {
      context.WaitForQuiet();
      absl::StatusOr<double> measured = MeasureIperf3Loopback(iperf_options);
      if (measured.ok()) {
        gbps = *measured;
        absl::FPrintF(stderr, "  iperf3 loopback: %.2f GB/s\n", gbps);
      } else {
        iperf_note = std::string(measured.status().message());
        absl::FPrintF(stderr, "  iperf3 not measured: %s\n", iperf_note);
      }
    }
    iperf_samples.push_back(gbps);
  };
  // The mean of the iperf3 samples taken right before and after size i.
  auto iperf_around = [&](size_t i) {
    double sum = 0;
    int n = 0;
    for (size_t k : {i, i + 1}) {
      if (k < iperf_samples.size() && iperf_samples[k] > 0) {
        sum += iperf_samples[k];
        ++n;
      }
    }
    return n > 0 ? sum / n : 0.0;
  };

  std::vector<ThroughputResult> throughput;
  std::vector<size_t> throughput_size_index;
  for (size_t i = 0; i < sizes.size(); ++i) {
    run_iperf();
    for (auto& group : groups) {
      for (int split : splits) {
        absl::StatusOr<ThroughputResult> r =
            MeasureThroughput(group.get(), sizes[i], split, &context);
        if (!r.ok()) {
          absl::FPrintF(stderr, "throughput %s with %d %s failed: %s\n%s",
                        FormatByteSize(sizes[i]), group->size(), group->kind(),
                        r.status().ToString(), group->LogTails());
          return 1;
        }
        absl::FPrintF(stderr,
                      "  %-7s %d %-11s %2d req  push %.2f  pull %.2f GB/s (median)  other load "
                      "%.2f cores\n",
                      FormatByteSize(sizes[i]), group->size(), group->kind(), r->requests_per_op,
                      Summarize(r->push.gbps).p50, Summarize(r->pull.gbps).p50, r->cpu.other);
        throughput.push_back(std::move(*r));
        throughput_size_index.push_back(i);
      }
    }
  }
  run_iperf();
  for (size_t k = 0; k < throughput.size(); ++k) {
    throughput[k].iperf3_gbps = iperf_around(throughput_size_index[k]);
  }

  std::vector<LatencyResult> latency;
  if (absl::GetFlag(FLAGS_latency_ops) > 0) {
    for (auto& group : groups) {
      absl::StatusOr<LatencyResult> r = MeasureLatency(group.get(), *latency_bytes, &context);
      if (!r.ok()) {
        absl::FPrintF(stderr, "latency with %d %s failed: %s\n%s", group->size(), group->kind(),
                      r.status().ToString(), group->LogTails());
        return 1;
      }
      latency.push_back(std::move(*r));
    }
  }
  groups.clear();
  std::error_code ignored;
  std::filesystem::remove_all(scratch_dir, ignored);

  // ---- Report.
  std::vector<double> iperf_measured;
  for (double v : iperf_samples) {
    if (v > 0) iperf_measured.push_back(v);
  }
  const double iperf_median = iperf_measured.empty() ? 0 : Quantile(iperf_measured, 0.5);
  Json iperf;
  iperf["available"] = !iperf_measured.empty();
  iperf["median_gbps"] = iperf_measured.empty() ? Json(nullptr) : Json(iperf_median);
  iperf["samples_gbps"] = iperf_measured;
  iperf["command"] =
      absl::StrCat("iperf3 -c 127.0.0.1 -p PORT -l 1M -t ", absl::GetFlag(FLAGS_iperf_seconds),
                   " -J (server: iperf3 -s -1 -B 127.0.0.1 -p PORT); GB/s = "
                   "end.sum_received.bits_per_second / 8e9; run before every size and after the "
                   "last");
  if (!want_iperf) {
    iperf["note"] = "not measured (--iperf=false)";
  } else if (!iperf_note.empty()) {
    iperf["note"] = iperf_note;
  }

  absl::PrintF("\nTransport benchmark  %s  %s (%d cores)  commit %s\n", date, MachineInfo()["hostname"].get<std::string>(),
               sysconf(_SC_NPROCESSORS_ONLN),
               absl::GetFlag(FLAGS_commit).empty() ? "unknown" : absl::GetFlag(FLAGS_commit));
  if (!iperf_measured.empty()) {
    absl::PrintF("iperf3 loopback TCP (1 stream, -l 1M): median %.2f GB/s of %s\n", iperf_median,
                 absl::StrJoin(iperf_measured, " ", [](std::string* out, double v) {
                   absl::StrAppend(out, absl::StrFormat("%.2f", v));
                 }));
  } else {
    absl::PrintF("iperf3 loopback TCP: not measured (%s)\n",
                 want_iperf ? iperf_note : "--iperf=false");
  }
  absl::PrintF(
      "GB/s = 1e9 bytes of tensor payload per second, median [p10-p90] per operation; "
      "x iperf3 = median / iperf3 around that size; other = cores used by other processes\n\n");
  absl::PrintF("%-7s %-13s %6s %4s  %-19s %-19s %6s %6s %6s %6s %6s\n", "size", "servers",
               "shards", "reqs", "push GB/s", "pull GB/s", "iperf3", "push x", "pull x", "other",
               "iters");
  Json throughput_json = Json::array();
  for (const ThroughputResult& r : throughput) {
    const SampleSummary push = Summarize(r.push.gbps);
    const SampleSummary pull = Summarize(r.pull.gbps);
    absl::PrintF("%-7s %-13s %6d %4d  %-19s %-19s %6s %6s %6s %6.2f %6d\n",
                 FormatByteSize(r.bytes), ServersLabel(r.servers, r.server_kind), r.shards,
                 r.requests_per_op,
                 absl::StrFormat("%.2f [%.2f-%.2f]", push.p50, push.p10, push.p90),
                 absl::StrFormat("%.2f [%.2f-%.2f]", pull.p50, pull.p10, pull.p90),
                 r.iperf3_gbps > 0 ? absl::StrFormat("%.2f", r.iperf3_gbps) : "-",
                 Ratio(push.p50, r.iperf3_gbps), Ratio(pull.p50, r.iperf3_gbps), r.cpu.other,
                 push.count);
    Json j;
    j["server"] = r.server_kind;
    j["size"] = FormatByteSize(r.bytes);
    j["bytes"] = r.bytes;
    j["servers"] = r.servers;
    j["shards"] = r.shards;
    j["client_split"] = r.split;
    j["requests_per_op"] = r.requests_per_op;
    j["push"] = DirectionJson(r.push);
    j["pull"] = DirectionJson(r.pull);
    j["iperf3_gbps"] = r.iperf3_gbps > 0 ? Json(r.iperf3_gbps) : Json(nullptr);
    j["push_ratio_to_iperf3"] = RatioJson(push.p50, r.iperf3_gbps);
    j["pull_ratio_to_iperf3"] = RatioJson(pull.p50, r.iperf3_gbps);
    j["cpu_cores"] = CpuJson(r.cpu);
    j["waited_for_quiet_s"] = r.waited_s;
    throughput_json.push_back(j);
  }
  absl::PrintF("\n");
  Json latency_json = Json::array();
  for (const LatencyResult& r : latency) {
    const SampleSummary push = Summarize(r.push_us);
    const SampleSummary pull = Summarize(r.pull_us);
    absl::PrintF(
        "%s latency, %s (%d shard%s): push p50 %.0f us  p99 %.0f us | pull p50 %.0f us  "
        "p99 %.0f us  (%d ops each, other load %.2f cores)\n",
        FormatByteSize(r.bytes), ServersLabel(r.servers, r.server_kind), r.shards,
        r.shards == 1 ? "" : "s", push.p50, push.p99, pull.p50, pull.p99, push.count, r.cpu.other);
    Json j;
    j["server"] = r.server_kind;
    j["size"] = FormatByteSize(r.bytes);
    j["bytes"] = r.bytes;
    j["servers"] = r.servers;
    j["shards"] = r.shards;
    j["push"] = LatencyJson(r.push_us);
    j["pull"] = LatencyJson(r.pull_us);
    j["cpu_cores"] = CpuJson(r.cpu);
    j["waited_for_quiet_s"] = r.waited_s;
    latency_json.push_back(j);
  }

  // The target: every 1-16 MiB size with one server, each direction's median.
  const double target = absl::GetFlag(FLAGS_target_gbps);
  double worst_push = -1, worst_pull = -1;
  for (const ThroughputResult& r : throughput) {
    if (r.server_kind != "ps_server" || r.servers != 1 || r.split != 1 || r.bytes < (1u << 20) ||
        r.bytes > (16u << 20)) {
      continue;
    }
    const double push = Summarize(r.push.gbps).p50, pull = Summarize(r.pull.gbps).p50;
    worst_push = worst_push < 0 ? push : std::min(worst_push, push);
    worst_pull = worst_pull < 0 ? pull : std::min(worst_pull, pull);
  }
  Json target_json;
  target_json["description"] =
      "median >= target_gbps each way for every measured size in 1-16 MiB, 1 ps_server, the "
      "worker's own requests (client_split 1)";
  target_json["target_gbps"] = target;
  if (worst_push >= 0) {
    const bool met = worst_push >= target && worst_pull >= target;
    target_json["worst_push_gbps"] = worst_push;
    target_json["worst_pull_gbps"] = worst_pull;
    target_json["met"] = met;
    absl::PrintF("\nTarget >= %.2f GB/s each way, 1-16 MiB, 1 server: %s (worst median: push "
                 "%.2f, pull %.2f GB/s)\n",
                 target, met ? "MET" : "MISSED", worst_push, worst_pull);
  } else {
    target_json["met"] = nullptr;
    target_json["note"] = "no 1-16 MiB size with 1 server was measured";
  }

  Json config;
  config["server_binary"] = *server_binary;
  config["null_server_binary"] =
      null_server_binary->empty() ? Json(nullptr) : Json(*null_server_binary);
  config["baseline_servers"] = baseline_counts;
  config["client_split"] = splits;
  config["split_connections"] = absl::GetFlag(FLAGS_split_connections);
  config["sizes"] = absl::GetFlag(FLAGS_sizes);
  config["servers"] = server_counts;
  config["seconds_per_direction"] = absl::GetFlag(FLAGS_seconds);
  config["min_iterations"] = absl::GetFlag(FLAGS_min_iterations);
  config["warmup_iterations"] = absl::GetFlag(FLAGS_warmup_iterations);
  config["latency_ops"] = absl::GetFlag(FLAGS_latency_ops);
  config["latency_bytes"] = *latency_bytes;
  config["min_shard_elements"] = absl::GetFlag(FLAGS_min_shard_elements);
  config["consistency"] = "ASYNC";
  config["optimizer"] = absl::StrFormat("SGD lr=%g", kLearningRate);
  config["quiet_wait_s"] = absl::GetFlag(FLAGS_quiet_wait_s);
  config["quiet_max_other_cores"] = absl::GetFlag(FLAGS_quiet_max_other_cores);
  config["malloc"] = malloc_settings;

  Json report;
  report["benchmark"] = "transport";
  report["date_utc"] = date;
  report["commit"] = absl::GetFlag(FLAGS_commit).empty() ? Json(nullptr)
                                                         : Json(absl::GetFlag(FLAGS_commit));
  report["machine"] = MachineInfo();
  report["machine"]["loadavg_at_start"] = load_at_start;
  report["machine"]["loadavg_at_end"] = LoadAverage();
  report["config"] = config;
  report["iperf3"] = iperf;
  report["throughput"] = throughput_json;
  report["latency"] = latency_json;
  report["target"] = target_json;

  const std::string out_path = ResolveOutputPath(date_compact);
  const std::filesystem::path parent = std::filesystem::path(out_path).parent_path();
  if (!parent.empty()) std::filesystem::create_directories(parent, ignored);
  std::ofstream out(out_path, std::ios::trunc);
  out << report.dump(2) << "\n";
  out.close();
  if (!out) {
    absl::FPrintF(stderr, "cannot write %s\n", out_path);
    return 1;
  }
  absl::PrintF("\nWrote %s\n", out_path);
  return 0;
}

}  // namespace
}  // namespace psrv

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "Push/pull throughput and latency of the parameter client against local ps_server "
      "processes, beside iperf3 loopback TCP.\nUsage: transport_bench [--sizes=4K,1M] "
      "[--servers=1,2] [--out=FILE] [--commit=SHA]");
  absl::ParseCommandLine(argc, argv);
  return psrv::Run(argv[0]);
}
