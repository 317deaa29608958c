#include "coordinator/coordinator_service.h"

#include "common/grpc_status.h"

namespace psrv {
namespace {

// Copies a StatusOr's value into `out` and converts its status.
template <typename T>
grpc::Status Answer(absl::StatusOr<T> result, T* out) {
  if (result.ok()) *out = std::move(result).value();
  return ToGrpcStatus(result.status());
}

}  // namespace

grpc::Status CoordinatorService::Register(grpc::ServerContext*, const RegisterRequest* request,
                                          RegisterResponse* response) {
  return Answer(cluster_->Register(*request), response);
}

grpc::Status CoordinatorService::Heartbeat(grpc::ServerContext*, const HeartbeatRequest* request,
                                           HeartbeatResponse* response) {
  return Answer(cluster_->Heartbeat(*request), response);
}

grpc::Status CoordinatorService::CheckpointJob(grpc::ServerContext*,
                                               const CheckpointJobRequest* request,
                                               CheckpointManifest* response) {
  return Answer(cluster_->CheckpointJob(request->job_id(), request->directory()), response);
}

grpc::Status CoordinatorService::Leave(grpc::ServerContext*, const LeaveRequest* request,
                                       LeaveResponse*) {
  return ToGrpcStatus(cluster_->Leave(request->node_id()));
}

grpc::Status CoordinatorService::ListNodes(grpc::ServerContext*, const ListNodesRequest*,
                                           ListNodesResponse* response) {
  *response = cluster_->ListNodes();
  return grpc::Status::OK;
}

grpc::Status CoordinatorService::SubmitJob(grpc::ServerContext*, const SubmitJobRequest* request,
                                           SubmitJobResponse* response) {
  absl::StatusOr<std::string> id = cluster_->SubmitJob(request->spec());
  if (id.ok()) response->set_job_id(*id);
  return ToGrpcStatus(id.status());
}

grpc::Status CoordinatorService::GetJob(grpc::ServerContext*, const GetJobRequest* request,
                                        JobStatus* response) {
  return Answer(cluster_->GetJob(request->job_id()), response);
}

grpc::Status CoordinatorService::ListJobs(grpc::ServerContext*, const ListJobsRequest*,
                                          ListJobsResponse* response) {
  *response = cluster_->ListJobs();
  return grpc::Status::OK;
}

grpc::Status CoordinatorService::CancelJob(grpc::ServerContext*, const CancelJobRequest* request,
                                           JobStatus* response) {
  return Answer(cluster_->CancelJob(request->job_id()), response);
}

grpc::Status CoordinatorService::WatchJob(grpc::ServerContext* context,
                                          const WatchJobRequest* request,
                                          grpc::ServerWriter<JobStatus>* writer) {
  uint64_t revision = 0, last_sent = 0;
  while (!context->IsCancelled()) {
    absl::StatusOr<JobStatus> status =
        cluster_->WaitForJobChange(request->job_id(), &revision, absl::Seconds(1));
    if (!status.ok()) return ToGrpcStatus(status.status());
    // Unchanged after the timeout: loop to notice a cancelled watcher, without resending.
    if (revision == last_sent) continue;
    last_sent = revision;
    if (!writer->Write(*status)) break;
    if (IsTerminal(status->state())) break;
  }
  return grpc::Status::OK;
}

grpc::Status CoordinatorService::GetShardMap(grpc::ServerContext*,
                                             const GetShardMapRequest* request,
                                             ShardMap* response) {
  return Answer(cluster_->GetShardMap(request->job_id()), response);
}

grpc::Status CoordinatorService::ReportProgress(grpc::ServerContext*,
                                                const ReportProgressRequest* request,
                                                ReportProgressResponse* response) {
  return Answer(cluster_->ReportProgress(*request), response);
}

grpc::Status CoordinatorService::ReportUnreachable(grpc::ServerContext*,
                                                   const ReportUnreachableRequest* request,
                                                   ReportUnreachableResponse*) {
  return ToGrpcStatus(cluster_->ReportUnreachable(request->address()));
}

}  // namespace psrv
