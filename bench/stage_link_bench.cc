// The link between two pipeline stages (worker/pipeline/stage_service.h) on loopback: a
// GrpcSendLink streams activation tensors to a StageService, an InboxLink takes them out of the
// inbox, as two workers' stages do. Measures GB/s of tensor data (fp32 bytes a stage hands over)
// for several tensor sizes, FP32 and BF16 on the wire, against loopback TCP measured by iperf3 in
// the same run, and the CPU time this process (sender and receiver together) spends per GB, which
// a busy machine disturbs less than the rate. Results: bench/results/stage_link_<host>.json.
#include <sys/resource.h>

#include <algorithm>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "bench/iperf3_loopback.h"
#include "bench/result_file.h"
#include "bench/sample_stats.h"
#include "common/channel.h"
#include "common/grpc_server.h"
#include "worker/pipeline/stage_service.h"

ABSL_FLAG(std::string, sizes, "65536,1048576,16777216",
          "Tensor sizes in fp32 bytes (B x T x C x 4; 1 MiB is a 4 x 256 x 256 micro-batch).");
ABSL_FLAG(int, bytes_per_round, 64 << 20, "Tensor bytes sent per timed round.");
ABSL_FLAG(int, rounds, 7, "Timed rounds per row (after one warm-up round); the median is kept.");
ABSL_FLAG(bool, iperf, true, "Also measure loopback TCP with iperf3 (null if it is missing).");
ABSL_FLAG(std::string, out, "", "JSON output path (default bench/results/stage_link_<host>.json).");
ABSL_FLAG(std::string, commit, "", "Git commit measured (recorded in the JSON).");

namespace psrv {
namespace {

using Json = nlohmann::ordered_json;

// User + system CPU seconds of this process so far.
double ProcessCpuSeconds() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  auto seconds = [](const timeval& t) { return t.tv_sec + t.tv_usec / 1e6; };
  return seconds(usage.ru_utime) + seconds(usage.ru_stime);
}

struct RoundTime {
  double seconds = 0;
  double cpu_seconds = 0;
};

// One round: `count` tensors of `elements` through a fresh stream (as one step's micro-batches
// go); seconds from the first Send to the last tensor taken out of the inbox.
RoundTime Round(const std::shared_ptr<grpc::Channel>& channel, StageInbox* inbox, DType dtype,
             size_t elements, int count, uint64_t step) {
  const StageStreamKey key{"bench", 1, 0, 1, StageTensor::ACTIVATIONS, 0};
  std::vector<float> tensor(elements, 0.5f);
  GrpcSendLink send(channel, key, dtype);
  InboxLink receive(inbox, key, absl::Seconds(60));
  send.BeginStep(step);
  receive.BeginStep(step);
  const absl::Time start = absl::Now();
  const double cpu_start = ProcessCpuSeconds();
  for (int m = 0; m < count; ++m) {
    absl::Status sent = send.Send(m, tensor);  // (A copy, as a stage hands over its output.)
    if (!sent.ok()) {
      std::cerr << sent << "\n";
      std::exit(1);
    }
  }
  for (int m = 0; m < count; ++m) {
    absl::StatusOr<std::vector<float>> got = receive.Receive(m);
    if (!got.ok() || got->size() != elements) {
      std::cerr << "receive: " << got.status() << "\n";
      std::exit(1);
    }
  }
  return {absl::ToDoubleSeconds(absl::Now() - start), ProcessCpuSeconds() - cpu_start};
}

int Main() {
  StageInbox inbox;
  StageService service(&inbox);
  absl::StatusOr<RunningServer> server = StartGrpcServer("127.0.0.1", 0, {&service}, "");
  if (!server.ok()) {
    std::cerr << server.status() << "\n";
    return 1;
  }
  std::shared_ptr<grpc::Channel> channel = CreateChannel(absl::StrCat("127.0.0.1:", server->port));

  Json rows = Json::array();
  uint64_t step = 0;
  for (absl::string_view size_text : absl::StrSplit(absl::GetFlag(FLAGS_sizes), ',')) {
    const size_t bytes = std::stoull(std::string(size_text));
    const size_t elements = std::max<size_t>(1, bytes / sizeof(float));
    const int count = std::max<int>(1, absl::GetFlag(FLAGS_bytes_per_round) / (elements * 4));
    for (DType dtype : {FP32, BF16}) {
      Round(channel, &inbox, dtype, elements, count, ++step);  // Warm-up.
      std::vector<double> gbps, cpu_per_gb;
      const double gb = static_cast<double>(elements) * sizeof(float) * count / 1e9;
      for (int r = 0; r < absl::GetFlag(FLAGS_rounds); ++r) {
        const RoundTime t = Round(channel, &inbox, dtype, elements, count, ++step);
        gbps.push_back(gb / t.seconds);
        cpu_per_gb.push_back(t.cpu_seconds / gb);
      }
      const SampleSummary s = Summarize(gbps);
      const SampleSummary cpu = Summarize(cpu_per_gb);
      Json row;
      row["tensor_fp32_bytes"] = elements * sizeof(float);
      row["wire_dtype"] = DType_Name(dtype);
      row["tensors_per_round"] = count;
      row["rounds"] = gbps.size();
      row["tensor_gbps_p50"] = s.p50;
      row["tensor_gbps_min"] = s.min;
      row["tensor_gbps_max"] = s.max;
      row["cpu_seconds_per_gb_p50"] = cpu.p50;
      std::cout << DType_Name(dtype) << " " << elements * 4 << " B: " << s.p50
                << " GB/s of fp32 tensor data, " << cpu.p50 << " CPU s/GB (medians of "
                << gbps.size() << ")\n";
      rows.push_back(row);
    }
  }
  server->server->Shutdown();

  Json report = ResultHeader("stage_link", absl::GetFlag(FLAGS_commit));
  report["what"] =
      "GrpcSendLink -> StageService -> InboxLink on 127.0.0.1; GB/s of fp32 tensor bytes handed "
      "over (BF16 puts half of them on the wire)";
  report["rows"] = rows;
  if (absl::GetFlag(FLAGS_iperf)) {
    absl::StatusOr<double> iperf = MeasureIperf3Loopback(Iperf3Options());
    if (iperf.ok()) {
      report["iperf3_loopback_gbps"] = *iperf;
      std::cout << "iperf3 loopback: " << *iperf << " GB/s\n";
      for (Json& row : report["rows"]) {
        row["ratio_to_iperf3"] = row["tensor_gbps_p50"].get<double>() / *iperf;
      }
    } else {
      std::cerr << "iperf3: " << iperf.status() << "\n";
      report["iperf3_loopback_gbps"] = nullptr;
    }
  }
  return WriteResult(report, absl::GetFlag(FLAGS_out), "stage_link");
}

}  // namespace
}  // namespace psrv

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "Measures the worker-to-worker stage link (StageExchange) on loopback against iperf3.\n"
      "Usage: bazel run -c opt //bench:stage_link_bench -- [--sizes=...] [--out=FILE]");
  absl::ParseCommandLine(argc, argv);
  return psrv::Main();
}
