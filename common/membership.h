// Keeps a server or worker registered with the coordinator: registers, sends a heartbeat every
// interval, and registers again, under the same node id, if the coordinator no longer knows the
// node (it restarted without its state).
#ifndef PSRV_COMMON_MEMBERSHIP_H_
#define PSRV_COMMON_MEMBERSHIP_H_

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "proto/coordinator.grpc.pb.h"

namespace psrv {

// Thread-safe.
class Membership {
 public:
  struct Options {
    std::string coordinator;  // host:port
    NodeRole role = ROLE_UNSPECIFIED;
    std::string address;      // This node's address as others should reach it.
    uint64_t incarnation = 0;   // Servers: RegisterRequest.incarnation.
    uint64_t memory_bytes = 0;  // Servers: RegisterRequest.memory_bytes.
  };
  // Runs on the heartbeat thread after every successful heartbeat.
  using HeartbeatHandler = std::function<void(const HeartbeatResponse&)>;

  Membership(Options options, HeartbeatHandler handler);
  ~Membership();

  // Registers (retrying while the coordinator is unreachable, up to `timeout`) and starts the
  // heartbeat thread. UNAVAILABLE/DEADLINE_EXCEEDED if the coordinator never answered.
  absl::Status Start(absl::Duration timeout);

  // Stops the heartbeat thread and tells the coordinator the node leaves (best effort, 1 s), so
  // it is given no more work.
  void Stop();

  std::string node_id();
  Coordinator::Stub* stub() { return stub_.get(); }

  // Workers: sends `report` (a run's final report the coordinator could not be reached for)
  // with every heartbeat until one is answered OK. A later call replaces an earlier report.
  void CarryFinalReport(const ReportProgressRequest& report);
  // Whether a carried final report is still waiting for its heartbeat.
  bool CarriesFinalReport();

 private:
  absl::Status RegisterOnce();
  void HeartbeatLoop();

  const Options options_;
  const HeartbeatHandler handler_;
  std::unique_ptr<Coordinator::Stub> stub_;
  absl::Notification stop_;
  std::thread thread_;
  absl::Mutex mu_;
  std::string node_id_ ABSL_GUARDED_BY(mu_);
  absl::Duration interval_ ABSL_GUARDED_BY(mu_) = absl::Milliseconds(500);
  std::optional<ReportProgressRequest> final_report_ ABSL_GUARDED_BY(mu_);
  uint64_t final_report_serial_ ABSL_GUARDED_BY(mu_) = 0;  // Counts CarryFinalReport calls.
};

}  // namespace psrv

#endif  // PSRV_COMMON_MEMBERSHIP_H_
