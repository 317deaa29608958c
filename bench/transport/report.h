// transport_bench's results, twice: the table on stdout and the sections of the JSON report
// (bench/README.md, "Output"). Each function prints its part and returns its JSON.
#ifndef PSRV_BENCH_TRANSPORT_REPORT_H_
#define PSRV_BENCH_TRANSPORT_REPORT_H_

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "bench/transport/measure.h"

namespace psrv {
namespace transport {

// Prints the title: date, host and cores from `machine` (MachineInfo), commit ("unknown" if empty).
void PrintTitle(const std::string& date, const nlohmann::ordered_json& machine,
                const std::string& commit);

// Prints the iperf3 summary; returns the "iperf3" section. `iperf_seconds` is iperf3's -t.
nlohmann::ordered_json ReportLoopback(const LoopbackSeries& loopback, int iperf_seconds);

// Prints the legend and the throughput table; returns the "throughput" section.
nlohmann::ordered_json ReportThroughput(const std::vector<ThroughputResult>& throughput);

// Prints one line per latency measurement; returns the "latency" section.
nlohmann::ordered_json ReportLatency(const std::vector<LatencyResult>& latency);

// Whether every 1-16 MiB size with one ps_server and no client split reached `target_gbps` each
// way (medians). Prints the verdict if any such row was measured; returns the "target" section.
nlohmann::ordered_json ReportTarget(const std::vector<ThroughputResult>& throughput,
                                    double target_gbps);

// The server kind of transport_bench --tls groups: ps_server on mutual TLS.
inline constexpr char kTlsServerKind[] = "ps_server+tls";

// For each throughput row of kTlsServerKind, the plaintext ps_server row of the same size, server
// count and split: medians each way and TLS/plaintext ratios. Prints them; returns "tls_cost".
nlohmann::ordered_json ReportTlsCost(const std::vector<ThroughputResult>& throughput);

}  // namespace transport
}  // namespace psrv

#endif  // PSRV_BENCH_TRANSPORT_REPORT_H_
