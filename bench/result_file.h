// Where benchmarks read inputs and write their JSON results when started with `bazel run`: paths
// relative to the repository root, results in bench/results/<name>_<host>.json by default.
#ifndef PSRV_BENCH_RESULT_FILE_H_
#define PSRV_BENCH_RESULT_FILE_H_

#include <string>

#include <nlohmann/json.hpp>

namespace psrv {

// `path` resolved against the directory `bazel run` was started in (BUILD_WORKSPACE_DIRECTORY);
// absolute paths and runs outside Bazel keep it as it is.
std::string FromWorkspace(const std::string& path);

// The fields every result file starts with: benchmark, date (UTC), commit, machine (MachineInfo).
nlohmann::ordered_json ResultHeader(const std::string& benchmark, const std::string& commit);

// Writes `report` (indented) to `out`, or to bench/results/<name>_<host>.json if `out` is empty,
// both resolved with FromWorkspace, and says where on stdout. Returns the benchmark's exit code:
// 0, or 1 (with a message on stderr) if the file could not be written.
int WriteResult(const nlohmann::ordered_json& report, const std::string& out,
                const std::string& name);

}  // namespace psrv

#endif  // PSRV_BENCH_RESULT_FILE_H_
