#include "bench/result_file.h"

#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <iostream>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "bench/machine_info.h"

namespace psrv {

std::string FromWorkspace(const std::string& path) {
  const char* root = std::getenv("BUILD_WORKSPACE_DIRECTORY");
  if (path.empty() || path[0] == '/' || root == nullptr) return path;
  return absl::StrCat(root, "/", path);
}

nlohmann::ordered_json ResultHeader(const std::string& benchmark, const std::string& commit) {
  nlohmann::ordered_json header;
  header["benchmark"] = benchmark;
  header["date"] = absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", absl::Now(), absl::UTCTimeZone());
  header["commit"] = commit;
  header["machine"] = MachineInfo();
  return header;
}

int WriteResult(const nlohmann::ordered_json& report, const std::string& out,
                const std::string& name) {
  std::string path = out;
  if (path.empty()) {
    char host[256] = {0};
    gethostname(host, sizeof(host) - 1);
    path = absl::StrCat("bench/results/", name, "_", host, ".json");
  }
  path = FromWorkspace(path);
  std::ofstream file(path);
  file << report.dump(2) << "\n";
  if (!file) {
    std::cerr << "could not write " << path << std::endl;
    return 1;
  }
  std::cout << "wrote " << path << std::endl;
  return 0;
}

}  // namespace psrv
