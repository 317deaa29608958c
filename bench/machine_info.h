// What a benchmark ran on, recorded in every result file: host, cores, CPU, kernel, memory, load.
#ifndef PSRV_BENCH_MACHINE_INFO_H_
#define PSRV_BENCH_MACHINE_INFO_H_

#include <nlohmann/json.hpp>

namespace psrv {

// {"hostname", "nproc", "cpu_model", "kernel", "mem_total", "loadavg_at_start"}.
nlohmann::ordered_json MachineInfo();

}  // namespace psrv

#endif  // PSRV_BENCH_MACHINE_INFO_H_
