#include "bench/local_job.h"

#include <unistd.h>

#include <cstdlib>
#include <iostream>

#include "absl/strings/str_cat.h"
#include "client/coordinator_client.h"

namespace psrv {

absl::StatusOr<JobStatus> RunLocalJob(
    const LocalBinaries& binaries, const JobSpec& spec, const std::string& stem,
    const std::vector<std::string>& worker_args,
    const std::function<void(const JobStatus&, LocalCluster*)>& on_status,
    const std::vector<std::vector<std::string>>& per_worker_args) {
  const std::string log_dir = absl::StrCat("/tmp/", stem, "_", getpid(), "_", spec.name());
  std::system(absl::StrCat("mkdir -p ", log_dir).c_str());
  LocalClusterOptions options;
  options.binaries = binaries;
  options.num_servers = spec.num_servers();
  options.num_workers = spec.num_workers();
  options.log_dir = log_dir;
  options.worker_args = worker_args;
  options.per_worker_args = per_worker_args;
  LocalCluster cluster(options);
  if (absl::Status s = cluster.Start(); !s.ok()) return s;
  CoordinatorClientOptions client_options;
  client_options.address = cluster.coordinator_address();
  CoordinatorClient client(client_options);
  absl::StatusOr<std::string> id = client.SubmitJob(spec);
  if (!id.ok()) return id.status();
  std::cout << spec.name() << ": job " << *id << ", logs in " << log_dir << std::endl;
  absl::StatusOr<JobStatus> final = client.WatchJob(
      *id, [&](const JobStatus& status) { on_status(status, &cluster); },
      [&] { return cluster.CheckProcesses(); });
  cluster.Stop();
  if (!final.ok()) return final.status();
  if (final->state() != SUCCEEDED) {
    return absl::InternalError(absl::StrCat("job ", JobState_Name(final->state()), ": ",
                                            final->message(), " (logs in ", log_dir, ")"));
  }
  return final;
}

}  // namespace psrv
