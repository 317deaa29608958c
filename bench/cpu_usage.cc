#include "bench/cpu_usage.h"

#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <sstream>
#include <string>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"

namespace psrv {
namespace {

// utime + stime of a process from /proc/<pid>/stat (fields 14 and 15; the command name in
// parentheses may contain spaces, so fields are counted after the last ')').
uint64_t ProcessTicks(const std::string& stat_path) {
  std::ifstream in(stat_path);
  std::string line;
  if (!std::getline(in, line)) return 0;
  const size_t paren = line.rfind(')');
  if (paren == std::string::npos) return 0;
  std::vector<std::string> fields =
      absl::StrSplit(line.substr(paren + 1), ' ', absl::SkipEmpty());
  // After ')': state(3) ppid(4) ... utime(14) stime(15); index = field - 3.
  uint64_t utime = 0, stime = 0;
  if (fields.size() < 13 || !absl::SimpleAtoi(fields[11], &utime) ||
      !absl::SimpleAtoi(fields[12], &stime)) {
    return 0;
  }
  return utime + stime;
}

}  // namespace

CpuSnapshot TakeCpuSnapshot(const std::vector<pid_t>& watched) {
  CpuSnapshot s;
  s.when = absl::Now();
  std::ifstream in("/proc/stat");
  std::string line;
  if (std::getline(in, line) && line.rfind("cpu ", 0) == 0) {
    std::vector<std::string> fields = absl::StrSplit(line, ' ', absl::SkipEmpty());
    // cpu user nice system idle iowait irq softirq steal guest guest_nice (guest is in user).
    for (size_t i = 1; i < fields.size() && i <= 8; ++i) {
      uint64_t v = 0;
      if (!absl::SimpleAtoi(fields[i], &v)) continue;
      s.machine_total += v;
      if (i != 4 && i != 5) s.machine_busy += v;
      if (i == 6 || i == 7) s.machine_irq += v;
      if (i == 8) s.machine_steal += v;
    }
  }
  s.self = ProcessTicks("/proc/self/stat");
  for (pid_t pid : watched) s.watched += ProcessTicks(absl::StrCat("/proc/", pid, "/stat"));
  return s;
}

CpuCores CoresBetween(const CpuSnapshot& begin, const CpuSnapshot& end) {
  CpuCores c;
  const double seconds = absl::ToDoubleSeconds(end.when - begin.when);
  const double hz = static_cast<double>(sysconf(_SC_CLK_TCK));
  if (seconds <= 0 || hz <= 0) return c;
  auto cores = [&](uint64_t a, uint64_t b) {
    return b >= a ? static_cast<double>(b - a) / hz / seconds : 0.0;
  };
  c.self = cores(begin.self, end.self);
  c.watched = cores(begin.watched, end.watched);
  const double busy = cores(begin.machine_busy, end.machine_busy);
  c.irq = cores(begin.machine_irq, end.machine_irq);
  c.steal = cores(begin.machine_steal, end.machine_steal);
  c.other = std::max(0.0, busy - c.irq - c.steal - c.self - c.watched);
  c.idle = std::max(0.0, cores(begin.machine_total, end.machine_total) - busy);
  return c;
}

absl::Duration WaitForQuietMachine(const std::vector<pid_t>& watched, double max_other_cores,
                                   absl::Duration max_wait, absl::Duration window) {
  const absl::Time start = absl::Now();
  for (bool first = true;; first = false) {
    const CpuSnapshot a = TakeCpuSnapshot(watched);
    absl::SleepFor(window);
    const CpuSnapshot b = TakeCpuSnapshot(watched);
    const absl::Duration waited = absl::Now() - start;
    if (CoresBetween(a, b).other <= max_other_cores || waited >= max_wait) {
      return first ? absl::ZeroDuration() : waited;
    }
  }
}

}  // namespace psrv
