// What a benchmark ran on, recorded in every result file: host, cores, CPU, kernel, memory, load.
#ifndef PSRV_BENCH_MACHINE_INFO_H_
#define PSRV_BENCH_MACHINE_INFO_H_

#include <string>

#include <nlohmann/json.hpp>

namespace psrv {

// {"hostname", "nproc", "cpu_model", "kernel", "mem_total", "loadavg_at_start"}.
nlohmann::ordered_json MachineInfo();

// The 1, 5 and 15 minute load averages, e.g. "0.52 0.61 0.70" ("unknown" if /proc/loadavg cannot
// be read): other work on the machine skews every number.
std::string LoadAverage();

}  // namespace psrv

#endif  // PSRV_BENCH_MACHINE_INFO_H_
