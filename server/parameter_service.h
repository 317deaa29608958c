// gRPC adapter for the ParameterServer service: parses requests (tensor payloads without copies,
// common/wire.h), calls ShardStore, converts its Status once. No logic of its own.
#ifndef PSRV_SERVER_PARAMETER_SERVICE_H_
#define PSRV_SERVER_PARAMETER_SERVICE_H_

#include "proto/parameter_server.grpc.pb.h"
#include "server/shard_store.h"

namespace psrv {

// Every method on gRPC's callback API; those with tensor payloads raw (common/wire.h).
using ParameterServiceBase = ParameterServer::WithRawCallbackMethod_Pull<
    ParameterServer::WithRawCallbackMethod_Push<ParameterServer::WithRawCallbackMethod_PushBatch<
    ParameterServer::WithRawCallbackMethod_PullBatch<ParameterServer::WithRawCallbackMethod_Replicate<
        ParameterServer::WithRawCallbackMethod_InstallShard<
            ParameterServer::WithCallbackMethod_CreateShards<
                ParameterServer::WithCallbackMethod_DropJob<
                    ParameterServer::WithCallbackMethod_SaveCheckpoint<
                        ParameterServer::WithCallbackMethod_SetWorkers<
                            ParameterServer::WithCallbackMethod_AddBackup<
                                ParameterServer::WithCallbackMethod_Promote<
                                    ParameterServer::WithCallbackMethod_CommitStep<
                                        ParameterServer::Service>>>>>>>>>>>>>;

// Thread-safe; never blocks a callback thread (waiting SYNC pulls are answered when the step is
// applied, replicated pushes when the backup answered).
class ParameterService final : public ParameterServiceBase {
 public:
  explicit ParameterService(ShardStore* store) : store_(store) {}

  grpc::ServerUnaryReactor* CreateShards(grpc::CallbackServerContext* context,
                                         const CreateShardsRequest* request,
                                         CreateShardsResponse* response) override;
  grpc::ServerUnaryReactor* DropJob(grpc::CallbackServerContext* context,
                                    const DropJobRequest* request,
                                    DropJobResponse* response) override;
  grpc::ServerUnaryReactor* SaveCheckpoint(grpc::CallbackServerContext* context,
                                           const SaveCheckpointRequest* request,
                                           SaveCheckpointResponse* response) override;
  grpc::ServerUnaryReactor* SetWorkers(grpc::CallbackServerContext* context,
                                       const SetWorkersRequest* request,
                                       SetWorkersResponse* response) override;
  grpc::ServerUnaryReactor* CommitStep(grpc::CallbackServerContext* context,
                                       const CommitStepRequest* request,
                                       CommitStepResponse* response) override;
  grpc::ServerUnaryReactor* Pull(grpc::CallbackServerContext* context,
                                 const grpc::ByteBuffer* request,
                                 grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* Push(grpc::CallbackServerContext* context,
                                 const grpc::ByteBuffer* request,
                                 grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* PushBatch(grpc::CallbackServerContext* context,
                                      const grpc::ByteBuffer* request,
                                      grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* PullBatch(grpc::CallbackServerContext* context,
                                      const grpc::ByteBuffer* request,
                                      grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* Replicate(grpc::CallbackServerContext* context,
                                      const grpc::ByteBuffer* request,
                                      grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* InstallShard(grpc::CallbackServerContext* context,
                                         const grpc::ByteBuffer* request,
                                         grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* AddBackup(grpc::CallbackServerContext* context,
                                      const AddBackupRequest* request,
                                      AddBackupResponse* response) override;
  grpc::ServerUnaryReactor* Promote(grpc::CallbackServerContext* context,
                                    const PromoteRequest* request,
                                    PromoteResponse* response) override;

 private:
  ShardStore* const store_;
};

}  // namespace psrv

#endif  // PSRV_SERVER_PARAMETER_SERVICE_H_
