// /metrics and /healthz for every process, and the process_* metrics.
#include "common/monitoring.h"

#include <dirent.h>
#include <sys/resource.h>
#include <unistd.h>

#include <fstream>
#include <sstream>
#include <utility>
#include <vector>

#include <glog/logging.h>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/subprocess.h"

namespace psrv {
namespace {

std::string ReadWhole(const char* path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// Fields of /proc/self/stat after the command name: fields[0] is field 3 (state) of proc(5).
std::vector<std::string> StatFields() {
  const std::string stat = ReadWhole("/proc/self/stat");
  const size_t paren = stat.rfind(')');
  if (paren == std::string::npos) return {};
  return absl::StrSplit(stat.substr(paren + 2), ' ', absl::SkipEmpty());
}

double Field(const std::vector<std::string>& fields, int number) {
  double value = 0;
  if (number - 3 < static_cast<int>(fields.size())) {
    (void)absl::SimpleAtod(fields[number - 3], &value);
  }
  return value;
}

double BootTimeSeconds() {
  std::istringstream in(ReadWhole("/proc/stat"));
  std::string line;
  while (std::getline(in, line)) {
    double value;
    if (line.rfind("btime ", 0) == 0 && absl::SimpleAtod(line.substr(6), &value)) return value;
  }
  return 0;
}

int OpenFds() {
  DIR* dir = opendir("/proc/self/fd");
  if (dir == nullptr) return 0;
  int count = 0;
  while (dirent* entry = readdir(dir)) {
    if (entry->d_name[0] != '.') ++count;
  }
  closedir(dir);
  return count - 1;  // Not the descriptor of the listing itself.
}

}  // namespace

void AddProcessMetrics(MetricsRegistry* registry) {
  const double ticks = static_cast<double>(sysconf(_SC_CLK_TCK));
  const double page = static_cast<double>(sysconf(_SC_PAGESIZE));
  const double boot = BootTimeSeconds();
  registry->AddCollector([ticks, page, boot](CollectedMetrics* out) {
    const std::vector<std::string> fields = StatFields();
    if (fields.empty()) return;
    out->AddCounter("process_cpu_seconds_total", "User and system CPU time spent, in seconds.")
        ->Add({}, (Field(fields, 14) + Field(fields, 15)) / ticks);
    out->AddGauge("process_resident_memory_bytes", "Resident memory size in bytes.")
        ->Add({}, Field(fields, 24) * page);
    out->AddGauge("process_virtual_memory_bytes", "Virtual memory size in bytes.")
        ->Add({}, Field(fields, 23));
    out->AddGauge("process_threads", "Threads of the process.")->Add({}, Field(fields, 20));
    out->AddGauge("process_start_time_seconds",
                  "Start time of the process since the Unix epoch, in seconds.")
        ->Add({}, boot + Field(fields, 22) / ticks);
    out->AddGauge("process_open_fds", "Open file descriptors.")->Add({}, OpenFds());
    rlimit limit = {};
    if (getrlimit(RLIMIT_NOFILE, &limit) == 0) {
      out->AddGauge("process_max_fds", "Maximum number of open file descriptors.")
          ->Add({}, static_cast<double>(limit.rlim_cur));
    }
  });
}

absl::StatusOr<std::unique_ptr<HttpServer>> StartMonitoring(const MonitoringOptions& options,
                                                           MetricsRegistry* registry) {
  const int port = options.port.value_or(options.default_port);
  if (port < 0) return nullptr;
  AddProcessMetrics(registry);
  std::map<std::string, HttpHandler> pages = options.pages;
  pages["/metrics"] = [registry](const HttpRequest&) {
    return HttpResponse{200, kMetricsContentType, registry->Render()};
  };
  pages["/healthz"] = [](const HttpRequest&) { return HttpResponse{200, "text/plain", "ok\n"}; };
  HttpServer::Options http;
  http.host = options.host;
  http.port = port;
  http.bearer_token = options.bearer_token;
  http.open_paths = {"/healthz"};  // Liveness probes carry no token.
  absl::StatusOr<std::unique_ptr<HttpServer>> server = HttpServer::Start(http, std::move(pages));
  if (!server.ok()) {
    if (!options.port.has_value()) {
      LOG(WARNING) << server.status().message() << "; running without /metrics (pass "
                   << "--metrics_port=0 for any free port)";
      return nullptr;
    }
    return server.status();
  }
  if (!options.port_file.empty()) {
    absl::Status written = WritePortFile(options.port_file, (*server)->port());
    if (!written.ok()) return written;
  }
  return server;
}

}  // namespace psrv
