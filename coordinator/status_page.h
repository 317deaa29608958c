// The coordinator's web status page (GET /) and its JSON twin (GET /api/status): the cluster's
// nodes, jobs with their loss and throughput curves (inline SVG drawn here: no JavaScript, works
// offline), and every shard as the servers' Admin.GetStatus reports it.
#ifndef PSRV_COORDINATOR_STATUS_PAGE_H_
#define PSRV_COORDINATOR_STATUS_PAGE_H_

#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "coordinator/cluster.h"
#include "proto/admin.pb.h"
#include "proto/coordinator.pb.h"
#include "proto/job.pb.h"

namespace psrv {

// One server as the snapshot saw it: its status, or why there is none.
struct ServerReport {
  NodeInfo node;
  absl::StatusOr<ServerStatus> status;
};

// What the page shows, gathered at one moment.
struct ClusterSnapshot {
  absl::Time time;
  std::string coordinator;        // How the page names the coordinator, e.g. "127.0.0.1:7070".
  std::vector<NodeInfo> nodes;
  std::vector<JobStatus> jobs;    // In submission order.
  std::vector<ServerReport> servers;  // Every registered server, in node order.
};

// Admin.GetStatus of the server at `address` (the coordinator passes a gRPC call; tests a fake).
using ServerStatusFetcher = std::function<absl::StatusOr<ServerStatus>(const std::string& address)>;

// Reads nodes and jobs from `cluster` and asks every server that is not DEAD for its status, all
// at once (so one slow server costs one timeout).
ClusterSnapshot TakeSnapshot(ClusterCoordinator* cluster, const std::string& coordinator,
                             const ServerStatusFetcher& fetch);

struct StatusPageOptions {
  int refresh_seconds = 5;  // <meta http-equiv="refresh">; 0: none.
  int max_charted_jobs = 4;  // Running jobs first, then the latest ended ones.
};

// The HTML page.
std::string RenderStatusPage(const ClusterSnapshot& snapshot,
                             const StatusPageOptions& options = StatusPageOptions());

// {"time_ms", "coordinator", "nodes": [NodeInfo], "jobs": [JobStatus], "servers": [ServerStatus],
//  "errors": [{"node_id", "address", "code", "error"}]}, protobuf messages in their JSON mapping
// with the .proto field names.
std::string RenderStatusJson(const ClusterSnapshot& snapshot);

}  // namespace psrv

#endif  // PSRV_COORDINATOR_STATUS_PAGE_H_
