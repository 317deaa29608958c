// ps_coordinator: cluster membership, shard assignment and the job lifecycle, over gRPC.
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include <glog/logging.h>
#include <grpcpp/client_context.h>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/synchronization/mutex.h"
#include "common/flags_help.h"
#include "common/tls_flags.h"
#include "common/channel.h"
#include "common/grpc_server.h"
#include "common/http_server.h"
#include "common/metrics.h"
#include "common/monitoring.h"
#include "common/shutdown.h"
#include "common/grpc_status.h"
#include "common/status_macros.h"
#include "coordinator/cluster.h"
#include "coordinator/coordinator_metrics.h"
#include "coordinator/coordinator_service.h"
#include "coordinator/state_store.h"
#include "coordinator/status_page.h"
#include "proto/admin.grpc.pb.h"
#include "proto/parameter_server.grpc.pb.h"

ABSL_FLAG(std::string, host, "0.0.0.0", "Address to listen on.");
ABSL_FLAG(int, port, 7070, "Port to listen on; 0 picks a free port (see --port_file).");
ABSL_FLAG(std::string, port_file, "",
          "If set, the port actually bound is written to this file once serving.");
ABSL_FLAG(std::optional<int>, metrics_port, std::nullopt,
          "Port of the HTTP server for the status page (/), its JSON (/api/status), Prometheus "
          "metrics (/metrics) and /healthz (docs/METRICS.md). Default 9090; if left at the "
          "default and that port is taken, the coordinator runs without it (a warning is logged). "
          "0 picks a free port (see --metrics_port_file); negative: no HTTP server.");
ABSL_FLAG(std::string, metrics_port_file, "",
          "If set, the HTTP port actually bound is written to this file (before --port_file).");
ABSL_FLAG(std::string, state_db, "",
          "SQLite database file (created if missing) where the coordinator keeps its jobs, nodes "
          "and id counters. A coordinator restarted on the same file carries on with them: "
          "running jobs go on, and servers and workers keep their ids. Only one coordinator can "
          "use a file at a time. Empty: memory only, and every job is lost when the coordinator "
          "stops.");
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

absl::StatusOr<ServerStatus> ServerStatusOn(const std::string& address,
                                            const std::string& job_id) {
  auto stub = Admin::NewStub(CreateChannel(address));
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  GetStatusRequest request;
  request.set_job_id(job_id);
  ServerStatus status;
  RETURN_IF_ERROR(FromGrpcStatus(stub->GetStatus(&context, request, &status), address));
  return status;
}

absl::StatusOr<uint64_t> ShardVersionOn(const std::string& address, const std::string& job_id) {
  ASSIGN_OR_RETURN(ServerStatus status, ServerStatusOn(address, job_id));
  uint64_t version = 0;
  for (const ShardStatus& shard : status.shards()) version = std::max(version, shard.version());
  return version;
}

absl::StatusOr<SaveCheckpointResponse> SaveCheckpointOn(const std::string& address,
                                                        const SaveCheckpointRequest& request) {
  auto stub = ParameterServer::NewStub(CreateChannel(address));
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(120));
  SaveCheckpointResponse response;
  RETURN_IF_ERROR(FromGrpcStatus(stub->SaveCheckpoint(&context, request, &response), address));
  return response;
}

absl::Status DropJobOn(const std::string& address, const std::string& job_id) {
  auto stub = ParameterServer::NewStub(CreateChannel(address));
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  DropJobRequest request;
  request.set_job_id(job_id);
  DropJobResponse response;
  return FromGrpcStatus(stub->DropJob(&context, request, &response), address);
}

absl::StatusOr<PromoteResponse> PromoteOn(const std::string& address,
                                          const PromoteRequest& request) {
  auto stub = ParameterServer::NewStub(CreateChannel(address));
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  PromoteResponse response;
  RETURN_IF_ERROR(FromGrpcStatus(stub->Promote(&context, request, &response), address));
  return response;
}

absl::StatusOr<AddBackupResponse> AddBackupOn(const std::string& address,
                                              const AddBackupRequest& request) {
  auto stub = ParameterServer::NewStub(CreateChannel(address));
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  AddBackupResponse response;
  RETURN_IF_ERROR(FromGrpcStatus(stub->AddBackup(&context, request, &response), address));
  return response;
}

// Any answer within a second (even an error) means a server is there; its incarnation (0 if its
// answer was an error).
absl::StatusOr<uint64_t> ProbeServer(const std::string& address) {
  auto stub = Admin::NewStub(CreateChannel(address));
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(1));
  GetStatusRequest request;
  request.set_job_id("-probe-");  // Nothing to list: a cheap call.
  ServerStatus status;
  grpc::Status result = stub->GetStatus(&context, request, &status);
  if (result.error_code() == grpc::StatusCode::UNAVAILABLE ||
      result.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) {
    return FromGrpcStatus(result, address);
  }
  return result.ok() ? status.incarnation() : 0;
}

absl::Status SetWorkersOn(const std::string& address, const SetWorkersRequest& request) {
  auto stub = ParameterServer::NewStub(CreateChannel(address));
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  SetWorkersResponse response;
  return FromGrpcStatus(stub->SetWorkers(&context, request, &response), address);
}

// Admin.GetStatus of the servers, for the status page: owns one channel per server address, kept
// for later pages. Thread-safe (pages are served by several HTTP threads).
class ServerStatusClient {
 public:
  absl::StatusOr<ServerStatus> Get(const std::string& address) {
    Admin::Stub* stub;
    {
      absl::MutexLock lock(&mu_);
      std::unique_ptr<Admin::Stub>& cached = stubs_[address];
      if (cached == nullptr) cached = Admin::NewStub(CreateChannel(address));
      stub = cached.get();
    }
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
    ServerStatus status;
    grpc::Status result = stub->GetStatus(&context, GetStatusRequest(), &status);
    if (!result.ok()) return FromGrpcStatus(result, absl::StrCat("Admin.GetStatus of ", address));
    return status;
  }

 private:
  absl::Mutex mu_;
  std::map<std::string, std::unique_ptr<Admin::Stub>> stubs_ ABSL_GUARDED_BY(mu_);
};

std::string Hostname() {
  char name[256] = {0};
  gethostname(name, sizeof(name) - 1);
  return name;
}

int Run() {
  absl::Notification* terminate = InstallTerminationHandler();
  ClusterCoordinator::Options options;
  options.heartbeat_interval = absl::Milliseconds(absl::GetFlag(FLAGS_heartbeat_interval_ms));
  options.create_shards = CreateShardsOn;
  options.shard_version = ShardVersionOn;
  options.save_checkpoint = SaveCheckpointOn;
  options.drop_job = DropJobOn;
  options.set_workers = SetWorkersOn;
  options.promote = PromoteOn;
  options.add_backup = AddBackupOn;
  options.probe = ProbeServer;
  options.server_status = ServerStatusOn;
  std::unique_ptr<StateStore> state;
  const std::string state_db = absl::GetFlag(FLAGS_state_db);
  if (state_db.empty()) {
    LOG(WARNING) << "no --state_db: jobs and nodes are kept in memory only, and lost when the "
                    "coordinator restarts";
  } else {
    absl::StatusOr<std::unique_ptr<StateStore>> opened = StateStore::Open(state_db);
    if (!opened.ok()) {
      LOG(ERROR) << opened.status();
      return 1;
    }
    state = std::move(*opened);
    options.state = state.get();
  }
  ClusterCoordinator cluster(options);
  if (absl::Status loaded = cluster.Load(); !loaded.ok()) {
    LOG(ERROR) << "loading the coordinator's state: " << loaded;
    return 1;
  }
  CoordinatorService service(&cluster);
  MetricsRegistry metrics;
  AddCoordinatorMetrics(&cluster, &metrics, options.clock);
  if (state != nullptr) {
    metrics.AddCollector([store = state.get()](CollectedMetrics* out) {
      out->AddCounter("psrv_coordinator_state_write_errors_total",
                      "Writes to the state database (--state_db) that failed (retried).")
          ->Add({}, static_cast<double>(store->failed_writes()));
    });
  }

  // The status page names the coordinator by its gRPC address, known once that server runs.
  const std::string host = absl::GetFlag(FLAGS_host);
  const std::string shown_host = host == "0.0.0.0" || host == "::" ? Hostname() : host;
  std::atomic<int> grpc_port{0};
  ServerStatusClient servers;
  auto snapshot = [&] {
    return TakeSnapshot(&cluster, absl::StrCat(shown_host, ":", grpc_port.load()),
                        [&servers](const std::string& address) { return servers.Get(address); });
  };
  MonitoringOptions monitoring;
  monitoring.host = host;
  monitoring.port = absl::GetFlag(FLAGS_metrics_port);
  monitoring.default_port = 9090;
  monitoring.port_file = absl::GetFlag(FLAGS_metrics_port_file);
  monitoring.bearer_token = HttpTokenFromFlags();
  monitoring.pages["/"] = [&](const HttpRequest& request) {
    StatusPageOptions page;
    int refresh;
    if (absl::StartsWith(request.query, "refresh=") &&
        absl::SimpleAtoi(request.query.substr(8), &refresh)) {
      page.refresh_seconds = std::max(0, refresh);
    }
    return HttpResponse{200, "text/html; charset=utf-8", RenderStatusPage(snapshot(), page)};
  };
  monitoring.pages["/api/status"] = [&](const HttpRequest&) {
    return HttpResponse{200, "application/json", RenderStatusJson(snapshot())};
  };
  // HTTP first: once --port_file exists, so does --metrics_port_file.
  absl::StatusOr<std::unique_ptr<HttpServer>> http = StartMonitoring(monitoring, &metrics);
  if (!http.ok()) {
    LOG(ERROR) << http.status();
    return 1;
  }
  absl::StatusOr<RunningServer> server =
      StartGrpcServer(host, absl::GetFlag(FLAGS_port), {&service},
                      absl::GetFlag(FLAGS_port_file), &metrics);
  if (!server.ok()) {
    LOG(ERROR) << server.status();
    return 1;
  }
  grpc_port = server->port;
  LOG(INFO) << "ps_coordinator listening on " << host << ":" << server->port;
  if (*http != nullptr) {
    LOG(INFO) << "status page on http://" << shown_host << ":" << (*http)->port()
              << "/ (metrics: /metrics)";
  }

  // Scheduling and failure detection.
  while (!terminate->WaitForNotificationWithTimeout(options.tick_interval)) cluster.Tick();

  LOG(INFO) << "ps_coordinator shutting down";
  server->server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  return 0;
}

}  // namespace
}  // namespace psrv

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "Coordinator: tracks parameter servers and workers, assigns shards, runs jobs.\n"
      "Usage: ps_coordinator [--host=0.0.0.0] [--port=7070] [--port_file=F] [--metrics_port=9090]\n"
      "       [--metrics_port_file=F] [--state_db=FILE]");
  psrv::ShowMainFlagsInHelp();
  absl::ParseCommandLine(argc, argv);
  google::InitGoogleLogging(argv[0]);
  FLAGS_logtostderr = true;
  if (!psrv::EnableTlsFromFlags()) return 1;
  return psrv::Run();
}
