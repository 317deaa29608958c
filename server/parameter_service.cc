#include "server/parameter_service.h"

#include <functional>
#include <optional>
#include <string>

#include "common/buffer_pool.h"
#include "common/grpc_status.h"
#include "common/status_macros.h"
#include "common/wire.h"
#include "server/gradient_check.h"
#include "server/guarded_call.h"

namespace psrv {
namespace {

void SerializeSmall(const google::protobuf::MessageLite& message, grpc::ByteBuffer* out) {
  std::string bytes = message.SerializeAsString();
  grpc::Slice slice(bytes);
  *out = grpc::ByteBuffer(&slice, 1);
}

// Parses a request with a tensor payload into `header` and a pooled buffer.
absl::Status ParseRequest(const grpc::ByteBuffer* request, google::protobuf::MessageLite* header,
                          PooledBuffer* payload) {
  return ParseWithPayload(const_cast<grpc::ByteBuffer*>(request), header,
                          [payload](size_t size) -> absl::StatusOr<char*> {
                            *payload = BufferPool::Global()->Acquire(size);
                            return payload->data();
                          });
}

// Finishes a call whose answer is a version (the responses of Push, Replicate, InstallShard).
template <typename Response>
void FinishWithVersion(grpc::ServerUnaryReactor* reactor, grpc::ByteBuffer* response,
                       const absl::StatusOr<uint64_t>& version) {
  if (version.ok()) {
    Response reply;
    reply.set_version(*version);
    SerializeSmall(reply, response);
  }
  reactor->Finish(ToGrpcStatus(version.status()));
}

// A raw call answered at once with a version: parses the request and its payload, then `handle`.
template <typename Request, typename Response, typename Handle>
grpc::ServerUnaryReactor* AnswerWithVersion(grpc::CallbackServerContext* context,
                                            const char* method, const grpc::ByteBuffer* request,
                                            grpc::ByteBuffer* response, Handle handle) {
  return GuardedCall(context, method, [&](grpc::ServerUnaryReactor* reactor) {
    Request header;
    PooledBuffer payload;
    absl::Status status = ParseRequest(request, &header, &payload);
    FinishWithVersion<Response>(reactor, response,
                                status.ok() ? handle(header, payload)
                                            : absl::StatusOr<uint64_t>(status));
  });
}

// The callback that finishes a typed call with the store's answer.
template <typename Response>
std::function<void(absl::StatusOr<Response>)> Finisher(grpc::ServerUnaryReactor* reactor,
                                                       Response* response) {
  return [reactor, response](absl::StatusOr<Response> result) {
    if (result.ok()) *response = std::move(*result);
    reactor->Finish(ToGrpcStatus(result.status()));
  };
}

}  // namespace

grpc::ServerUnaryReactor* ParameterService::CreateShards(grpc::CallbackServerContext* context,
                                                         const CreateShardsRequest* request,
                                                         CreateShardsResponse*) {
  return GuardedCall(context, "CreateShards", [&](grpc::ServerUnaryReactor* reactor) {
    reactor->Finish(ToGrpcStatus(store_->CreateShards(*request)));
  });
}

grpc::ServerUnaryReactor* ParameterService::DropJob(grpc::CallbackServerContext* context,
                                                    const DropJobRequest* request,
                                                    DropJobResponse*) {
  return GuardedCall(context, "DropJob", [&](grpc::ServerUnaryReactor* reactor) {
    reactor->Finish(ToGrpcStatus(store_->DropJob(request->job_id())));
  });
}

grpc::ServerUnaryReactor* ParameterService::SetWorkers(grpc::CallbackServerContext* context,
                                                       const SetWorkersRequest* request,
                                                       SetWorkersResponse*) {
  return GuardedCall(context, "SetWorkers", [&](grpc::ServerUnaryReactor* reactor) {
    reactor->Finish(ToGrpcStatus(store_->SetWorkers(*request)));
  });
}

grpc::ServerUnaryReactor* ParameterService::CommitStep(grpc::CallbackServerContext* context,
                                                       const CommitStepRequest* request,
                                                       CommitStepResponse*) {
  return GuardedCall(context, "CommitStep", [&](grpc::ServerUnaryReactor* reactor) {
    reactor->Finish(ToGrpcStatus(store_->CommitStep(*request)));
  });
}

grpc::ServerUnaryReactor* ParameterService::SaveCheckpoint(grpc::CallbackServerContext* context,
                                                           const SaveCheckpointRequest* request,
                                                           SaveCheckpointResponse* response) {
  return GuardedCall(context, "SaveCheckpoint", [&](grpc::ServerUnaryReactor* reactor) {
    store_->SaveCheckpoint(*request, Finisher(reactor, response));
  });
}

grpc::ServerUnaryReactor* ParameterService::Pull(grpc::CallbackServerContext* context,
                                                 const grpc::ByteBuffer* request,
                                                 grpc::ByteBuffer* response) {
  return GuardedCall(context, "Pull", [&](grpc::ServerUnaryReactor* reactor) {
    PullRequest header;
    absl::Status parsed = ParseWithPayload(
        const_cast<grpc::ByteBuffer*>(request), &header, [](size_t size) -> absl::StatusOr<char*> {
          if (size != 0) return absl::InvalidArgumentError("a pull request carries no values");
          return nullptr;
        });
    if (!parsed.ok()) {
      reactor->Finish(ToGrpcStatus(parsed));
      return;
    }
    store_->Pull(header, [reactor, response, range = header.range(), dtype = header.dtype()](
                             absl::Status status, uint64_t version, PullPayload values) {
      if (status.ok()) {
        PullResponse reply;
        reply.set_version(version);
        reply.set_dtype(dtype);
        *reply.mutable_range() = range;
        // The reply aliases the shard's snapshot, which it keeps until gRPC has sent it.
        const char* data = values.data();
        const size_t size = values.size();
        SerializeWithPayload(reply, data, size, &PullPayload::ReturnReleased, values.Release(),
                             response);
      }
      reactor->Finish(ToGrpcStatus(status));
    });
  });
}

grpc::ServerUnaryReactor* ParameterService::Push(grpc::CallbackServerContext* context,
                                                 const grpc::ByteBuffer* request,
                                                 grpc::ByteBuffer* response) {
  return GuardedCall(context, "Push", [&](grpc::ServerUnaryReactor* reactor) {
    PushRequest header;
    PooledBuffer payload;
    std::optional<CopyCheckingFinite> copy;
    // The push's values are checked for NaN and Inf as they are copied off the wire.
    absl::Status status = ParseWithPayloadPieces(
        const_cast<grpc::ByteBuffer*>(request), &header,
        [&](size_t size) -> absl::Status {
          RETURN_IF_ERROR(store_->CheckPush(header, size).status());
          payload = BufferPool::Global()->Acquire(size);
          copy.emplace(payload.data(), header.dtype());
          return absl::OkStatus();
        },
        [&](const char* data, size_t size, size_t offset) { copy->Add(data, size, offset); });
    if (!status.ok()) {
      reactor->Finish(ToGrpcStatus(status));
      return;
    }
    // (A sparse push's values are checked again once ShardStore has widened them.)
    store_->Push(
        header, std::move(payload),
        [reactor, response](absl::StatusOr<uint64_t> version) {
          FinishWithVersion<PushResponse>(reactor, response, version);
        },
        copy->result());
  });
}

grpc::ServerUnaryReactor* ParameterService::Replicate(grpc::CallbackServerContext* context,
                                                      const grpc::ByteBuffer* request,
                                                      grpc::ByteBuffer* response) {
  return AnswerWithVersion<ReplicateRequest, ReplicateResponse>(
      context, "Replicate", request, response,
      [this](const ReplicateRequest& header, PooledBuffer& payload) {
        return store_->Replicate(header, payload.data(), payload.size());
      });
}

grpc::ServerUnaryReactor* ParameterService::InstallShard(grpc::CallbackServerContext* context,
                                                         const grpc::ByteBuffer* request,
                                                         grpc::ByteBuffer* response) {
  return AnswerWithVersion<InstallShardRequest, InstallShardResponse>(
      context, "InstallShard", request, response,
      [this](const InstallShardRequest& header, PooledBuffer& payload) {
        return store_->InstallShard(header, payload.data(), payload.size());
      });
}

grpc::ServerUnaryReactor* ParameterService::AddBackup(grpc::CallbackServerContext* context,
                                                      const AddBackupRequest* request,
                                                      AddBackupResponse* response) {
  return GuardedCall(context, "AddBackup", [&](grpc::ServerUnaryReactor* reactor) {
    store_->AddBackup(*request, Finisher(reactor, response));
  });
}

grpc::ServerUnaryReactor* ParameterService::Promote(grpc::CallbackServerContext* context,
                                                    const PromoteRequest* request,
                                                    PromoteResponse* response) {
  return GuardedCall(context, "Promote", [&](grpc::ServerUnaryReactor* reactor) {
    store_->Promote(*request, Finisher(reactor, response));
  });
}

}  // namespace psrv
