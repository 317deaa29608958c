#include "bench/transport/report.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "bench/sample_stats.h"

namespace psrv {
namespace transport {
namespace {

using Json = nlohmann::ordered_json;

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

// The fields a throughput and a latency row start with.
Json RowJson(const std::string& server_kind, uint64_t bytes, int servers, int shards) {
  Json j;
  j["server"] = server_kind;
  j["size"] = FormatByteSize(bytes);
  j["bytes"] = bytes;
  j["servers"] = servers;
  j["shards"] = shards;
  return j;
}

}  // namespace

void PrintTitle(const std::string& date, const Json& machine, const std::string& commit) {
  absl::PrintF("\nTransport benchmark  %s  %s (%d cores)  commit %s\n", date,
               machine["hostname"].get<std::string>(), machine["nproc"].get<long>(),
               commit.empty() ? "unknown" : commit);
}

Json ReportLoopback(const LoopbackSeries& loopback, int iperf_seconds) {
  std::vector<double> measured;
  for (double v : loopback.samples()) {
    if (v > 0) measured.push_back(v);
  }
  const double median = measured.empty() ? 0 : Quantile(measured, 0.5);
  if (!measured.empty()) {
    absl::PrintF("iperf3 loopback TCP (1 stream, -l 1M): median %.2f GB/s of %s\n", median,
                 absl::StrJoin(measured, " ", [](std::string* out, double v) {
                   absl::StrAppend(out, absl::StrFormat("%.2f", v));
                 }));
  } else {
    absl::PrintF("iperf3 loopback TCP: not measured (%s)\n",
                 loopback.enabled() ? loopback.failure() : "--iperf=false");
  }

  Json iperf;
  iperf["available"] = !measured.empty();
  iperf["median_gbps"] = measured.empty() ? Json(nullptr) : Json(median);
  iperf["samples_gbps"] = measured;
  iperf["command"] =
      absl::StrCat("iperf3 -c 127.0.0.1 -p PORT -l 1M -t ", iperf_seconds,
                   " -J (server: iperf3 -s -1 -B 127.0.0.1 -p PORT); GB/s = "
                   "end.sum_received.bits_per_second / 8e9; run before every size and after the "
                   "last");
  if (!loopback.enabled()) {
    iperf["note"] = "not measured (--iperf=false)";
  } else if (!loopback.failure().empty()) {
    iperf["note"] = loopback.failure();
  }
  return iperf;
}

Json ReportThroughput(const std::vector<ThroughputResult>& throughput) {
  absl::PrintF(
      "GB/s = 1e9 bytes of tensor payload per second, median [p10-p90] per operation; "
      "x iperf3 = median / iperf3 around that size; other = cores used by other processes\n\n");
  absl::PrintF("%-7s %-13s %6s %4s  %-19s %-19s %6s %6s %6s %6s %6s\n", "size", "servers",
               "shards", "reqs", "push GB/s", "pull GB/s", "iperf3", "push x", "pull x", "other",
               "iters");
  Json rows = Json::array();
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
    Json j = RowJson(r.server_kind, r.bytes, r.servers, r.shards);
    j["client_split"] = r.split;
    j["requests_per_op"] = r.requests_per_op;
    j["push"] = DirectionJson(r.push);
    j["pull"] = DirectionJson(r.pull);
    j["iperf3_gbps"] = r.iperf3_gbps > 0 ? Json(r.iperf3_gbps) : Json(nullptr);
    j["push_ratio_to_iperf3"] = RatioJson(push.p50, r.iperf3_gbps);
    j["pull_ratio_to_iperf3"] = RatioJson(pull.p50, r.iperf3_gbps);
    j["cpu_cores"] = CpuJson(r.cpu);
    j["waited_for_quiet_s"] = r.waited_s;
    rows.push_back(j);
  }
  absl::PrintF("\n");
  return rows;
}

Json ReportLatency(const std::vector<LatencyResult>& latency) {
  Json rows = Json::array();
  for (const LatencyResult& r : latency) {
    const SampleSummary push = Summarize(r.push_us);
    const SampleSummary pull = Summarize(r.pull_us);
    absl::PrintF(
        "%s latency, %s (%d shard%s): push p50 %.0f us  p99 %.0f us | pull p50 %.0f us  "
        "p99 %.0f us  (%d ops each, other load %.2f cores)\n",
        FormatByteSize(r.bytes), ServersLabel(r.servers, r.server_kind), r.shards,
        r.shards == 1 ? "" : "s", push.p50, push.p99, pull.p50, pull.p99, push.count, r.cpu.other);
    Json j = RowJson(r.server_kind, r.bytes, r.servers, r.shards);
    j["push"] = LatencyJson(r.push_us);
    j["pull"] = LatencyJson(r.pull_us);
    j["cpu_cores"] = CpuJson(r.cpu);
    j["waited_for_quiet_s"] = r.waited_s;
    rows.push_back(j);
  }
  return rows;
}

Json ReportTarget(const std::vector<ThroughputResult>& throughput, double target_gbps) {
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
  Json target;
  target["description"] =
      "median >= target_gbps each way for every measured size in 1-16 MiB, 1 ps_server, the "
      "worker's own requests (client_split 1)";
  target["target_gbps"] = target_gbps;
  if (worst_push >= 0) {
    const bool met = worst_push >= target_gbps && worst_pull >= target_gbps;
    target["worst_push_gbps"] = worst_push;
    target["worst_pull_gbps"] = worst_pull;
    target["met"] = met;
    absl::PrintF("\nTarget >= %.2f GB/s each way, 1-16 MiB, 1 server: %s (worst median: push "
                 "%.2f, pull %.2f GB/s)\n",
                 target_gbps, met ? "MET" : "MISSED", worst_push, worst_pull);
  } else {
    target["met"] = nullptr;
    target["note"] = "no 1-16 MiB size with 1 server was measured";
  }
  return target;
}

Json ReportTlsCost(const std::vector<ThroughputResult>& throughput) {
  Json rows = Json::array();
  absl::PrintF("\nWhat mutual TLS costs (medians, GB/s; ratio TLS/plaintext)\n%-7s %-8s %-5s "
               "%-25s %-25s\n",
               "size", "servers", "split", "push plain  tls  ratio", "pull plain  tls  ratio");
  for (const ThroughputResult& tls : throughput) {
    if (tls.server_kind != kTlsServerKind) continue;
    for (const ThroughputResult& plain : throughput) {
      if (plain.server_kind != "ps_server" || plain.bytes != tls.bytes ||
          plain.servers != tls.servers || plain.split != tls.split) {
        continue;
      }
      const double push_plain = Summarize(plain.push.gbps).p50;
      const double push_tls = Summarize(tls.push.gbps).p50;
      const double pull_plain = Summarize(plain.pull.gbps).p50;
      const double pull_tls = Summarize(tls.pull.gbps).p50;
      absl::PrintF("%-7s %-8d %-5d %6.2f %6.2f %6s       %6.2f %6.2f %6s\n",
                   FormatByteSize(tls.bytes), tls.servers, tls.split, push_plain, push_tls,
                   Ratio(push_tls, push_plain), pull_plain, pull_tls, Ratio(pull_tls, pull_plain));
      Json j = RowJson(kTlsServerKind, tls.bytes, tls.servers, tls.shards);
      j["client_split"] = tls.split;
      j["push_median_gbps"] = {{"plaintext", push_plain}, {"tls", push_tls}};
      j["pull_median_gbps"] = {{"plaintext", pull_plain}, {"tls", pull_tls}};
      j["push_ratio_tls_over_plaintext"] = RatioJson(push_tls, push_plain);
      j["pull_ratio_tls_over_plaintext"] = RatioJson(pull_tls, pull_plain);
      rows.push_back(j);
    }
  }
  return rows;
}

}  // namespace transport
}  // namespace psrv
