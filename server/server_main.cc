// ps_server: holds shards of model parameters with their optimizer state; serves ParameterServer
// (pull, push) and Admin (shard status) over gRPC and registers with the coordinator.
#include <unistd.h>

#include <memory>
#include <optional>
#include <set>
#include <string>

#include <glog/logging.h>
#include <grpcpp/client_context.h>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "common/malloc_tuning.h"
#include "common/flags_help.h"
#include "common/tls_flags.h"
#include "common/grpc_server.h"
#include "common/metrics.h"
#include "common/monitoring.h"
#include "common/membership.h"
#include "common/shutdown.h"
#include "server/admin_service.h"
#include "server/parameter_service.h"
#include "server/shard_store.h"

ABSL_FLAG(std::string, host, "0.0.0.0", "Address to listen on.");
ABSL_FLAG(int, port, 7071, "Port to listen on; 0 picks a free port (see --port_file).");
ABSL_FLAG(std::string, port_file, "",
          "If set, the port actually bound is written to this file once the server is serving.");
ABSL_FLAG(std::string, coordinator, "",
          "host:port of ps_coordinator. Empty: run standalone, without registering.");
ABSL_FLAG(int, max_jobs, 0,
          "Exit (status 0) once this many jobs whose shards this server holds have ended (0: "
          "serve until terminated). With 1, a server started for one job finishes with it.");
ABSL_FLAG(std::optional<int>, metrics_port, std::nullopt,
          "Port of the HTTP server for Prometheus metrics (/metrics) and /healthz "
          "(docs/METRICS.md). Default 9091; if left at the default and that port is taken, the "
          "server runs without it (a warning is logged). 0 picks a free port (see "
          "--metrics_port_file); negative: no HTTP server.");
ABSL_FLAG(std::string, metrics_port_file, "",
          "If set, the metrics port actually bound is written to this file (before --port_file).");
ABSL_FLAG(std::string, unix_socket, "",
          "Also listen on this Unix domain socket and advertise it (unix:PATH) as the server's "
          "address: for clusters whose processes all run on this machine (psctl local), where "
          "pulls and pushes then skip the TCP stack. Empty: TCP only.");
ABSL_FLAG(std::string, advertise_host, "",
          "Host name that workers use to reach this server. Default: --host, or this machine's "
          "hostname when --host is 0.0.0.0.");

namespace psrv {
namespace {

std::string AdvertisedHost() {
  std::string host = absl::GetFlag(FLAGS_advertise_host);
  if (!host.empty()) return host;
  host = absl::GetFlag(FLAGS_host);
  if (host != "0.0.0.0" && host != "::" && host != "[::]") return host;
  char name[256] = {0};
  gethostname(name, sizeof(name) - 1);
  return name;
}

// Asks the coordinator for a checkpoint of every running job with shards here (SYNC jobs with a
// checkpoint directory; others are refused), so that after this server leaves they restart from a
// fresh one. Meanwhile the server keeps serving: the checkpoint needs the next two steps.
void CheckpointJobsBeforeLeaving(ShardStore* store, Membership* membership) {
  for (const std::string& job : store->JobIds()) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
    CheckpointJobRequest request;
    request.set_job_id(job);
    CheckpointManifest manifest;
    grpc::Status status = membership->stub()->CheckpointJob(&context, request, &manifest);
    if (status.ok()) {
      LOG(INFO) << "checkpointed job " << job << " at step " << manifest.step() << " before leaving";
    } else {
      LOG(INFO) << "no checkpoint of job " << job << " before leaving: " << status.error_message();
    }
  }
}

int Run() {
  absl::Notification* terminate = InstallTerminationHandler();
  MetricsRegistry metrics;
  ShardStore::Options store_options;
  store_options.metrics = &metrics;
  ShardStore store(store_options);
  ParameterService parameter_service(&store);
  AdminService admin_service(&store);
  // Metrics first: once --port_file exists, so does --metrics_port_file.
  MonitoringOptions monitoring;
  monitoring.host = absl::GetFlag(FLAGS_host);
  monitoring.port = absl::GetFlag(FLAGS_metrics_port);
  monitoring.default_port = 9091;
  monitoring.port_file = absl::GetFlag(FLAGS_metrics_port_file);
  monitoring.bearer_token = HttpTokenFromFlags();
  absl::StatusOr<std::unique_ptr<HttpServer>> http = StartMonitoring(monitoring, &metrics);
  if (!http.ok()) {
    LOG(ERROR) << http.status();
    return 1;
  }
  absl::StatusOr<RunningServer> server = StartGrpcServer(
      absl::GetFlag(FLAGS_host), absl::GetFlag(FLAGS_port), {&parameter_service, &admin_service},
      absl::GetFlag(FLAGS_port_file), &metrics, absl::GetFlag(FLAGS_unix_socket));
  if (!server.ok()) {
    LOG(ERROR) << server.status();
    return 1;
  }
  if (*http != nullptr) {
    LOG(INFO) << "metrics on http://" << absl::GetFlag(FLAGS_host) << ":" << (*http)->port()
              << "/metrics";
  }
  const std::string address = absl::GetFlag(FLAGS_unix_socket).empty()
                                  ? absl::StrCat(AdvertisedHost(), ":", server->port)
                                  : absl::StrCat("unix:", absl::GetFlag(FLAGS_unix_socket));
  store.SetIdentity("standalone", address);
  LOG(INFO) << "ps_server listening on " << absl::GetFlag(FLAGS_host) << ":" << server->port
            << ", reachable as " << address;

  // Jobs the coordinator reported as ended, for --max_jobs.
  absl::Mutex ended_mu;
  std::set<std::string> ended_jobs;
  absl::Notification served_enough;
  const size_t max_jobs = absl::GetFlag(FLAGS_max_jobs);
  std::unique_ptr<Membership> membership;
  if (!absl::GetFlag(FLAGS_coordinator).empty()) {
    membership = std::make_unique<Membership>(
        Membership::Options{absl::GetFlag(FLAGS_coordinator), SERVER, address,
                            store.incarnation()},
        [&](const HeartbeatResponse& response) {
          absl::MutexLock lock(&ended_mu);
          ended_jobs.insert(response.ended_jobs().begin(), response.ended_jobs().end());
          if (max_jobs > 0 && ended_jobs.size() >= max_jobs && !served_enough.HasBeenNotified()) {
            LOG(INFO) << ended_jobs.size() << " job(s) ended; exiting (--max_jobs=" << max_jobs
                      << ")";
            served_enough.Notify();
          }
        });
    absl::Status status = membership->Start(absl::Seconds(30));
    if (!status.ok()) {
      LOG(ERROR) << status;
      server->server->Shutdown();
      return 1;
    }
    store.SetIdentity(membership->node_id(), address);
  }

  while (!terminate->WaitForNotificationWithTimeout(absl::Milliseconds(100)) &&
         !served_enough.HasBeenNotified()) {
  }
  LOG(INFO) << "ps_server shutting down";
  if (membership && terminate->HasBeenNotified()) CheckpointJobsBeforeLeaving(&store, membership.get());
  if (membership) membership->Stop();
  store.CancelAllWaiters();
  server->server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  return 0;
}

}  // namespace
}  // namespace psrv

int main(int argc, char** argv) {
  psrv::TuneMallocForTensors();
  absl::SetProgramUsageMessage(
      "Parameter server: holds shards of a model's parameters and optimizer state.\n"
      "Usage: ps_server --coordinator=HOST:PORT [--host=0.0.0.0] [--port=7071] [--port_file=F]\n"
      "       [--metrics_port=9091] [--metrics_port_file=F]");
  psrv::ShowMainFlagsInHelp();
  absl::ParseCommandLine(argc, argv);
  google::InitGoogleLogging(argv[0]);
  FLAGS_logtostderr = true;
  if (!psrv::EnableTlsFromFlags()) return 1;
  return psrv::Run();
}
