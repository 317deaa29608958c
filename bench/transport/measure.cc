#include "bench/transport/measure.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <memory>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/time.h"
#include "common/status_macros.h"
#include "worker/parameter_client.h"

namespace psrv {
namespace transport {
namespace {

using Clock = std::chrono::steady_clock;

constexpr float kGradient = 1e-3f;
constexpr absl::Duration kRpcTimeout = absl::Seconds(60);

double SecondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

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

// A fresh job of `bytes` on `group` (named bench-<n>) and a client for it.
absl::StatusOr<Worker> MakeWorker(ServerGroup* group, MeasureContext* context, uint64_t bytes,
                                  int split = 1) {
  const std::string job_id = absl::StrCat("bench-", ++context->job_counter);
  Worker worker;
  ASSIGN_OR_RETURN(worker.map, group->CreateJob(job_id, bytes / sizeof(float),
                                                context->options.min_shard_elements));
  const ShardMap client_map =
      SplitShards(worker.map, split, context->options.split_connections);
  worker.requests_per_op = client_map.shards_size();
  ParameterClient::Options client_options;
  client_options.credentials = group->worker_credentials();
  ASSIGN_OR_RETURN(worker.client,
                   ParameterClient::Create(client_map, /*worker_rank=*/0, client_options));
  // Both buffers are written once here, so page faults stay out of the timings.
  worker.grads.assign(bytes / sizeof(float), kGradient);
  worker.params.assign(bytes / sizeof(float), 0.0f);
  return worker;
}

// Closes the client, then frees the job on the servers.
void DropWorker(ServerGroup* group, Worker* w) {
  w->client.reset();
  group->DropJob(w->map.job_id());
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
  if (group.kind() == "null_server") return absl::OkStatus();  // null_server sends zeros.
  const size_t n = w.params.size();
  for (size_t i : {size_t{0}, n / 2, n - 1}) {
    if (!(std::fabs(w.params[i] - 1.0f) < 1e-3f)) {
      return absl::DataLossError(
          absl::StrCat("pulled value ", w.params[i], " at index ", i, ", expected ~1.0"));
    }
  }
  return absl::OkStatus();
}

// Times one operation of `bytes` into `stats`.
template <typename Operation>
absl::Status TimeOnce(Operation operation, uint64_t bytes, DirectionStats* stats) {
  const Clock::time_point start = Clock::now();
  RETURN_IF_ERROR(operation());
  const double elapsed = SecondsSince(start);
  stats->gbps.push_back(bytes / elapsed / 1e9);
  stats->total_seconds += elapsed;
  stats->total_bytes += bytes;
  return absl::OkStatus();
}

}  // namespace

double MeasureContext::WaitForQuiet() const {
  if (options.quiet_wait_s <= 0) return 0;
  return absl::ToDoubleSeconds(WaitForQuietMachine(server_pids, options.quiet_max_other_cores,
                                                   absl::Seconds(options.quiet_wait_s)));
}

absl::StatusOr<ThroughputResult> MeasureThroughput(ServerGroup* group, uint64_t bytes, int split,
                                                   MeasureContext* context) {
  ASSIGN_OR_RETURN(Worker w, MakeWorker(group, context, bytes, split));
  const MeasureOptions& options = context->options;
  ThroughputResult result;
  result.server_kind = group->kind();
  result.bytes = bytes;
  result.servers = group->size();
  result.shards = w.map.shards_size();
  result.split = split;
  result.requests_per_op = w.requests_per_op;

  for (int i = 0; i < options.warmup_iterations; ++i) {
    RETURN_IF_ERROR(PushOnce(&w));
    RETURN_IF_ERROR(PullOnce(&w));
  }
  RETURN_IF_ERROR(PullOnce(&w));
  RETURN_IF_ERROR(CheckPulledValues(*group, w));

  result.waited_s = context->WaitForQuiet();
  const CpuSnapshot cpu_start = TakeCpuSnapshot(context->server_pids);
  const size_t min_iterations = static_cast<size_t>(options.min_iterations);
  while (result.push.total_seconds < options.seconds ||
         result.pull.total_seconds < options.seconds ||
         result.push.gbps.size() < min_iterations) {
    RETURN_IF_ERROR(TimeOnce([&] { return PushOnce(&w); }, bytes, &result.push));
    RETURN_IF_ERROR(TimeOnce([&] { return PullOnce(&w); }, bytes, &result.pull));
  }
  result.cpu = CoresBetween(cpu_start, TakeCpuSnapshot(context->server_pids));
  RETURN_IF_ERROR(CheckPulledValues(*group, w));
  DropWorker(group, &w);
  return result;
}

absl::StatusOr<LatencyResult> MeasureLatency(ServerGroup* group, uint64_t bytes,
                                             MeasureContext* context) {
  ASSIGN_OR_RETURN(Worker w, MakeWorker(group, context, bytes));
  LatencyResult result;
  result.server_kind = group->kind();
  result.bytes = bytes;
  result.servers = group->size();
  result.shards = w.map.shards_size();
  const int ops = context->options.latency_ops;
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
  DropWorker(group, &w);
  return result;
}

LoopbackSeries::LoopbackSeries(bool enabled, Iperf3Options options)
    : enabled_(enabled), options_(std::move(options)) {}

void LoopbackSeries::Measure(const MeasureContext& context) {
  double gbps = 0;
  if (enabled_ && failure_.empty()) {
    context.WaitForQuiet();
    absl::StatusOr<double> measured = MeasureIperf3Loopback(options_);
    if (measured.ok()) {
      gbps = *measured;
      absl::FPrintF(stderr, "  iperf3 loopback: %.2f GB/s\n", gbps);
    } else {
      failure_ = std::string(measured.status().message());
      absl::FPrintF(stderr, "  iperf3 not measured: %s\n", failure_);
    }
  }
  samples_.push_back(gbps);
}

double LoopbackSeries::Around(size_t i) const {
  double sum = 0;
  int n = 0;
  for (size_t k : {i, i + 1}) {
    if (k < samples_.size() && samples_[k] > 0) {
      sum += samples_[k];
      ++n;
    }
  }
  return n > 0 ? sum / n : 0.0;
}

}  // namespace transport
}  // namespace psrv
