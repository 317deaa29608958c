// ps_server: holds shards of model parameters with their optimizer state; serves ParameterServer
// (pull, push) and Admin (shard status) over gRPC and registers with the coordinator.
#include <unistd.h>

#include <filesystem>
#include <limits>
#include <memory>
#include <optional>
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
#include "server/ended_jobs.h"
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
ABSL_FLAG(std::optional<uint64_t>, max_memory_bytes, std::nullopt,
          "The most memory, in bytes, that the shards held here may take: parameters, optimizer "
          "state, SYNC aggregation buffers and copies, backups included (estimated from their "
          "sizes when they are created). CreateShards and InstallShard beyond it answer "
          "RESOURCE_EXHAUSTED, allocating nothing. Default: 80% of this machine's physical "
          "memory.");
ABSL_FLAG(std::string, checkpoint_root, "",
          "The folder that checkpoints are confined to: SaveCheckpoint's directory, and the files "
          "that CreateShards restores from (restore_from, init_from_safetensors), must be "
          "absolute paths that resolve (symlinks and '..' followed) under it, else the request "
          "is refused (INVALID_ARGUMENT / PERMISSION_DENIED). Default: the server's working "
          "directory; / allows any path.");
ABSL_FLAG(absl::Duration, ended_job_ttl, absl::Hours(1),
          "How long the shards of a job that ended (as the coordinator reports) are kept, so that "
          "its final parameters can still be read (psctl generate, export) before their memory "
          "is freed. 'inf': for ever.");
ABSL_FLAG(std::string, advertise_host, "",
          "Host name that workers use to reach this server. Default: --host, or this machine's "
          "hostname when --host is 0.0.0.0.");

namespace psrv {
namespace {

// --max_memory_bytes, or 80% of the physical memory.
uint64_t MaxMemoryBytes() {
  if (std::optional<uint64_t> bytes = absl::GetFlag(FLAGS_max_memory_bytes)) return *bytes;
  const long pages = sysconf(_SC_PHYS_PAGES);
  const long page_size = sysconf(_SC_PAGE_SIZE);
  if (pages <= 0 || page_size <= 0) return std::numeric_limits<uint64_t>::max();
  return static_cast<uint64_t>(pages) / 5 * 4 * static_cast<uint64_t>(page_size);
}

// --checkpoint_root, or the working directory.
std::string CheckpointRoot() {
  std::string root = absl::GetFlag(FLAGS_checkpoint_root);
  if (!root.empty()) return root;
  std::error_code error;
  root = std::filesystem::current_path(error).string();
  return error ? "/nonexistent" : root;  // No working directory: nothing is allowed.
}

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
  store_options.max_memory_bytes = MaxMemoryBytes();
  store_options.checkpoint_root = CheckpointRoot();
  LOG(INFO) << "shards may take up to " << store_options.max_memory_bytes
            << " bytes (--max_memory_bytes); checkpoints under " << store_options.checkpoint_root
            << " (--checkpoint_root)";
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

  // Jobs the coordinator reported as ended: for --max_jobs, and dropped after --ended_job_ttl.
  EndedJobs ended_jobs(absl::GetFlag(FLAGS_ended_job_ttl));
  absl::Notification served_enough;
  const size_t max_jobs = absl::GetFlag(FLAGS_max_jobs);
  std::unique_ptr<Membership> membership;
  if (!absl::GetFlag(FLAGS_coordinator).empty()) {
    membership = std::make_unique<Membership>(
        Membership::Options{absl::GetFlag(FLAGS_coordinator), SERVER, address,
                            store.incarnation(), store_options.max_memory_bytes},
        [&](const HeartbeatResponse& response) {
          // Fenced: this server was taken for lost and those jobs failed over elsewhere.
          for (const std::string& job : response.drop_jobs()) {
            absl::Status dropped = store.DropJob(job);
            LOG(WARNING) << "job " << job << " failed over to other servers while this one was "
                         << "away; its shards here are dropped: " << dropped;
          }
          const size_t ended = ended_jobs.Add(response.ended_jobs(), absl::Now());
          if (max_jobs > 0 && ended >= max_jobs && !served_enough.HasBeenNotified()) {
            LOG(INFO) << ended << " job(s) ended; exiting (--max_jobs=" << max_jobs << ")";
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
    for (const std::string& job : ended_jobs.TakeExpired(absl::Now())) {
      absl::Status dropped = store.DropJob(job);
      LOG(INFO) << "job " << job << " ended " << absl::GetFlag(FLAGS_ended_job_ttl)
                << " ago (--ended_job_ttl); its shards are dropped: " << dropped;
    }
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
      "       [--metrics_port=9091] [--metrics_port_file=F] [--max_memory_bytes=N]\n"
      "       [--checkpoint_root=DIR]");
  psrv::ShowMainFlagsInHelp();
  absl::ParseCommandLine(argc, argv);
  google::InitGoogleLogging(argv[0]);
#ifdef NDEBUG
  // Debian's abseil is built with mutex deadlock detection on: a lock-order graph updated on
  // every Lock (~3% of a server's CPU). Optimized builds leave it to the tests' debug builds.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
#endif
  FLAGS_logtostderr = true;
  if (!psrv::EnableTlsFromFlags()) return 1;
  return psrv::Run();
}
