#include "server/replication_client.h"

#include <utility>

#include <grpcpp/client_context.h>

#include "absl/strings/str_cat.h"
#include "common/channel.h"
#include "common/grpc_status.h"
#include "common/wire.h"

namespace psrv {
namespace {

template <typename Owner>
void DeleteOwner(void* owner) {
  delete static_cast<Owner*>(owner);
}

}  // namespace

GrpcReplicator::GrpcReplicator(std::string address, Options options)
    : address_(std::move(address)), options_(options), stub_(CreateChannel(address_)) {}

template <typename Owner>
void GrpcReplicator::Call(const char* method, const google::protobuf::MessageLite& header,
                          std::unique_ptr<Owner> owner, const void* data, size_t size,
                          absl::Duration timeout, Done done) {
  struct State {
    grpc::ClientContext context;
    grpc::ByteBuffer request;
    grpc::ByteBuffer response;
  };
  // Lives until the answer: gRPC keeps the callback, and with it `state`, until then.
  auto state = std::make_shared<State>();
  state->context.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  SerializeWithPayload(header, data, size, &DeleteOwner<Owner>, owner.release(), &state->request);
  stub_.UnaryCall(&state->context, method, grpc::StubOptions(), &state->request, &state->response,
                  [state, done = std::move(done),
                   what = absl::StrCat(method, " to ", address_)](grpc::Status status) {
                    done(FromGrpcStatus(status, what));
                  });
  // UnaryCall holds its own reference to the payload; ours goes, so that it is released (and its
  // owner deleted) as soon as gRPC is done with it.
  state->request.Clear();
}

void GrpcReplicator::Replicate(const ReplicateRequest& request,
                               std::shared_ptr<PooledBuffer> gradient, Done done) {
  const void* data = gradient->data();
  const size_t size = gradient->size();
  Call("/psrv.ParameterServer/Replicate", request,
       std::make_unique<std::shared_ptr<PooledBuffer>>(std::move(gradient)), data, size,
       options_.replicate_timeout, std::move(done));
}

void GrpcReplicator::Install(const InstallShardRequest& request, std::string state, Done done) {
  auto owner = std::make_unique<std::string>(std::move(state));
  const void* data = owner->data();
  const size_t size = owner->size();
  Call("/psrv.ParameterServer/InstallShard", request, std::move(owner), data, size,
       options_.install_timeout, std::move(done));
}

}  // namespace psrv
