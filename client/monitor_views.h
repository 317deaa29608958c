// What psctl's live views print, as pure functions of what the servers and the coordinator said
// (unit-tested): the shard table of `psctl shards` and the two tables of `psctl top`, the busiest
// shards and the slowest workers.
#ifndef PSRV_CLIENT_MONITOR_VIEWS_H_
#define PSRV_CLIENT_MONITOR_VIEWS_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "proto/admin.pb.h"
#include "proto/coordinator.pb.h"
#include "proto/job.pb.h"

namespace psrv {

// One registered server and its answer to Admin.GetStatus.
struct ServerReply {
  NodeInfo node;
  absl::StatusOr<ServerStatus> status;
};

// Every shard of every server, one row each: range, size, version, mode, role (primary or backup),
// traffic (counts, rates over the last ~10 s, bytes), last update, workers seen, the workers a SYNC
// step waits for and since when; the last rejected push, and a lost backup, on lines of their own
// below their shard. A server that did not
// answer gets one line with its error. `job_id` (may be "") only words the empty case.
std::string ShardsTable(const std::vector<ServerReply>& servers, const std::string& job_id,
                        absl::Time now);

// `psctl top`: the `limit` busiest shards by push + pull rate, then the workers of the running
// jobs, slowest (lowest tokens/s) first, with how far each is behind its job's fastest worker and
// how many shards are waiting for it.
std::string TopView(const std::vector<ServerReply>& servers, const std::vector<JobStatus>& jobs,
                    int limit, absl::Time now);

}  // namespace psrv

#endif  // PSRV_CLIENT_MONITOR_VIEWS_H_
