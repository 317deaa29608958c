// The one place where absl::Status and grpc::Status are converted into each other (the canonical
// code and the message are kept).
#ifndef PSRV_COMMON_GRPC_STATUS_H_
#define PSRV_COMMON_GRPC_STATUS_H_

#include <grpcpp/support/status.h>

#include <string>

#include "absl/status/status.h"

namespace psrv {

// absl -> gRPC, keeping the canonical code and the message.
inline grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::string(status.message()));
}

// gRPC -> absl. `what` names the call, e.g. "Pull from 127.0.0.1:5000".
inline absl::Status FromGrpcStatus(const grpc::Status& status, const std::string& what = "") {
  if (status.ok()) return absl::OkStatus();
  std::string message = what.empty() ? status.error_message() : what + ": " + status.error_message();
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()), message);
}

}  // namespace psrv

#endif  // PSRV_COMMON_GRPC_STATUS_H_
