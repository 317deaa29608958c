// Transitional: both halves of the former status header. Include common/status_macros.h and/or
// common/grpc_status.h instead.
#ifndef PSRV_COMMON_STATUS_H_
#define PSRV_COMMON_STATUS_H_

#include "common/grpc_status.h"
#include "common/status_macros.h"

#endif  // PSRV_COMMON_STATUS_H_
