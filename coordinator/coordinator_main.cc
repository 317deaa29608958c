// ps_coordinator: cluster membership, shard assignment and the job lifecycle, over gRPC.
#include <memory>
#include <string>

#include <glog/logging.h>
#include <grpcpp/client_context.h>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "common/channel.h"
#include "common/grpc_server.h"
#include "common/shutdown.h"
#include "common/status.h"
#include "coordinator/cluster.h"
#include "coordinator/coordinator_service.h"
#include "proto/parameter_server.grpc.pb.h"

ABSL_FLAG(std::string, host, "0.0.0.0", "Address to listen on.");
ABSL_FLAG(int, port, 7070, "Port to listen on; 0 picks a free port (see --port_file).");
ABSL_FLAG(std::string, port_file, "",
          "If set, the port actually bound is written to this file once serving.");
ABSL_FLAG(int, heartbeat_interval_ms, 500,
          "How often servers and workers send heartbeats. A node silent for 10 intervals is "
          "DEAD, and a running job that needs it FAILS.");

namespace psrv {
namespace {

absl::Status CreateShardsOn(const std::string& address, const CreateShardsRequest& request) {
  auto stub = ParameterServer::NewStub(CreateChannel(address));
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
  CreateShardsResponse response;
  return FromGrpcStatus(stub->CreateShards(&context, request, &response));
}

int Run() {
  absl::Notification* terminate = InstallTerminationHandler();
  ClusterCoordinator::Options options;
  options.heartbeat_interval = absl::Milliseconds(absl::GetFlag(FLAGS_heartbeat_interval_ms));
  options.create_shards = CreateShardsOn;
  ClusterCoordinator cluster(options);
  CoordinatorService service(&cluster);

  absl::StatusOr<RunningServer> server =
      StartGrpcServer(absl::GetFlag(FLAGS_host), absl::GetFlag(FLAGS_port), {&service},
                      absl::GetFlag(FLAGS_port_file));
  if (!server.ok()) {
    LOG(ERROR) << server.status();
    return 1;
  }
  LOG(INFO) << "ps_coordinator listening on " << absl::GetFlag(FLAGS_host) << ":" << server->port;

  // Scheduling and failure detection.
  while (!terminate->WaitForNotificationWithTimeout(absl::Milliseconds(100))) cluster.Tick();

  LOG(INFO) << "ps_coordinator shutting down";
  server->server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  return 0;
}

}  // namespace
}  // namespace psrv

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "Coordinator: tracks parameter servers and workers, assigns shards, runs jobs.\n"
      "Usage: ps_coordinator [--host=0.0.0.0] [--port=7070] [--port_file=F]");
  absl::ParseCommandLine(argc, argv);
  google::InitGoogleLogging(argv[0]);
  FLAGS_logtostderr = true;
  return psrv::Run();
}
