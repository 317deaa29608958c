// Where the machine's CPU time went during a measurement: this process, the server processes it
// started, and everything else (other users of a shared machine), from /proc/stat and
// /proc/<pid>/stat. Lets a benchmark report how much of the machine it actually had.
#ifndef PSRV_BENCH_CPU_USAGE_H_
#define PSRV_BENCH_CPU_USAGE_H_

#include <sys/types.h>

#include <cstdint>
#include <vector>

#include "absl/time/time.h"

namespace psrv {

// Cumulative counters, in clock ticks (USER_HZ), at one moment.
struct CpuSnapshot {
  absl::Time when;
  uint64_t machine_busy = 0;   // All CPUs, everything but idle and iowait.
  uint64_t machine_total = 0;  // All CPUs.
  uint64_t machine_irq = 0;    // All CPUs, irq + softirq (loopback TCP receive work lands here).
  uint64_t machine_steal = 0;  // All CPUs, time the hypervisor gave to other guests.
  uint64_t self = 0;           // This process, all threads (user + system).
  uint64_t watched = 0;        // The watched processes (user + system).
};

// Average number of cores busy between two snapshots, by whom.
struct CpuCores {
  double self = 0;
  double watched = 0;
  double irq = 0;    // Interrupt and softirq time, whoever it served (mostly loopback TCP here).
  double steal = 0;  // Taken by the hypervisor for other virtual machines.
  double other = 0;  // Busy, but none of the above (never negative): other users of the machine.
  double idle = 0;
};

// Reads the counters; `watched` are other processes to account separately (e.g. servers).
CpuSnapshot TakeCpuSnapshot(const std::vector<pid_t>& watched);

CpuCores CoresBetween(const CpuSnapshot& begin, const CpuSnapshot& end);

// Samples `window`s for up to `max_wait` until "other" load over one is at most `max_other_cores`.
// Returns the time spent waiting (0 if the first window was already quiet).
absl::Duration WaitForQuietMachine(const std::vector<pid_t>& watched, double max_other_cores,
                                   absl::Duration max_wait,
                                   absl::Duration window = absl::Milliseconds(300));

}  // namespace psrv

#endif  // PSRV_BENCH_CPU_USAGE_H_
