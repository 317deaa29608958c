// gRPC adapter for the Coordinator service over ClusterCoordinator. No logic of its own.
#ifndef PSRV_COORDINATOR_COORDINATOR_SERVICE_H_
#define PSRV_COORDINATOR_COORDINATOR_SERVICE_H_

#include "coordinator/cluster.h"
#include "proto/coordinator.grpc.pb.h"

namespace psrv {

// Thread-safe (synchronous gRPC API: WatchJob holds one server thread per watcher).
class CoordinatorService final : public Coordinator::Service {
 public:
  explicit CoordinatorService(ClusterCoordinator* cluster) : cluster_(cluster) {}

  grpc::Status Register(grpc::ServerContext*, const RegisterRequest* request,
                        RegisterResponse* response) override;
  grpc::Status Heartbeat(grpc::ServerContext*, const HeartbeatRequest* request,
                         HeartbeatResponse* response) override;
  grpc::Status CheckpointJob(grpc::ServerContext*, const CheckpointJobRequest* request,
                             CheckpointManifest* response) override;
  grpc::Status Leave(grpc::ServerContext*, const LeaveRequest* request,
                     LeaveResponse* response) override;
  grpc::Status ListNodes(grpc::ServerContext*, const ListNodesRequest* request,
                         ListNodesResponse* response) override;
  grpc::Status SubmitJob(grpc::ServerContext*, const SubmitJobRequest* request,
                         SubmitJobResponse* response) override;
  grpc::Status GetJob(grpc::ServerContext*, const GetJobRequest* request,
                      JobStatus* response) override;
  grpc::Status ListJobs(grpc::ServerContext*, const ListJobsRequest* request,
                        ListJobsResponse* response) override;
  grpc::Status CancelJob(grpc::ServerContext*, const CancelJobRequest* request,
                         JobStatus* response) override;
  grpc::Status WatchJob(grpc::ServerContext* context, const WatchJobRequest* request,
                        grpc::ServerWriter<JobStatus>* writer) override;
  grpc::Status GetShardMap(grpc::ServerContext*, const GetShardMapRequest* request,
                           ShardMap* response) override;
  grpc::Status ReportProgress(grpc::ServerContext*, const ReportProgressRequest* request,
                              ReportProgressResponse* response) override;
  grpc::Status ReportUnreachable(grpc::ServerContext*, const ReportUnreachableRequest* request,
                                 ReportUnreachableResponse* response) override;

 private:
  ClusterCoordinator* const cluster_;
};

}  // namespace psrv

#endif  // PSRV_COORDINATOR_COORDINATOR_SERVICE_H_
