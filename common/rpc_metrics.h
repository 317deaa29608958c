// Per-method gRPC server metrics for every process, recorded by a server interceptor that
// common/grpc_server.cc installs: calls started, calls handled by status code, and handling time,
// under the names and labels of go-grpc-prometheus (grpc_server_*), so existing dashboards fit.
#ifndef PSRV_COMMON_RPC_METRICS_H_
#define PSRV_COMMON_RPC_METRICS_H_

#include <memory>

#include <grpcpp/support/server_interceptor.h>

#include "common/metrics.h"

namespace psrv {

// An interceptor factory recording into `registry` (not owned; must outlive the server).
std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface> MakeRpcMetricsInterceptor(
    MetricsRegistry* registry);

}  // namespace psrv

#endif  // PSRV_COMMON_RPC_METRICS_H_
