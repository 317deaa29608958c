#include "bench/machine_info.h"

#include <sys/utsname.h>
#include <unistd.h>

#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/strings/ascii.h"

namespace psrv {
namespace {

// The value after "<key>:" on the first line of `path` that starts with `key`, or "unknown".
std::string Field(const std::string& path, const std::string& key) {
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    if (absl::StartsWith(line, key)) {
      const size_t colon = line.find(':');
      if (colon != std::string::npos) {
        return std::string(absl::StripAsciiWhitespace(line.substr(colon + 1)));
      }
    }
  }
  return "unknown";
}

}  // namespace

nlohmann::ordered_json MachineInfo() {
  nlohmann::ordered_json machine;
  char host[256] = {0};
  gethostname(host, sizeof(host) - 1);
  machine["hostname"] = host;
  machine["nproc"] = sysconf(_SC_NPROCESSORS_ONLN);
  machine["cpu_model"] = Field("/proc/cpuinfo", "model name");
  utsname u;
  if (uname(&u) == 0) {
    machine["kernel"] = absl::StrCat(u.sysname, " ", u.release, " ", u.version, " ", u.machine);
  }
  machine["mem_total"] = Field("/proc/meminfo", "MemTotal");
  std::ifstream loadavg("/proc/loadavg");
  std::string load;
  std::getline(loadavg, load);
  machine["loadavg_at_start"] = load;
  return machine;
}

std::string LoadAverage() {
  std::ifstream in("/proc/loadavg");
  std::string line;
  std::getline(in, line);
  std::vector<std::string> fields = absl::StrSplit(line, ' ', absl::SkipEmpty());
  if (fields.size() < 3) return "unknown";
  return absl::StrCat(fields[0], " ", fields[1], " ", fields[2]);
}

}  // namespace psrv
