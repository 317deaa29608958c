#include "worker/server_transport.h"

#include <set>
#include <utility>
#include <vector>

#include <grpcpp/client_context.h>
#include <grpcpp/generic/generic_stub.h>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/channel.h"
#include "common/grpc_status.h"
#include "common/wire.h"

namespace psrv {
namespace {

class GrpcServerTransport : public ServerTransport {
 public:
  GrpcServerTransport(const std::string& address, int connections) : address_(address) {
    for (int i = 0; i < std::max(1, connections); ++i) {
      // CreateChannel uses a local subchannel pool: each stub gets its own connection.
      stubs_.push_back(std::make_unique<grpc::GenericStub>(CreateChannel(address)));
    }
  }

  void Pull(const PullRequest& request, int connection, absl::Time deadline, size_t bytes,
            PayloadPiece receive, PullDone done) override {
    Call* call = Start(deadline);
    grpc::ByteBuffer message = Small(request);
    const std::string what = absl::StrCat("pull ", request.table(), " from ", address_);
    Stub(connection)->UnaryCall(
        &call->context, "/psrv.ParameterServer/Pull", grpc::StubOptions(), &message,
        &call->response,
        [this, call, bytes, what, receive = std::move(receive),
         done = std::move(done)](grpc::Status status) {
          absl::Status result = FromGrpcStatus(status, what);
          uint64_t version = 0;
          if (result.ok()) {
            PullResponse reply;
            result = ParseWithPayloadPieces(&call->response, &reply, ExpectBytes(bytes, what),
                                            receive);
            version = reply.version();
          }
          Finish(call);
          done(result, version);
        });
  }

  void Push(const PushRequest& request, int connection, absl::Time deadline, const void* payload,
            size_t bytes, Done done, std::function<void()> released) override {
    Call* call = Start(deadline);
    // UnaryCall takes its own reference to the message's slices: once `message` is gone, the
    // payload's release comes when gRPC is done with it.
    grpc::ByteBuffer message;
    SerializeWithPayload(request, payload, bytes, &RunAndDelete,
                         new std::function<void()>(std::move(released)), &message);
    const std::string what = absl::StrCat("push ", request.table(), " to ", address_);
    Stub(connection)->UnaryCall(&call->context, "/psrv.ParameterServer/Push", grpc::StubOptions(),
                                &message, &call->response,
                                [this, call, what, done = std::move(done)](grpc::Status status) {
                                  Finish(call);
                                  done(FromGrpcStatus(status, what));
                                });
  }

  void CommitStep(const CommitStepRequest& request, absl::Time deadline, Done done) override {
    Call* call = Start(deadline);
    grpc::ByteBuffer message = Small(request);
    const std::string what = absl::StrCat("commit step ", request.step(), " on ", address_);
    Stub(0)->UnaryCall(&call->context, "/psrv.ParameterServer/CommitStep", grpc::StubOptions(),
                       &message, &call->response,
                       [this, call, what, done = std::move(done)](grpc::Status status) {
                         Finish(call);
                         done(FromGrpcStatus(status, what));
                       });
  }

  void CancelAll() override {
    absl::MutexLock lock(&mu_);
    for (Call* call : live_) call->context.TryCancel();
  }

 private:
  // What lives until the callback (the request only until UnaryCall returns).
  struct Call {
    grpc::ClientContext context;
    grpc::ByteBuffer response;
  };

  static void RunAndDelete(void* arg) {
    auto* fn = static_cast<std::function<void()>*>(arg);
    if (*fn) (*fn)();
    delete fn;
  }

  grpc::GenericStub* Stub(int connection) {
    return stubs_[static_cast<size_t>(connection) % stubs_.size()].get();
  }

  Call* Start(absl::Time deadline) {
    Call* call = new Call();
    call->context.set_deadline(absl::ToChronoTime(deadline));
    Register(call);
    return call;
  }

  static grpc::ByteBuffer Small(const google::protobuf::MessageLite& message) {
    std::string bytes = message.SerializeAsString();
    grpc::Slice slice(bytes);
    return grpc::ByteBuffer(&slice, 1);
  }

  void Register(Call* call) ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    live_.insert(call);
  }

  void Finish(Call* call) {
    {
      absl::MutexLock lock(&mu_);
      live_.erase(call);
    }
    delete call;
  }

  const std::string address_;
  std::vector<std::unique_ptr<grpc::GenericStub>> stubs_;
  absl::Mutex mu_;
  std::set<Call*> live_ ABSL_GUARDED_BY(mu_);
};

}  // namespace

std::unique_ptr<ServerTransport> CreateGrpcServerTransport(const std::string& address,
                                                           int connections) {
  return std::make_unique<GrpcServerTransport>(address, connections);
}

}  // namespace psrv
