// Membership: servers and workers register, send heartbeats and leave; their health; a server a
// worker found unreachable is probed. Heartbeat replies carry workers' assignments.
#ifndef PSRV_COORDINATOR_MEMBERSHIP_H_
#define PSRV_COORDINATOR_MEMBERSHIP_H_

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "coordinator/cluster_state.h"
#include "proto/coordinator.pb.h"

namespace psrv {

// Thread-safe: every method takes the cluster's lock (and no call to a server is made under it).
class Membership {
 public:
  explicit Membership(ClusterContext cluster) : cluster_(cluster) {}

  // RPC semantics are those of proto/coordinator.proto.
  absl::StatusOr<RegisterResponse> Register(const RegisterRequest& request);
  absl::StatusOr<HeartbeatResponse> Heartbeat(const HeartbeatRequest& request);
  absl::Status Leave(const std::string& node_id);
  ListNodesResponse ListNodes();
  // See ClusterCoordinator::ReportUnreachable.
  absl::Status ReportUnreachable(const std::string& address);

  // Probes (once, at once, without waiting) every server that hosts a RUNNING job and missed
  // its last 3 heartbeats (SUSPECT): a frozen or cut-off server is DEAD, and its jobs fail over,
  // about a probe's deadline later instead of after 10 heartbeat intervals.
  void ProbeSilentServers();

  // The coordinator itself was stopped for `pause` (it heard nothing, but nobody was silent):
  // every node not already DEAD is credited with it (its last heartbeat moves `pause` later,
  // never past now), so a thawed coordinator does not take the whole cluster for lost. A node
  // that really died meanwhile is found `pause` later than otherwise.
  void ExcusePause(absl::Duration pause);

 private:
  // The id a registering node gets (its own, or a new one); advances the id counter past it.
  absl::StatusOr<std::string> IdFor(const RegisterRequest& request)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(cluster_.mu);
  // Puts the assignment of worker `node` (if its job runs) into `response`, or forgets a job
  // that ended.
  void Assign(Node* node, HeartbeatResponse* response) ABSL_EXCLUSIVE_LOCKS_REQUIRED(cluster_.mu);
  // A server registering at `request.address` with a new incarnation replaced the process
  // there: nodes of the old one are marked unreachable (DEAD), so their jobs fail over.
  void ForgetReplacedServers(const RegisterRequest& request, const std::string& id)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(cluster_.mu);
  // Probes the server (twice) and, if it does not answer, or another process (incarnation)
  // answers at its address, marks it unreachable: DEAD.
  void Probe(const std::string& node_id, const std::string& address, int tries = 2);

  ClusterContext cluster_;
};

}  // namespace psrv

#endif  // PSRV_COORDINATOR_MEMBERSHIP_H_
