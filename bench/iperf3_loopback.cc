#include "bench/iperf3_loopback.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "common/subprocess.h"

namespace psrv {
namespace {

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

// True once something listens on 127.0.0.1:port (or the IPv6 wildcard). Reading /proc/net/tcp*
// avoids probing the port: a probe connection would use up iperf3's single (-1) test.
bool IsListening(int port) {
  const std::string port_hex = absl::StrFormat(":%04X ", port);
  for (const char* table : {"/proc/net/tcp", "/proc/net/tcp6"}) {
    std::ifstream in(table);
    std::string line;
    std::getline(in, line);  // Header.
    while (std::getline(in, line)) {
      std::vector<std::string> fields = absl::StrSplit(line, ' ', absl::SkipEmpty());
      // fields: sl local_address rem_address st ...; st 0A is LISTEN.
      if (fields.size() > 3 && fields[3] == "0A" &&
          absl::StrCat(fields[1], " ").find(port_hex) != std::string::npos) {
        return true;
      }
    }
  }
  return false;
}

}  // namespace

absl::StatusOr<std::string> FindInPath(const std::string& name) {
  const char* path = std::getenv("PATH");
  for (absl::string_view dir :
       absl::StrSplit(path != nullptr ? path : "/usr/local/bin:/usr/bin:/bin", ':',
                      absl::SkipEmpty())) {
    const std::string candidate = absl::StrCat(dir, "/", name);
    if (access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return absl::NotFoundError(absl::StrCat(name, " is not installed (not found in $PATH)"));
}

absl::StatusOr<int> PickFreePort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return absl::InternalError("socket() failed");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof(addr);
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    close(fd);
    return absl::InternalError("cannot bind a free port on 127.0.0.1");
  }
  close(fd);
  return ntohs(addr.sin_port);
}

absl::StatusOr<double> MeasureIperf3Loopback(const Iperf3Options& options) {
  std::string binary = options.binary;
  if (binary.empty()) {
    absl::StatusOr<std::string> found = FindInPath("iperf3");
    if (!found.ok()) return found.status();
    binary = *found;
  }
  absl::StatusOr<int> port = PickFreePort();
  if (!port.ok()) return port.status();
  const std::string tag = absl::StrCat(options.scratch_dir, "/iperf3_", getpid(), "_", *port);
  const std::string server_log = tag + "_server.log";
  const std::string client_out = tag + "_client.json";
  std::remove(server_log.c_str());
  std::remove(client_out.c_str());

  Subprocess server;
  absl::Status started = server.Start(
      {binary, "-s", "-1", "-B", "127.0.0.1", "-p", absl::StrCat(*port)}, server_log);
  if (!started.ok()) return started;
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (!IsListening(*port)) {
    if (!server.running()) {
      return absl::UnavailableError(
          absl::StrCat("iperf3 server exited early: ", ReadFile(server_log)));
    }
    if (absl::Now() > deadline) {
      return absl::UnavailableError(absl::StrCat("iperf3 server not listening on port ", *port));
    }
    absl::SleepFor(absl::Milliseconds(10));
  }

  const double seconds = absl::ToDoubleSeconds(options.duration);
  Subprocess client;
  started = client.Start({binary, "-c", "127.0.0.1", "-p", absl::StrCat(*port), "-l",
                          options.block_size, "-t", absl::StrFormat("%g", seconds), "-J"},
                         client_out);
  if (!started.ok()) return started;
  absl::StatusOr<int> code = client.Wait(options.duration + absl::Seconds(30));
  if (!code.ok()) {
    client.Stop(absl::Seconds(1));
    return absl::UnavailableError(absl::StrCat("iperf3 client hung: ", code.status().message()));
  }
  server.Stop(absl::Seconds(2));
  const std::string output = ReadFile(client_out);
  std::remove(server_log.c_str());
  std::remove(client_out.c_str());

  const size_t start = output.find('{');
  if (start == std::string::npos) {
    return absl::InternalError(absl::StrCat("iperf3 printed no JSON (exit ", *code, "): ", output));
  }
  nlohmann::json report = nlohmann::json::parse(output.substr(start), nullptr, false);
  if (report.is_discarded()) {
    return absl::InternalError(absl::StrCat("cannot parse iperf3 JSON: ", output.substr(0, 500)));
  }
  if (report.contains("error")) {
    return absl::UnavailableError(absl::StrCat("iperf3: ", report["error"].dump()));
  }
  const nlohmann::json* bps = nullptr;
  if (report.contains("end") && report["end"].contains("sum_received") &&
      report["end"]["sum_received"].contains("bits_per_second")) {
    bps = &report["end"]["sum_received"]["bits_per_second"];
  }
  if (bps == nullptr || !bps->is_number()) {
    return absl::InternalError("iperf3 JSON has no end.sum_received.bits_per_second");
  }
  return bps->get<double>() / 8.0 / 1e9;
}

}  // namespace psrv
