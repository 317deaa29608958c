#include "common/membership.h"

#include <glog/logging.h>
#include <grpcpp/client_context.h>

#include "common/channel.h"
#include "common/grpc_status.h"
#include "common/status_macros.h"

namespace psrv {

Membership::Membership(Options options, HeartbeatHandler handler)
    : options_(std::move(options)),
      handler_(std::move(handler)),
      stub_(Coordinator::NewStub(CreateChannel(options_.coordinator))) {}

Membership::~Membership() { Stop(); }

absl::Status Membership::RegisterOnce() {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
  context.set_wait_for_ready(true);
  RegisterRequest request;
  request.set_role(options_.role);
  request.set_address(options_.address);
  request.set_incarnation(options_.incarnation);
  request.set_memory_bytes(options_.memory_bytes);
  // Again under the id given before, if any: shard maps and worker ranks name it.
  request.set_node_id(node_id());
  RegisterResponse response;
  RETURN_IF_ERROR(FromGrpcStatus(stub_->Register(&context, request, &response),
                                 "register with coordinator " + options_.coordinator));
  absl::MutexLock lock(&mu_);
  node_id_ = response.node_id();
  if (response.heartbeat_interval_ms() > 0) {
    interval_ = absl::Milliseconds(response.heartbeat_interval_ms());
  }
  LOG(INFO) << "registered with coordinator " << options_.coordinator << " as " << node_id_;
  return absl::OkStatus();
}

absl::Status Membership::Start(absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  absl::Status status;
  while (!(status = RegisterOnce()).ok()) {
    if (absl::Now() > deadline || stop_.HasBeenNotified()) return status;
    LOG(WARNING) << status << "; retrying";
    stop_.WaitForNotificationWithTimeout(absl::Milliseconds(300));
  }
  thread_ = std::thread([this] { HeartbeatLoop(); });
  return absl::OkStatus();
}

void Membership::Stop() {
  if (!stop_.HasBeenNotified()) stop_.Notify();
  if (!thread_.joinable()) return;
  thread_.join();
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(1));
  LeaveRequest request;
  request.set_node_id(node_id());
  LeaveResponse response;
  grpc::Status status = stub_->Leave(&context, request, &response);
  if (!status.ok()) LOG(WARNING) << "leaving the cluster: " << status.error_message();
}

std::string Membership::node_id() {
  absl::MutexLock lock(&mu_);
  return node_id_;
}

void Membership::CarryFinalReport(const ReportProgressRequest& report) {
  absl::MutexLock lock(&mu_);
  final_report_ = report;
  ++final_report_serial_;
}

bool Membership::CarriesFinalReport() {
  absl::MutexLock lock(&mu_);
  return final_report_.has_value();
}

void Membership::HeartbeatLoop() {
  while (true) {
    absl::Duration interval;
    HeartbeatRequest request;
    uint64_t final_report_serial = 0;
    {
      absl::MutexLock lock(&mu_);
      interval = interval_;
      request.set_node_id(node_id_);
      if (final_report_.has_value()) *request.mutable_final_report() = *final_report_;
      final_report_serial = final_report_serial_;
    }
    if (stop_.WaitForNotificationWithTimeout(interval)) return;
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
    // Waits for a coordinator that is away (restarting) instead of failing at once: a waiting
    // call is what drives the reconnection in a process that serves no gRPC itself (a worker),
    // where nothing else would for up to 5 s (gRPC's backup poller).
    context.set_wait_for_ready(true);
    HeartbeatResponse response;
    grpc::Status status = stub_->Heartbeat(&context, request, &response);
    if (status.ok()) {
      if (request.has_final_report()) {
        absl::MutexLock lock(&mu_);
        if (final_report_serial_ == final_report_serial) final_report_.reset();
        LOG(INFO) << "final report of job " << request.final_report().job_id()
                  << " delivered with a heartbeat";
      }
      handler_(response);
    } else if (status.error_code() == grpc::StatusCode::NOT_FOUND) {
      LOG(WARNING) << "coordinator does not know node " << request.node_id()
                   << "; registering again";
      absl::Status s = RegisterOnce();
      if (!s.ok()) LOG(WARNING) << s;
    } else {
      LOG_EVERY_N(WARNING, 10) << "heartbeat to " << options_.coordinator
                               << " failed: " << status.error_message();
    }
  }
}

}  // namespace psrv
