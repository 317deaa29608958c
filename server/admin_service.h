// gRPC adapter for the Admin service: shard status from ShardStore.
#ifndef PSRV_SERVER_ADMIN_SERVICE_H_
#define PSRV_SERVER_ADMIN_SERVICE_H_

#include "proto/admin.grpc.pb.h"
#include "server/guarded_call.h"
#include "server/shard_store.h"

namespace psrv {

// Thread-safe.
class AdminService final : public Admin::CallbackService {
 public:
  explicit AdminService(ShardStore* store) : store_(store) {}

  grpc::ServerUnaryReactor* GetStatus(grpc::CallbackServerContext* context,
                                      const GetStatusRequest* request,
                                      ServerStatus* response) override {
    return GuardedCall(context, "GetStatus", [&](grpc::ServerUnaryReactor* reactor) {
      *response = store_->Status(request->job_id());
      reactor->Finish(grpc::Status::OK);
    });
  }

 private:
  ShardStore* const store_;
};

}  // namespace psrv

#endif  // PSRV_SERVER_ADMIN_SERVICE_H_
