// The role table. Higher roles get the reads they need, not everything below them: an operator may
// also read what a viewer reads; workers and servers only what their own protocol needs.
#include "common/rpc_roles.h"

#include "absl/container/flat_hash_map.h"

namespace psrv {

const std::vector<RpcRoleRule>& RpcRoleTable() {
  static const auto* table = new std::vector<RpcRoleRule>{
      // Coordinator (ps_coordinator).
      {"/psrv.Coordinator/Register", {kRoleServer, kRoleWorker}},
      {"/psrv.Coordinator/Heartbeat", {kRoleServer, kRoleWorker}},
      {"/psrv.Coordinator/Leave", {kRoleServer, kRoleWorker}},
      {"/psrv.Coordinator/ListNodes", {kRoleViewer, kRoleOperator}},
      {"/psrv.Coordinator/SubmitJob", {kRoleOperator}},
      {"/psrv.Coordinator/GetJob", {kRoleViewer, kRoleOperator, kRoleWorker}},
      {"/psrv.Coordinator/ListJobs", {kRoleViewer, kRoleOperator}},
      {"/psrv.Coordinator/CancelJob", {kRoleOperator}},
      {"/psrv.Coordinator/WatchJob", {kRoleViewer, kRoleOperator}},
      {"/psrv.Coordinator/GetShardMap", {kRoleViewer, kRoleOperator, kRoleWorker}},
      {"/psrv.Coordinator/CheckpointJob", {kRoleOperator, kRoleServer}},
      {"/psrv.Coordinator/ReportProgress", {kRoleWorker}},
      {"/psrv.Coordinator/ReportUnreachable", {kRoleWorker}},
      // ParameterServer (ps_server).
      {"/psrv.ParameterServer/CreateShards", {kRoleCoordinator}},
      {"/psrv.ParameterServer/DropJob", {kRoleCoordinator}},
      {"/psrv.ParameterServer/SaveCheckpoint", {kRoleCoordinator}},
      {"/psrv.ParameterServer/Pull", {kRoleWorker, kRoleOperator}},
      {"/psrv.ParameterServer/Push", {kRoleWorker}},
      {"/psrv.ParameterServer/PullBatch", {kRoleWorker, kRoleOperator}},
      {"/psrv.ParameterServer/PushBatch", {kRoleWorker}},
      {"/psrv.ParameterServer/CommitStep", {kRoleWorker}},
      {"/psrv.ParameterServer/SetWorkers", {kRoleCoordinator}},
      {"/psrv.ParameterServer/Replicate", {kRoleServer}},
      {"/psrv.ParameterServer/InstallShard", {kRoleServer}},
      {"/psrv.ParameterServer/AddBackup", {kRoleCoordinator}},
      {"/psrv.ParameterServer/Promote", {kRoleCoordinator}},
      // Admin (ps_server).
      {"/psrv.Admin/GetStatus", {kRoleViewer, kRoleOperator, kRoleCoordinator}},
      // StageExchange (ps_worker of a pipeline job): the stages of a group.
      {"/psrv.StageExchange/SendTensors", {kRoleWorker}},
      // Services every gRPC server of the cluster adds (common/grpc_server.cc).
      {"/grpc.health.v1.Health/Check", {kAnyCertificate}},
      {"/grpc.health.v1.Health/Watch", {kAnyCertificate}},
      {"/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", {kAnyCertificate}},
  };
  return *table;
}

const RpcRoleRule* FindRpcRoleRule(absl::string_view method) {
  static const auto* index = [] {
    auto* map = new absl::flat_hash_map<std::string, const RpcRoleRule*>();
    for (const RpcRoleRule& rule : RpcRoleTable()) (*map)[rule.method] = &rule;
    return map;
  }();
  auto it = index->find(method);
  return it == index->end() ? nullptr : it->second;
}

}  // namespace psrv
