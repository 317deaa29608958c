// `psctl local`: one job on a whole cluster of local processes (client/local_cluster.h), watched to
// its end, its training curves written next to the logs, then every process stopped.
#ifndef PSRV_CLIENT_LOCAL_COMMAND_H_
#define PSRV_CLIENT_LOCAL_COMMAND_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "client/command_env.h"
#include "client/command_table.h"
#include "client/job_spec_flags.h"

namespace psrv {

struct LocalFlags {
  std::optional<int64_t> servers;  // Default: the spec's num_servers if set, else 2.
  std::optional<int64_t> workers;  // Default: the spec's num_workers if set, else 2.
  std::string bin_dir;
  std::string log_dir;  // "" for a fresh temporary directory (removed after a successful run).
  bool keep_logs = false;
  // Extra ps_worker flags, each "--name=value" (not those psctl local sets itself).
  std::vector<std::string> worker_args;
  absl::Duration startup_timeout = absl::Seconds(60);  // Until the job leaves PENDING.
  std::string transport = "unix";  // Between workers and servers: "unix" sockets or "tcp".
  std::string checkpoint_root = "/";  // The servers' --checkpoint_root.
  bool tls = false;  // Mutual TLS everywhere, with a throw-away CA in <log folder>/tls.
};

// Checks the job and the flags before anything starts (exit 2), starts the cluster, submits and
// watches the job, writes its curves, stops the cluster. Exit code: the job's (0 if it
// SUCCEEDED), 1 if the cluster failed, 130 on Ctrl-C (which cancels the job).
int LocalCommand(const CommandEnv& env, const JobSpecFlags& spec_flags,
                 const LocalFlags& local_flags);

// The command table's row (command_table.h).
CommandHandler BindLocal(CLI::App* command);

}  // namespace psrv

#endif  // PSRV_CLIENT_LOCAL_COMMAND_H_
