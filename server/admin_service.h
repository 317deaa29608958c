// gRPC adapter for the Admin service: shard status from ShardStore.
#ifndef PSRV_SERVER_ADMIN_SERVICE_H_
#define PSRV_SERVER_ADMIN_SERVICE_H_

#include "proto/admin.grpc.pb.h"
#include "server/shard_store.h"

namespace psrv {

// Thread-safe.
class AdminService final : public Admin::CallbackService {
 public:
  explicit AdminService(ShardStore* store) : store_(store) {}

  grpc::ServerUnaryReactor* GetStatus(grpc::CallbackServerContext* context,
                                      const GetStatusRequest* request,
                                      ServerStatus* response) override {
    *response = store_->Status(request->job_id());
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }

 private:
  ShardStore* const store_;
};

}  // namespace psrv

#endif  // PSRV_SERVER_ADMIN_SERVICE_H_
