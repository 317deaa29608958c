// Early-return macros for absl::Status and absl::StatusOr (this Abseil has none). Plain Abseil:
// usable from every process, from CUDA code and from code that must not pull in gRPC.
#ifndef PSRV_COMMON_STATUS_MACROS_H_
#define PSRV_COMMON_STATUS_MACROS_H_

#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define PSRV_CONCAT_INNER_(a, b) a##b
#define PSRV_CONCAT_(a, b) PSRV_CONCAT_INNER_(a, b)

// Returns the status from the enclosing function if `expr` is not OK.
#define RETURN_IF_ERROR(expr)                    \
  do {                                           \
    ::absl::Status psrv_status_ = (expr);        \
    if (!psrv_status_.ok()) return psrv_status_; \
  } while (0)

// `ASSIGN_OR_RETURN(auto x, F())`: declares/assigns x from a StatusOr, or returns its error.
#define ASSIGN_OR_RETURN(lhs, expr) \
  ASSIGN_OR_RETURN_IMPL_(PSRV_CONCAT_(psrv_statusor_, __LINE__), lhs, expr)
#define ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                           \
  if (!tmp.ok()) return tmp.status();          \
  lhs = std::move(tmp).value()

#endif  // PSRV_COMMON_STATUS_MACROS_H_
