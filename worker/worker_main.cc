// ps_worker: registers with the coordinator, waits for a job, and trains it (pull -> compute ->
// push) against the parameter servers; see trainer.h.
#include <unistd.h>

#include <atomic>
#include <deque>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <thread>

#include <glog/logging.h>
#include <grpcpp/client_context.h>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/malloc_tuning.h"
#include "common/flags_help.h"
#include "common/tls_flags.h"
#include "common/membership.h"
#include "common/grpc_server.h"
#include "common/metrics.h"
#include "common/monitoring.h"
#include "common/shutdown.h"
#include "worker/model/openblas_env.h"
#include "worker/pipeline/stage_service.h"
#include "worker/trainer.h"

ABSL_FLAG(std::string, coordinator, "127.0.0.1:7070", "host:port of ps_coordinator.");
ABSL_FLAG(int, max_jobs, 0, "Exit after this many jobs (0: run jobs until terminated).");
ABSL_FLAG(std::string, device, "auto",
          "Where the model runs: auto (a CUDA GPU if there is one and the model supports it, "
          "else the CPU), cuda (fail if there is no GPU), or cpu.");
ABSL_FLAG(std::string, cuda_attention, "materialized",
          "How the GPT's attention runs on a GPU: materialized (cuBLAS products around a (T, T) "
          "softmax kept for the backward), flash (fused kernels on tensor cores, no (T, T) memory; "
          "head size <= 64; sm_80 or newer) or flash_fp32 (the same in fp32 on CUDA cores, the "
          "reference). Ignored on the CPU.");
ABSL_FLAG(bool, cuda_recompute_gelu, true,
          "On a GPU, compute the MLP's GELU output again in the backward instead of keeping it from "
          "the forward: 4 x width bf16 values less per token and layer (1.2 GB for GPT-2 small at "
          "batch 16 x 1024 tokens) for one more elementwise kernel per layer; the same results "
          "bit for bit. Ignored on the CPU.");
ABSL_FLAG(bool, cuda_gelu_epilogue, false,
          "On a GPU, run the MLP's first product and its GELU as one cuBLASLt product (the GELU in "
          "the product's epilogue, as llm.c): one elementwise kernel and one pass over the MLP's "
          "activations less per layer; results differ from the unfused path within bf16 rounding. "
          "Off by default until measured faster on a GPU. Ignored on the CPU.");
ABSL_FLAG(bool, cuda_graph, false,
          "On a GPU, run each whole training step (forward and backward, 36-46 launches per layer) "
          "as one CUDA graph, captured each step and updated in place, so that the GPU runs the "
          "kernels back to back; the same results bit for bit. Applies to whole steps: with "
          "--overlap=off or gradient accumulation (an overlapped step of one micro-batch waits for "
          "each layer's parameters on the host). Off by default until measured faster on a GPU. "
          "Ignored on the CPU.");
ABSL_FLAG(std::string, compute, "model",
          "model: compute gradients with the job's model. synthetic:MS (benchmarks): instead of "
          "forward and backward, wait MS milliseconds per step (leaving the CPU free, as a GPU "
          "would) and push fixed gradients; measures the parameter-server path at GPU-like step "
          "times (bench/step_bench). Trains nothing.");
ABSL_FLAG(std::string, slowdown, "1",
          "Straggler experiments (bench/straggler_bench): FACTOR or FACTOR@PROBABILITY. Each step, "
          "with probability PROBABILITY (default 1), compute is made FACTOR times as long by "
          "sleeping after it (e.g. 4@0.1: one step in ten takes 4 times as long; 3: every step "
          "3 times). 1: off.");
ABSL_FLAG(bool, row_sparse_pushes, true,
          "Jobs with untied embeddings (model.tie_embeddings false): push only the rows of the "
          "input embedding that the step's batch touched (row ids and their values). false: push "
          "the whole table, zeros included (the same training; for comparisons, "
          "bench/train_bench --dense_embedding_pushes).");
ABSL_FLAG(bool, row_sparse_pulls, true,
          "Jobs with untied embeddings: pull only the rows of the input embedding that the "
          "step's batch reads (the whole table on rank 0's validation steps and at the end). "
          "false: pull the whole table every step (the same training; for comparisons).");
ABSL_FLAG(std::string, overlap, "auto",
          "on: overlap communication with compute (pushes leave as backward finishes each layer, "
          "the next step's pulls follow them, forward waits only for the layer it reads). off: "
          "pull, compute and push one after another. The same results, bit for bit. auto: on "
          "when the model computes off the CPU (a GPU, synthetic compute), off for a CPU model, "
          "which uses every core itself.");
ABSL_FLAG(absl::Duration, final_report_patience, absl::Minutes(2),
          "How long a job's final report (done, or an error) is retried while the coordinator "
          "is unreachable (e.g. restarting). After that the worker sends it with its heartbeats "
          "until the coordinator is back and acknowledges it, so the job still ends there.");
ABSL_FLAG(std::string, host, "0.0.0.0",
          "Address the metrics HTTP server and the StageExchange service listen on.");
ABSL_FLAG(int, stage_port, 0,
          "Port of the StageExchange gRPC service the other stages of a pipeline job send "
          "activations and gradients to (proto/pipeline.proto). 0 picks a free port; negative: "
          "none (the worker then cannot run pipeline jobs' stages).");
ABSL_FLAG(uint64_t, max_memory_bytes, 0,
          "The most memory a job's model part may take on this worker: its parameters and "
          "gradients (5 fp32 copies) and a step's activations. A job that needs more fails, "
          "naming both (split its layers over workers: parallelism.pipeline). 0: no limit.");
ABSL_FLAG(std::string, advertise_host, "",
          "Host name other workers reach this one at (the StageExchange address it registers "
          "with); default: --host, or this machine's host name if --host is 0.0.0.0.");
ABSL_FLAG(std::optional<int>, metrics_port, std::nullopt,
          "Port of the HTTP server for Prometheus metrics (/metrics) and /healthz "
          "(docs/METRICS.md). Default 9092; if left at the default and that port is taken, the "
          "worker runs without it (a warning is logged). 0 picks a free port (see "
          "--metrics_port_file); negative: no HTTP server.");
ABSL_FLAG(std::string, metrics_port_file, "",
          "If set, the metrics port actually bound is written to this file.");

namespace psrv {
namespace {

// Assignments arriving on heartbeats, for the main loop. Thread-safe.
class AssignmentQueue {
 public:
  void OnHeartbeat(const HeartbeatResponse& response) {
    absl::MutexLock lock(&mu_);
    if (response.cancel()) cancel_ = true;
    if (!response.has_assignment()) return;
    // A job restarted from a checkpoint, or a rank taken over, is a new run of the same job.
    const WorkAssignment& a = response.assignment();
    const std::string run =
        absl::StrCat(a.job_id(), "/", a.attempt(), "/", a.rank(), "/", a.start_step());
    if (run == running_ || seen_.count(run) > 0) return;
    seen_.insert(run);
    pending_.push_back(response.assignment());
  }

  // Waits up to `timeout` for the next assignment.
  bool Next(WorkAssignment* assignment, absl::Duration timeout) {
    absl::MutexLock lock(&mu_);
    auto ready = [this] { return !pending_.empty(); };
    if (!mu_.AwaitWithTimeout(absl::Condition(&ready), timeout)) return false;
    *assignment = pending_.front();
    pending_.pop_front();
    running_ = absl::StrCat(assignment->job_id(), "/", assignment->attempt(), "/",
                            assignment->rank(), "/", assignment->start_step());
    cancel_ = false;
    return true;
  }

  bool TakeCancel() {
    absl::MutexLock lock(&mu_);
    bool c = cancel_;
    cancel_ = false;
    return c;
  }

 private:
  absl::Mutex mu_;
  std::deque<WorkAssignment> pending_ ABSL_GUARDED_BY(mu_);
  std::set<std::string> seen_ ABSL_GUARDED_BY(mu_);
  std::string running_ ABSL_GUARDED_BY(mu_);
  bool cancel_ ABSL_GUARDED_BY(mu_) = false;
};

// Whether the coordinator says the job is still PENDING or RUNNING (unknown: no).
bool JobStillLive(Coordinator::Stub* stub, const std::string& job_id) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  GetJobRequest request;
  request.set_job_id(job_id);
  JobStatus status;
  if (!stub->GetJob(&context, request, &status).ok()) return false;
  return status.state() == PENDING || status.state() == RUNNING;
}

int Run() {
  absl::Notification* terminate = InstallTerminationHandler();
  MetricsRegistry metrics;
  MonitoringOptions monitoring;
  monitoring.host = absl::GetFlag(FLAGS_host);
  monitoring.port = absl::GetFlag(FLAGS_metrics_port);
  monitoring.default_port = 9092;
  monitoring.port_file = absl::GetFlag(FLAGS_metrics_port_file);
  monitoring.bearer_token = HttpTokenFromFlags();
  absl::StatusOr<std::unique_ptr<HttpServer>> http = StartMonitoring(monitoring, &metrics);
  if (!http.ok()) {
    LOG(ERROR) << http.status();
    return 1;
  }
  if (*http != nullptr) {
    LOG(INFO) << "metrics on http://" << monitoring.host << ":" << (*http)->port() << "/metrics";
  }
  CounterFamily* jobs_done = metrics.AddCounter(
      "psrv_worker_jobs_total", "Jobs this worker ran, by how they ended (ok, cancelled, failed).",
      {"result"});
  Gauge* busy = metrics.AddGauge("psrv_worker_busy", "1 while the worker runs a job, else 0.")
                    ->Get();
  TrainerOptions trainer_options;
  trainer_options.metrics = &metrics;
  trainer_options.max_memory_bytes = absl::GetFlag(FLAGS_max_memory_bytes);
  absl::StatusOr<Device> device = ParseDevice(absl::GetFlag(FLAGS_device));
  if (!device.ok()) {
    LOG(ERROR) << "--device: " << device.status().message();
    return 2;
  }
  trainer_options.device = *device;
  if (absl::Status s = ParseOverlap(absl::GetFlag(FLAGS_overlap), &trainer_options); !s.ok()) {
    LOG(ERROR) << "--overlap: " << s.message();
    return 2;
  }
  if (absl::Status s =
          ParseCudaAttention(absl::GetFlag(FLAGS_cuda_attention), &trainer_options.cuda);
      !s.ok()) {
    LOG(ERROR) << "--cuda_attention: " << s.message();
    return 2;
  }
  trainer_options.cuda.recompute_gelu = absl::GetFlag(FLAGS_cuda_recompute_gelu);
  trainer_options.cuda.gelu_epilogue = absl::GetFlag(FLAGS_cuda_gelu_epilogue);
  trainer_options.cuda.cuda_graph = absl::GetFlag(FLAGS_cuda_graph);
  trainer_options.row_sparse_pushes = absl::GetFlag(FLAGS_row_sparse_pushes);
  trainer_options.row_sparse_pulls = absl::GetFlag(FLAGS_row_sparse_pulls);
  if (absl::Status s = ParseSlowdown(absl::GetFlag(FLAGS_slowdown), &trainer_options); !s.ok()) {
    LOG(ERROR) << "--slowdown: " << s.message();
    return 2;
  }
  if (absl::Status s = ParseCompute(absl::GetFlag(FLAGS_compute), &trainer_options); !s.ok()) {
    LOG(ERROR) << "--compute: " << s.message();
    return 2;
  }
  if (*device == Device::kCuda) {
    std::string why;
    if (!BuiltWithCuda() || UsableCudaDevices(&why) == 0) {
      LOG(ERROR) << "--device=cuda: "
                 << (BuiltWithCuda() ? "no CUDA GPU found (" + why + ")"
                                     : std::string("built without CUDA (--define=cuda=off)"))
                 << "; use --device=cpu or auto";
      return 2;
    }
  }
  char host[256] = {0};
  gethostname(host, sizeof(host) - 1);
  // The stages of pipeline jobs send this worker activations and gradients here.
  StageInbox stage_inbox;
  StageService stage_service(&stage_inbox);
  std::string address = absl::StrCat(host, "/pid-", getpid());  // (Informational without it.)
  std::optional<RunningServer> stage_server;
  if (absl::GetFlag(FLAGS_stage_port) >= 0) {
    absl::StatusOr<RunningServer> started = StartGrpcServer(
        absl::GetFlag(FLAGS_host), absl::GetFlag(FLAGS_stage_port), {&stage_service}, "");
    if (!started.ok()) {
      LOG(ERROR) << "--stage_port: " << started.status();
      return 1;
    }
    stage_server = std::move(*started);
    std::string advertised = absl::GetFlag(FLAGS_advertise_host);
    if (advertised.empty()) {
      advertised = absl::GetFlag(FLAGS_host) == "0.0.0.0" ? host : absl::GetFlag(FLAGS_host);
    }
    address = absl::StrCat(advertised, ":", stage_server->port);
    trainer_options.stage_inbox = &stage_inbox;
    LOG(INFO) << "StageExchange (pipeline stages) on " << address;
  }
  AssignmentQueue queue;
  std::atomic<bool> cancel{false};
  Membership membership(
      Membership::Options{absl::GetFlag(FLAGS_coordinator), WORKER, address},
      [&](const HeartbeatResponse& response) {
        queue.OnHeartbeat(response);
        if (queue.TakeCancel()) cancel = true;
      });
  absl::Status status = membership.Start(absl::Seconds(30));
  if (!status.ok()) {
    LOG(ERROR) << status;
    return 1;
  }
  trainer_options.reports.final_report_patience = absl::GetFlag(FLAGS_final_report_patience);
  trainer_options.reports.undelivered_final_report = [&membership](const ReportProgressRequest& r) {
    membership.CarryFinalReport(r);
  };
  // Termination cancels the running job.
  std::thread watcher([&] {
    terminate->WaitForNotification();
    cancel = true;
  });
  watcher.detach();

  int jobs = 0, failures = 0;
  const int max_jobs = absl::GetFlag(FLAGS_max_jobs);
  while (!terminate->HasBeenNotified() && (max_jobs == 0 || jobs < max_jobs)) {
    WorkAssignment assignment;
    if (!queue.Next(&assignment, absl::Milliseconds(200))) continue;
    cancel = false;
    LOG(INFO) << "running job " << assignment.job_id() << " as rank " << assignment.rank();
    busy->Set(1);
    // The last run's final report tells the coordinator to assign this worker nothing more.
    trainer_options.reports.last_run = max_jobs > 0 && jobs + 1 >= max_jobs;
    absl::Status result =
        RunJob(assignment, membership.stub(), membership.node_id(), &cancel, trainer_options);
    busy->Set(0);
    LOG(INFO) << "job " << assignment.job_id() << " ended: " << result;
    jobs_done
        ->Get({result.ok() ? "ok"
                           : result.code() == absl::StatusCode::kCancelled ? "cancelled"
                                                                           : "failed"})
        ->Increment();
    if (!result.ok() && result.code() != absl::StatusCode::kCancelled) ++failures;
    // A run the coordinator stopped while the job goes on (restarted from a checkpoint elsewhere)
    // is not one of --max_jobs: the worker stays for the job's next run.
    if (result.code() != absl::StatusCode::kCancelled ||
        !JobStillLive(membership.stub(), assignment.job_id())) {
      ++jobs;
    }
  }
  // A final report still waiting for the coordinator keeps the worker (and its heartbeats) up.
  if (membership.CarriesFinalReport()) {
    LOG(INFO) << "waiting for the coordinator to take the last job's final report";
    while (membership.CarriesFinalReport() &&
           !terminate->WaitForNotificationWithTimeout(absl::Milliseconds(200))) {
    }
  }
  membership.Stop();
  return failures > 0 ? 1 : 0;
}

}  // namespace
}  // namespace psrv

int main(int argc, char** argv) {
  psrv::TuneMallocForTensors();
  psrv::ConfigureOpenBlas(argv);
  absl::SetProgramUsageMessage(
      "Training worker: pulls parameters, computes gradients on its part of the data, pushes.\n"
      "Usage: ps_worker --coordinator=HOST:PORT [--max_jobs=N] [--metrics_port=9092]\n"
      "       [--metrics_port_file=F]");
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
