// A parameter server in the test's process: ParameterService over a ShardStore, gRPC on 127.0.0.1
// (any free port), counting the calls of each method it receives.
#ifndef PSRV_WORKER_TESTING_TEST_SERVER_H_
#define PSRV_WORKER_TESTING_TEST_SERVER_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <grpcpp/grpcpp.h>
#include <grpcpp/support/server_interceptor.h>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "common/channel.h"
#include "server/parameter_service.h"
#include "server/shard_store.h"

namespace psrv {

// Counts the calls of each method (e.g. "/psrv.ParameterServer/PushBatch").
class MethodCounter : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo* info) override {
    absl::MutexLock lock(&mu_);
    ++counts_[info->method()];
    return new PassThrough();
  }
  int count(const std::string& method) {
    absl::MutexLock lock(&mu_);
    auto it = counts_.find(method);
    return it == counts_.end() ? 0 : it->second;
  }

 private:
  class PassThrough : public grpc::experimental::Interceptor {
   public:
    void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
      methods->Proceed();
    }
  };
  absl::Mutex mu_;
  std::map<std::string, int> counts_ ABSL_GUARDED_BY(mu_);
};

// Members in this order: the gRPC server goes first.
struct TestServer {
  ShardStore store;
  ParameterService service{&store};
  MethodCounter* calls = nullptr;  // Owned by the server.
  std::unique_ptr<grpc::Server> server;
  std::string address;

  TestServer() {
    grpc::ServerBuilder builder;
    ConfigureServerBuilder(&builder);
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(&service);
    auto counter = std::make_unique<MethodCounter>();
    calls = counter.get();
    std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> factories;
    factories.push_back(std::move(counter));
    builder.experimental().SetInterceptorCreators(std::move(factories));
    server = builder.BuildAndStart();
    address = absl::StrCat("127.0.0.1:", port);
  }

  // Answers the pulls still waiting for a step (they would hold up Shutdown), then stops.
  void Stop() {
    store.CancelAllWaiters();
    if (server != nullptr) server->Shutdown(absl::ToChronoTime(absl::Now() + absl::Seconds(2)));
  }

  // The number of updates every shard here applied (-1 if they differ).
  int64_t version() {
    const ServerStatus status = store.Status("job");
    int64_t version = status.shards(0).version();
    for (const auto& shard : status.shards()) {
      if (static_cast<int64_t>(shard.version()) != version) return -1;
    }
    return version;
  }
};

}  // namespace psrv

#endif  // PSRV_WORKER_TESTING_TEST_SERVER_H_
