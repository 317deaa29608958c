// One job on a fresh local cluster (psctl local's processes), for the benchmarks that train
// through the whole system.
#ifndef PSRV_BENCH_LOCAL_JOB_H_
#define PSRV_BENCH_LOCAL_JOB_H_

#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "client/local_cluster.h"
#include "proto/job.pb.h"

namespace psrv {

// Starts spec.num_servers() servers and spec.num_workers() workers (each with `worker_args`, and
// worker i also with per_worker_args[i] if there is one)
// logging under /tmp/<stem>_<pid>_<job name>, submits `spec`, calls `on_status` with every status
// the coordinator streams (and the cluster, e.g. to read its metrics), stops the cluster and
// returns the final status. INTERNAL, naming the log folder, unless the job SUCCEEDED.
absl::StatusOr<JobStatus> RunLocalJob(
    const LocalBinaries& binaries, const JobSpec& spec, const std::string& stem,
    const std::vector<std::string>& worker_args,
    const std::function<void(const JobStatus&, LocalCluster*)>& on_status,
    const std::vector<std::vector<std::string>>& per_worker_args = {});

}  // namespace psrv

#endif  // PSRV_BENCH_LOCAL_JOB_H_
