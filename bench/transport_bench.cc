// transport_bench: push and pull throughput of the worker's ParameterClient against real ps_server
// processes on 127.0.0.1 (one tensor sharded over 1..N servers, sizes 4 KiB..64 MiB), p50/p99
// latency of small operations, and loopback TCP measured by iperf3 in the same run for comparison.
// Prints a table and writes every number to a JSON file (see bench/README.md). The servers are in
// transport/server_group.h, the measurements in transport/measure.h, the output in
// transport/report.h; this file reads the flags and runs the sweep.
#include <stdlib.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "bench/iperf3_loopback.h"
#include "bench/machine_info.h"
#include "bench/sample_stats.h"
#include "bench/transport/measure.h"
#include "bench/transport/report.h"
#include "bench/transport/server_group.h"
#include "common/local_ca.h"
#include "common/malloc_tuning.h"

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
ABSL_FLAG(bool, tls, false,
          "Also measure every --servers count on mutual TLS (certificates of a throw-away CA made "
          "with openssl, common/local_ca.h): rows of server kind \"ps_server+tls\" next to the "
          "plaintext ones, and the TLS/plaintext ratios in the report's \"tls_cost\".");
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
using transport::LatencyResult;
using transport::LoopbackSeries;
using transport::MeasureContext;
using transport::ServerGroup;
using transport::ThroughputResult;

// The sweep the flags ask for, checked.
struct Sweep {
  std::vector<uint64_t> sizes;       // Tensor bytes, each a multiple of 4.
  std::vector<int> server_counts;    // One ps_server group per count.
  std::vector<int> baseline_counts;  // One null_server group per count.
  std::vector<int> splits;           // Requests per shard (--client_split), not empty.
  uint64_t latency_bytes = 0;
  std::string server_binary;
  std::string null_server_binary;  // Empty without baseline groups.
};

// Everything measured, in the order measured.
struct Measurements {
  std::vector<ThroughputResult> throughput;
  std::vector<LatencyResult> latency;
};

bool ParseCounts(const std::vector<std::string>& texts, const char* flag,
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
}

// Reads the sweep's sizes and counts from the flags; false, having said why on stderr, if one is
// bad.
bool ParseSweepFlags(Sweep* sweep) {
  for (const std::string& text : absl::GetFlag(FLAGS_sizes)) {
    absl::StatusOr<uint64_t> size = ParseByteSize(text);
    if (!size.ok() || *size % sizeof(float) != 0) {
      absl::FPrintF(stderr, "--sizes: bad size \"%s\" (a positive multiple of 4 bytes)\n", text);
      return false;
    }
    sweep->sizes.push_back(*size);
  }
  if (!ParseCounts(absl::GetFlag(FLAGS_servers), "servers", &sweep->server_counts) ||
      !ParseCounts(absl::GetFlag(FLAGS_baseline_servers), "baseline_servers",
                   &sweep->baseline_counts) ||
      !ParseCounts(absl::GetFlag(FLAGS_client_split), "client_split", &sweep->splits) ||
      sweep->splits.empty()) {
    return false;
  }
  for (int split : sweep->splits) {
    if (absl::GetFlag(FLAGS_split_connections) && split > 4) {
      absl::FPrintF(stderr, "--split_connections allows --client_split up to 4\n");
      return false;
    }
  }
  absl::StatusOr<uint64_t> latency_bytes = ParseByteSize(absl::GetFlag(FLAGS_latency_size));
  if (!latency_bytes.ok() || *latency_bytes % sizeof(float) != 0) {
    absl::FPrintF(stderr, "--latency_size: bad size\n");
    return false;
  }
  sweep->latency_bytes = *latency_bytes;
  return true;
}

// Finds ps_server, and null_server if baselines are asked for; false, having said why, if not.
bool FindServerBinaries(const std::string& argv0, Sweep* sweep) {
  absl::StatusOr<std::string> server_binary =
      transport::FindBinary(absl::GetFlag(FLAGS_server_binary), "server", "ps_server", argv0);
  if (!server_binary.ok()) {
    absl::FPrintF(stderr, "%s\n", server_binary.status().ToString());
    return false;
  }
  sweep->server_binary = *server_binary;
  if (sweep->baseline_counts.empty()) return true;
  absl::StatusOr<std::string> null_server_binary = transport::FindBinary(
      absl::GetFlag(FLAGS_null_server_binary), "bench", "null_server", argv0);
  if (!null_server_binary.ok()) {
    absl::FPrintF(stderr, "%s\n", null_server_binary.status().ToString());
    return false;
  }
  sweep->null_server_binary = *null_server_binary;
  return true;
}

transport::MeasureOptions MeasureOptionsFromFlags() {
  transport::MeasureOptions options;
  options.seconds = absl::GetFlag(FLAGS_seconds);
  options.min_iterations = absl::GetFlag(FLAGS_min_iterations);
  options.warmup_iterations = absl::GetFlag(FLAGS_warmup_iterations);
  options.latency_ops = absl::GetFlag(FLAGS_latency_ops);
  options.min_shard_elements = absl::GetFlag(FLAGS_min_shard_elements);
  options.split_connections = absl::GetFlag(FLAGS_split_connections);
  options.quiet_wait_s = absl::GetFlag(FLAGS_quiet_wait_s);
  options.quiet_max_other_cores = absl::GetFlag(FLAGS_quiet_max_other_cores);
  return options;
}

Json EnvironmentJson(const char* name) {
  const char* value = getenv(name);
  return value != nullptr ? Json(value) : Json(nullptr);
}

// Makes the glibc settings of ENVIRONMENT.md hold for this process and the servers it starts
// (unless --malloc_tuning=false); returns them for the report.
Json ApplyMallocTuning() {
  Json j;
  j["from_environment"] =
      getenv("MALLOC_MMAP_THRESHOLD_") != nullptr && getenv("MALLOC_TRIM_THRESHOLD_") != nullptr;
  if (absl::GetFlag(FLAGS_malloc_tuning)) {
    TuneMallocForTensors();  // This process: mallopt() for each variable not set.
    // The servers: the same values (32 MiB, 1 GiB) where the environment sets none.
    setenv("MALLOC_MMAP_THRESHOLD_", "33554432", /*overwrite=*/0);
    setenv("MALLOC_TRIM_THRESHOLD_", "1073741824", /*overwrite=*/0);
  }
  j["MALLOC_MMAP_THRESHOLD_"] = EnvironmentJson("MALLOC_MMAP_THRESHOLD_");
  j["MALLOC_TRIM_THRESHOLD_"] = EnvironmentJson("MALLOC_TRIM_THRESHOLD_");
  return j;
}

// Starts a group of `kind` servers per count (their pids go to `context`); false, having said
// why, if one does not start.
// With `tls_dir` (certificates of MakeLocalCa), the servers run on mutual TLS.
bool StartServerGroups(const std::string& kind, const std::string& binary,
                       const std::vector<int>& counts, const std::string& scratch_dir,
                       MeasureContext* context, std::vector<std::unique_ptr<ServerGroup>>* groups,
                       const std::string& tls_dir = "") {
  for (int count : counts) {
    transport::ServerGroupOptions options;
    options.kind = kind;
    options.binary = binary;
    options.count = count;
    options.scratch_dir = scratch_dir;
    options.unix_sockets = absl::GetFlag(FLAGS_unix_sockets);
    options.tls_dir = tls_dir;
    absl::StatusOr<std::unique_ptr<ServerGroup>> group = ServerGroup::Start(options);
    if (!group.ok()) {
      absl::FPrintF(stderr, "cannot start %d %s process(es): %s\n", count, kind,
                    group.status().ToString());
      return false;
    }
    for (pid_t pid : (*group)->pids()) context->server_pids.push_back(pid);
    groups->push_back(std::move(*group));
  }
  return true;
}

// Every size on every group with every client split; iperf3 before every size and after the last,
// each row getting the rate around its size.
bool MeasureThroughputSweep(const Sweep& sweep,
                            const std::vector<std::unique_ptr<ServerGroup>>& groups,
                            LoopbackSeries* loopback, MeasureContext* context,
                            std::vector<ThroughputResult>* throughput) {
  std::vector<size_t> size_index;  // Of each row.
  for (size_t i = 0; i < sweep.sizes.size(); ++i) {
    loopback->Measure(*context);
    for (const auto& group : groups) {
      for (int split : sweep.splits) {
        absl::StatusOr<ThroughputResult> r =
            MeasureThroughput(group.get(), sweep.sizes[i], split, context);
        if (!r.ok()) {
          absl::FPrintF(stderr, "throughput %s with %d %s failed: %s\n%s",
                        FormatByteSize(sweep.sizes[i]), group->size(), group->kind(),
                        r.status().ToString(), group->LogTails());
          return false;
        }
        absl::FPrintF(stderr,
                      "  %-7s %d %-11s %2d req  push %.2f  pull %.2f GB/s (median)  other load "
                      "%.2f cores\n",
                      FormatByteSize(sweep.sizes[i]), group->size(), group->kind(),
                      r->requests_per_op, Summarize(r->push.gbps).p50,
                      Summarize(r->pull.gbps).p50, r->cpu.other);
        throughput->push_back(std::move(*r));
        size_index.push_back(i);
      }
    }
  }
  loopback->Measure(*context);
  for (size_t k = 0; k < throughput->size(); ++k) {
    (*throughput)[k].iperf3_gbps = loopback->Around(size_index[k]);
  }
  return true;
}

// The latency of --latency_size operations on every group (none if --latency_ops is 0).
bool MeasureLatencies(const Sweep& sweep, const std::vector<std::unique_ptr<ServerGroup>>& groups,
                      MeasureContext* context, std::vector<LatencyResult>* latency) {
  if (context->options.latency_ops <= 0) return true;
  for (const auto& group : groups) {
    absl::StatusOr<LatencyResult> r = MeasureLatency(group.get(), sweep.latency_bytes, context);
    if (!r.ok()) {
      absl::FPrintF(stderr, "latency with %d %s failed: %s\n%s", group->size(), group->kind(),
                    r.status().ToString(), group->LogTails());
      return false;
    }
    latency->push_back(std::move(*r));
  }
  return true;
}

// Starts the servers, measures everything, stops them. False, having said why, on a failure.
bool MeasureAll(const Sweep& sweep, const std::string& scratch_dir, LoopbackSeries* loopback,
                Measurements* measured) {
  // Every server group runs for the whole sweep so that each size is measured for every server
  // count back to back (idle servers cost nothing measurable).
  std::vector<std::unique_ptr<ServerGroup>> groups;
  MeasureContext context;
  context.options = MeasureOptionsFromFlags();
  std::string tls_dir;  // --tls: a throw-away CA with the three identities ServerGroup uses.
  if (absl::GetFlag(FLAGS_tls)) {
    tls_dir = scratch_dir + "/tls";
    std::error_code ignored;
    std::filesystem::create_directories(tls_dir, ignored);
    absl::Status made = MakeLocalCa(
        tls_dir, {{"server", "server"}, {"coordinator", "coordinator"}, {"worker", "worker"}});
    if (!made.ok()) {
      absl::FPrintF(stderr, "--tls: %s\n", made.ToString());
      return false;
    }
  }
  return StartServerGroups("ps_server", sweep.server_binary, sweep.server_counts, scratch_dir,
                           &context, &groups) &&
         (tls_dir.empty() ||
          StartServerGroups(transport::kTlsServerKind, sweep.server_binary, sweep.server_counts,
                            scratch_dir, &context, &groups, tls_dir)) &&
         StartServerGroups("null_server", sweep.null_server_binary, sweep.baseline_counts,
                           scratch_dir, &context, &groups) &&
         MeasureThroughputSweep(sweep, groups, loopback, &context, &measured->throughput) &&
         MeasureLatencies(sweep, groups, &context, &measured->latency);
}

// Every flag value, the binaries and the malloc settings: the report's "config".
Json ConfigJson(const Sweep& sweep, const Json& malloc_settings) {
  Json config;
  config["server_binary"] = sweep.server_binary;
  config["null_server_binary"] =
      sweep.null_server_binary.empty() ? Json(nullptr) : Json(sweep.null_server_binary);
  config["baseline_servers"] = sweep.baseline_counts;
  config["client_split"] = sweep.splits;
  config["split_connections"] = absl::GetFlag(FLAGS_split_connections);
  config["tls"] = absl::GetFlag(FLAGS_tls);
  config["sizes"] = absl::GetFlag(FLAGS_sizes);
  config["servers"] = sweep.server_counts;
  config["seconds_per_direction"] = absl::GetFlag(FLAGS_seconds);
  config["min_iterations"] = absl::GetFlag(FLAGS_min_iterations);
  config["warmup_iterations"] = absl::GetFlag(FLAGS_warmup_iterations);
  config["latency_ops"] = absl::GetFlag(FLAGS_latency_ops);
  config["latency_bytes"] = sweep.latency_bytes;
  config["min_shard_elements"] = absl::GetFlag(FLAGS_min_shard_elements);
  config["consistency"] = "ASYNC";
  config["optimizer"] = absl::StrFormat("SGD lr=%g", transport::kLearningRate);
  config["quiet_wait_s"] = absl::GetFlag(FLAGS_quiet_wait_s);
  config["quiet_max_other_cores"] = absl::GetFlag(FLAGS_quiet_max_other_cores);
  config["malloc"] = malloc_settings;
  return config;
}

// --out, or bench/results/transport_<host>_<date_compact>.json; relative paths are taken from the
// directory `bazel run` was started in.
std::string ResolveOutputPath(const std::string& hostname, const std::string& date_compact) {
  std::string out = absl::GetFlag(FLAGS_out);
  if (out.empty()) {
    out = absl::StrCat("bench/results/transport_", hostname, "_", date_compact, ".json");
  }
  const char* cwd = getenv("BUILD_WORKING_DIRECTORY");  // Set by `bazel run`.
  if (!out.empty() && out[0] != '/' && cwd != nullptr) out = absl::StrCat(cwd, "/", out);
  return out;
}

// Writes the report (creating its folder) and says where; the exit code.
int WriteReport(const Json& report, const std::string& out_path) {
  std::error_code ignored;
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

int Run(const std::string& argv0) {
  const absl::Time now = absl::Now();
  const std::string date = absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", now, absl::UTCTimeZone());
  const std::string date_compact = absl::FormatTime("%Y%m%dT%H%M%SZ", now, absl::UTCTimeZone());
  const Json malloc_settings = ApplyMallocTuning();
  const std::string load_at_start = LoadAverage();

  Sweep sweep;
  if (!ParseSweepFlags(&sweep)) return 2;
  if (!FindServerBinaries(argv0, &sweep)) return 1;

  char scratch_template[] = "/tmp/transport_bench.XXXXXX";
  if (mkdtemp(scratch_template) == nullptr) {
    absl::FPrintF(stderr, "cannot create a scratch directory in /tmp\n");
    return 1;
  }
  const std::string scratch_dir = scratch_template;
  Iperf3Options iperf_options;
  iperf_options.duration = absl::Seconds(absl::GetFlag(FLAGS_iperf_seconds));
  iperf_options.scratch_dir = scratch_dir;
  LoopbackSeries loopback(absl::GetFlag(FLAGS_iperf), iperf_options);
  Measurements measured;
  if (!MeasureAll(sweep, scratch_dir, &loopback, &measured)) return 1;
  std::error_code ignored;
  std::filesystem::remove_all(scratch_dir, ignored);

  // The report; the table goes to stdout section by section.
  const std::string commit = absl::GetFlag(FLAGS_commit);
  Json machine = MachineInfo();
  machine["loadavg_at_start"] = load_at_start;
  machine["loadavg_at_end"] = LoadAverage();
  Json report;
  report["benchmark"] = "transport";
  report["date_utc"] = date;
  report["commit"] = commit.empty() ? Json(nullptr) : Json(commit);
  report["machine"] = machine;
  report["config"] = ConfigJson(sweep, malloc_settings);
  transport::PrintTitle(date, machine, commit);
  report["iperf3"] = transport::ReportLoopback(loopback, absl::GetFlag(FLAGS_iperf_seconds));
  report["throughput"] = transport::ReportThroughput(measured.throughput);
  report["latency"] = transport::ReportLatency(measured.latency);
  report["target"] = transport::ReportTarget(measured.throughput, absl::GetFlag(FLAGS_target_gbps));
  if (absl::GetFlag(FLAGS_tls)) report["tls_cost"] = transport::ReportTlsCost(measured.throughput);
  return WriteReport(report,
                     ResolveOutputPath(machine["hostname"].get<std::string>(), date_compact));
}

}  // namespace
}  // namespace psrv

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "Push/pull throughput and latency of the parameter client against local ps_server "
      "processes, beside iperf3 loopback TCP.\nUsage: transport_bench [--sizes=4K,1M] "
      "[--servers=1,2] [--tls] [--out=FILE] [--commit=SHA]");
  absl::ParseCommandLine(argc, argv);
  return psrv::Run(argv[0]);
}
