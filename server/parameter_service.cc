#include "server/parameter_service.h"

#include <string>

#include "common/buffer_pool.h"
#include "common/status.h"
#include "common/wire.h"

namespace psrv {
namespace {

void SerializeSmall(const google::protobuf::MessageLite& message, grpc::ByteBuffer* out) {
  std::string bytes = message.SerializeAsString();
  grpc::Slice slice(bytes);
  *out = grpc::ByteBuffer(&slice, 1);
}

}  // namespace

grpc::ServerUnaryReactor* ParameterService::CreateShards(grpc::CallbackServerContext* context,
                                                         const CreateShardsRequest* request,
                                                         CreateShardsResponse*) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(ToGrpcStatus(store_->CreateShards(*request)));
  return reactor;
}

grpc::ServerUnaryReactor* ParameterService::DropJob(grpc::CallbackServerContext* context,
                                                    const DropJobRequest* request,
                                                    DropJobResponse*) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(ToGrpcStatus(store_->DropJob(request->job_id())));
  return reactor;
}

grpc::ServerUnaryReactor* ParameterService::SetWorkers(grpc::CallbackServerContext* context,
                                                       const SetWorkersRequest* request,
                                                       SetWorkersResponse*) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(ToGrpcStatus(store_->SetWorkers(*request)));
  return reactor;
}

grpc::ServerUnaryReactor* ParameterService::SaveCheckpoint(grpc::CallbackServerContext* context,
                                                           const SaveCheckpointRequest* request,
                                                           SaveCheckpointResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  store_->SaveCheckpoint(*request,
                         [reactor, response](absl::StatusOr<SaveCheckpointResponse> result) {
                           if (result.ok()) *response = std::move(*result);
                           reactor->Finish(ToGrpcStatus(result.status()));
                         });
  return reactor;
}

grpc::ServerUnaryReactor* ParameterService::Pull(grpc::CallbackServerContext* context,
                                                 const grpc::ByteBuffer* request,
                                                 grpc::ByteBuffer* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  PullRequest header;
  absl::Status parsed = ParseWithPayload(
      const_cast<grpc::ByteBuffer*>(request), &header, [](size_t size) -> absl::StatusOr<char*> {
        if (size != 0) return absl::InvalidArgumentError("a pull request carries no values");
        return nullptr;
      });
  if (!parsed.ok()) {
    reactor->Finish(ToGrpcStatus(parsed));
    return reactor;
  }
  store_->Pull(header, [reactor, response, range = header.range(), dtype = header.dtype()](
                           absl::Status status, uint64_t version, PooledBuffer values) {
    if (status.ok()) {
      PullResponse reply;
      reply.set_version(version);
      reply.set_dtype(dtype);
      *reply.mutable_range() = range;
      char* data = values.data();
      const size_t size = values.size();
      SerializeWithPayload(reply, data, size, &PooledBuffer::ReturnReleased, values.Release(),
                           response);
    }
    reactor->Finish(ToGrpcStatus(status));
  });
  return reactor;
}

grpc::ServerUnaryReactor* ParameterService::Push(grpc::CallbackServerContext* context,
                                                 const grpc::ByteBuffer* request,
                                                 grpc::ByteBuffer* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  PushRequest header;
  PooledBuffer payload;
  absl::Status status = ParseWithPayload(
      const_cast<grpc::ByteBuffer*>(request), &header, [&payload](size_t size) -> absl::StatusOr<char*> {
        payload = BufferPool::Global()->Acquire(size);
        return payload.data();
      });
  if (status.ok()) {
    absl::StatusOr<uint64_t> version = store_->Push(header, payload.data(), payload.size());
    if (version.ok()) {
      PushResponse reply;
      reply.set_version(*version);
      SerializeSmall(reply, response);
    }
    status = version.status();
  }
  reactor->Finish(ToGrpcStatus(status));
  return reactor;
}

}  // namespace psrv
