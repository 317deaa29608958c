// Status plumbing shared by every process: early-return macros (this Abseil lacks them) and the one
// place where absl::Status and grpc::Status are converted into each other.
#ifndef PSRV_COMMON_STATUS_H_
#define PSRV_COMMON_STATUS_H_

#include <grpcpp/support/status.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define PSRV_CONCAT_INNER_(a, b) a##b
#define PSRV_CONCAT_(a, b) PSRV_CONCAT_INNER_(a, b)

// Returns the status from the enclosing function if `expr` is not OK.
#define RETURN_IF_ERROR(expr)                            \
  do {                                                   \
    ::absl::Status psrv_status_ = (expr);                \
    if (!psrv_status_.ok()) return psrv_status_;         \
  } while (0)

// `ASSIGN_OR_RETURN(auto x, F())`: declares/assigns x from a StatusOr, or returns its error.
#define ASSIGN_OR_RETURN(lhs, expr) \
  ASSIGN_OR_RETURN_IMPL_(PSRV_CONCAT_(psrv_statusor_, __LINE__), lhs, expr)
#define ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                           \
  if (!tmp.ok()) return tmp.status();          \
  lhs = std::move(tmp).value()

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

#endif  // PSRV_COMMON_STATUS_H_
