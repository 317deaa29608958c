// psctl's cluster views: `shards` (every server's shards), `top` (busiest shards, slowest
// workers) and `cluster` (the registered nodes). Each takes its parsed flags and the CommandEnv and
// returns the exit code (command_env.h); the Bind* functions give them to the command table.
#ifndef PSRV_CLIENT_MONITOR_COMMANDS_H_
#define PSRV_CLIENT_MONITOR_COMMANDS_H_

#include <string>

#include "absl/time/time.h"
#include "client/command_env.h"
#include "client/command_table.h"

namespace psrv {

struct ShardsFlags {
  std::string job_id;  // Only this job's shards; "" for all.
  bool json = false;   // With watch: one compact JSON document per line and refresh.
  bool watch = false;  // Refresh every `interval` until Ctrl-C (or `count` refreshes).
  absl::Duration interval = absl::Seconds(2);
  int count = 0;  // Refreshes before stopping; 0: until Ctrl-C.
};
int ShardsCommand(const CommandEnv& env, const ShardsFlags& flags);

struct TopFlags {
  std::string job_id;  // Only this job's shards and workers; "" for all.
  bool once = false;   // One view, no refresh.
  absl::Duration interval = absl::Seconds(2);
  int count = 0;   // Refreshes before stopping; 0: until Ctrl-C.
  int limit = 10;  // Rows per table.
};
int TopCommand(const CommandEnv& env, const TopFlags& flags);

int ClusterCommand(const CommandEnv& env, bool json);

// The command table's rows (command_table.h).
CommandHandler BindShards(CLI::App* command);
CommandHandler BindTop(CLI::App* command);
CommandHandler BindCluster(CLI::App* command);

}  // namespace psrv

#endif  // PSRV_CLIENT_MONITOR_COMMANDS_H_
