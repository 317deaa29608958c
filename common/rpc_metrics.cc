// The gRPC server interceptor behind grpc_server_started_total, grpc_server_handled_total and
// grpc_server_handling_seconds.
#include "common/rpc_metrics.h"

#include <array>
#include <atomic>
#include <memory>
#include <vector>
#include <string>

#include <grpcpp/support/interceptor.h>
#include <grpcpp/support/status.h>

#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"

namespace psrv {
namespace {

using grpc::experimental::InterceptionHookPoints;
using grpc::experimental::ServerRpcInfo;

const char* TypeName(ServerRpcInfo::Type type) {
  switch (type) {
    case ServerRpcInfo::Type::UNARY:
      return "unary";
    case ServerRpcInfo::Type::CLIENT_STREAMING:
      return "client_stream";
    case ServerRpcInfo::Type::SERVER_STREAMING:
      return "server_stream";
    case ServerRpcInfo::Type::BIDI_STREAMING:
      return "bidi_stream";
  }
  return "unknown";
}

const char* CodeName(grpc::StatusCode code) {
  static constexpr const char* kNames[] = {
      "OK",      "Canceled",          "Unknown",      "InvalidArgument", "DeadlineExceeded",
      "NotFound", "AlreadyExists",    "PermissionDenied", "ResourceExhausted",
      "FailedPrecondition", "Aborted", "OutOfRange",  "Unimplemented",   "Internal",
      "Unavailable", "DataLoss",      "Unauthenticated"};
  const int index = static_cast<int>(code);
  return index >= 0 && index < 17 ? kNames[index] : "Unknown";
}

// The metrics of one method, looked up once per method.
struct MethodMetrics {
  std::vector<std::string> labels;  // grpc_service, grpc_method, grpc_type.
  Counter* started = nullptr;
  Histogram* handling = nullptr;
  // By status code, created when a code first happens, so that only codes seen are exported.
  std::array<std::atomic<Counter*>, 17> handled{};
};

class RpcMetrics {
 public:
  explicit RpcMetrics(MetricsRegistry* registry)
      : started_(registry->AddCounter("grpc_server_started_total",
                                      "RPCs started on the server.",
                                      {"grpc_service", "grpc_method", "grpc_type"})),
        handled_(registry->AddCounter(
            "grpc_server_handled_total", "RPCs completed on the server, by status code.",
            {"grpc_service", "grpc_method", "grpc_type", "grpc_code"})),
        handling_(registry->AddHistogram(
            "grpc_server_handling_seconds",
            "Time from the start of an RPC to its status being sent (streams: the stream's "
            "lifetime), in seconds.",
            {"grpc_service", "grpc_method", "grpc_type"}, LatencyBuckets())) {}

  MethodMetrics* For(const char* full_method, ServerRpcInfo::Type type) {
    const std::string key = full_method != nullptr ? full_method : "";
    absl::MutexLock lock(&mu_);
    std::unique_ptr<MethodMetrics>& metrics = methods_[key];
    if (metrics != nullptr) return metrics.get();
    // "/psrv.ParameterServer/Push" -> ("psrv.ParameterServer", "Push").
    std::string service = "unknown", method = key;
    const size_t slash = key.rfind('/');
    if (slash != std::string::npos && slash > 0) {
      service = key.substr(1, slash - 1);
      method = key.substr(slash + 1);
    }
    metrics = std::make_unique<MethodMetrics>();
    metrics->labels = {service, method, TypeName(type)};
    metrics->started = started_->Get(metrics->labels);
    metrics->handling = handling_->Get(metrics->labels);
    return metrics.get();
  }

  void Handled(MethodMetrics* metrics, grpc::StatusCode code) {
    int index = static_cast<int>(code);
    if (index < 0 || index >= 17) index = static_cast<int>(grpc::StatusCode::UNKNOWN);
    Counter* counter = metrics->handled[index].load(std::memory_order_acquire);
    if (counter == nullptr) {
      std::vector<std::string> labels = metrics->labels;
      labels.push_back(CodeName(static_cast<grpc::StatusCode>(index)));
      counter = handled_->Get(labels);  // The same counter whichever thread gets here first.
      metrics->handled[index].store(counter, std::memory_order_release);
    }
    counter->Increment();
  }

 private:
  CounterFamily* const started_;
  CounterFamily* const handled_;
  HistogramFamily* const handling_;
  absl::Mutex mu_;
  absl::flat_hash_map<std::string, std::unique_ptr<MethodMetrics>> methods_ ABSL_GUARDED_BY(mu_);
};

class RpcMetricsInterceptor final : public grpc::experimental::Interceptor {
 public:
  RpcMetricsInterceptor(RpcMetrics* metrics, ServerRpcInfo* info)
      : metrics_(metrics),
        method_metrics_(metrics->For(info->method(), info->type())),
        start_(absl::Now()) {
    method_metrics_->started->Increment();
  }

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(InterceptionHookPoints::PRE_SEND_STATUS)) {
      method_metrics_->handling->Observe(absl::ToDoubleSeconds(absl::Now() - start_));
      metrics_->Handled(method_metrics_, methods->GetSendStatus().error_code());
    }
    methods->Proceed();
  }

 private:
  RpcMetrics* const metrics_;
  MethodMetrics* const method_metrics_;
  const absl::Time start_;
};

class RpcMetricsInterceptorFactory final
    : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  explicit RpcMetricsInterceptorFactory(MetricsRegistry* registry) : metrics_(registry) {}

  grpc::experimental::Interceptor* CreateServerInterceptor(ServerRpcInfo* info) override {
    return new RpcMetricsInterceptor(&metrics_, info);
  }

 private:
  RpcMetrics metrics_;
};

}  // namespace

std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface> MakeRpcMetricsInterceptor(
    MetricsRegistry* registry) {
  return std::make_unique<RpcMetricsInterceptorFactory>(registry);
}

}  // namespace psrv
