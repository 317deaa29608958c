// step_bench: what the parameter-server path costs a training step, measured on the system rather
// than the CPU. Workers run `--compute=synthetic:MS` (worker/model/synthetic_model.h): each step
// waits MS milliseconds instead of computing, leaving the CPU free as a GPU would, and pushes
// fixed gradients of the shakespeare-char GPT (6 layers, width 384, 10.7M parameters) through a
// real local cluster (psctl local's processes). For every WORKERSxSERVERS run it measures the
// step time with MS of compute and with none (the communication alone), and reports them against
// the ideal max(compute, wire time), the wire time being the bytes every step moves (each
// worker's pull and push of the whole model) at the iperf3 loopback rate measured in the same
// run; and the overlap: how much of the communication hides behind compute (1: all, 0: none).
// Writes JSON to bench/results/step_<host>.json (bench/README.md).
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <iostream>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "bench/iperf3_loopback.h"
#include "bench/result_file.h"
#include "bench/sample_stats.h"
#include "bench/local_job.h"
#include "bench/worker_metrics.h"
#include "common/job_spec.h"
#include "common/model_layout.h"

ABSL_FLAG(std::string, data, "../shared/data/tinyshakespeare.txt",
          "Text the workers sample rows from (its characters are the vocabulary); relative paths "
          "are taken from the repository root.");
ABSL_FLAG(std::vector<std::string>, runs, std::vector<std::string>({"1x1", "1x2", "4x2"}),
          "Runs as WORKERSxSERVERS.");
ABSL_FLAG(double, compute_ms, 10, "Synthetic compute per step, in milliseconds.");
ABSL_FLAG(uint64_t, steps, 200, "Steps per measurement.");
ABSL_FLAG(double, warmup_fraction, 0.25,
          "Progress reports of the first this-fraction of the steps are not counted.");
ABSL_FLAG(int, layers, 6, "GPT layers.");
ABSL_FLAG(int, width, 384, "GPT width.");
ABSL_FLAG(int, heads, 6, "GPT heads.");
ABSL_FLAG(int, context, 256, "GPT context.");
ABSL_FLAG(int, batch, 64, "Rows per worker and step (only sampled: the compute is synthetic).");
ABSL_FLAG(float, grad_clip, 1.0f, "training.grad_clip of the job (the recipe's 1.0; 0: off).");
ABSL_FLAG(std::string, wire_dtype, "",
          "training.wire_dtype of the job: FP32 or BF16; empty: the job default.");
ABSL_FLAG(std::vector<std::string>, worker_args, {},
          "More flags for every ps_worker (after --compute).");
ABSL_FLAG(int, iperf_seconds, 3, "iperf3 -t of each loopback measurement (before every run).");
ABSL_FLAG(std::string, out, "", "JSON output path (default bench/results/step_<host>.json).");
ABSL_FLAG(std::string, commit, "", "Git commit measured (recorded in the JSON).");

namespace psrv {
namespace {

using Json = nlohmann::ordered_json;

JobSpec Spec(const std::string& data, uint32_t workers, uint32_t servers) {
  JobSpec spec;
  spec.set_name(absl::StrCat("step-bench-", workers, "x", servers));
  spec.set_num_servers(servers);
  spec.set_num_workers(workers);
  spec.mutable_data()->set_path(data);
  ModelSpec* model = spec.mutable_model();
  model->set_kind("gpt");
  model->set_tokenizer("char");
  model->set_layers(absl::GetFlag(FLAGS_layers));
  model->set_heads(absl::GetFlag(FLAGS_heads));
  model->set_width(absl::GetFlag(FLAGS_width));
  model->set_context(absl::GetFlag(FLAGS_context));
  TrainingSpec* t = spec.mutable_training();
  t->set_steps(absl::GetFlag(FLAGS_steps));
  t->set_batch_size(absl::GetFlag(FLAGS_batch));
  t->set_consistency(SYNC);
  OptimizerConfig* o = t->mutable_optimizer();
  o->set_kind(ADAMW);
  o->set_learning_rate(1e-3f);
  o->set_min_learning_rate(1e-4f);
  o->set_warmup_steps(10);
  o->set_decay_steps(absl::GetFlag(FLAGS_steps));
  o->set_beta1(0.9f);
  o->set_beta2(0.99f);
  o->set_weight_decay(0.1f);
  t->set_grad_clip(absl::GetFlag(FLAGS_grad_clip));
  t->set_report_every(5);
  t->set_eval_batches(1);
  t->set_sample_length(1);
  t->set_seed(1337);
  const std::string dtype = absl::GetFlag(FLAGS_wire_dtype);
  if (dtype == "BF16") t->set_wire_dtype(BF16);
  if (dtype == "FP32") t->set_wire_dtype(FP32);
  // No backups: the benchmark measures the worker-server path (recovery_bench measures backups).
  spec.set_replicas(1);
  ApplyJobDefaults(&spec);
  return spec;
}

struct Measurement {
  std::vector<double> step_seconds;         // Per report window, after the warm-up.
  std::map<std::string, double> phase_mean;  // Worker phase -> mean seconds (all steps).
  double wall_seconds = 0;
  DType wire_dtype = FP32;
};

absl::StatusOr<Measurement> Measure(const LocalBinaries& binaries, JobSpec spec,
                                    double compute_ms) {
  spec.set_name(absl::StrCat(spec.name(), "-", compute_ms, "ms"));
  std::vector<std::string> worker_args = {absl::StrCat("--compute=synthetic:", compute_ms)};
  for (const std::string& arg : absl::GetFlag(FLAGS_worker_args)) worker_args.push_back(arg);
  const uint64_t warmup =
      static_cast<uint64_t>(absl::GetFlag(FLAGS_warmup_fraction) * spec.training().steps());
  Measurement m;
  m.wire_dtype = spec.training().wire_dtype();
  std::map<uint32_t, uint64_t> last_step;  // Rank -> step of its last report counted.
  std::map<std::string, double> phases;
  absl::StatusOr<JobStatus> final = RunLocalJob(
      binaries, spec, "step_bench", worker_args,
      [&](const JobStatus& status, LocalCluster* cluster) {
        for (const WorkerProgress& w : status.workers()) {
          if (w.step() <= warmup || w.step() == last_step[w.rank()] || w.step_seconds() <= 0 ||
              w.done()) {
            continue;
          }
          last_step[w.rank()] = w.step();
          m.step_seconds.push_back(w.step_seconds());
        }
        if (status.step() + 10 >= spec.training().steps() && phases.empty()) {
          phases = WorkerPhaseMeans(cluster);  // Before the workers exit.
        }
      });
  if (!final.ok()) return final.status();
  if (m.step_seconds.empty()) return absl::InternalError("no progress reports after the warm-up");
  m.phase_mean = phases;
  m.wall_seconds = (final->end_time_ms() - final->start_time_ms()) / 1000.0;
  return m;
}

Json Summary(const std::vector<double>& values) {
  return Json{{"median", Quantile(values, 0.5)},
              {"p10", Quantile(values, 0.1)},
              {"p90", Quantile(values, 0.9)},
              {"samples", values.size()}};
}

int Run(const char* argv0) {
  absl::StatusOr<LocalBinaries> binaries = FindLocalBinaries("", argv0);
  if (!binaries.ok()) {
    std::cerr << binaries.status() << std::endl;
    return 1;
  }
  const std::string data = FromWorkspace(absl::GetFlag(FLAGS_data));
  const double compute_ms = absl::GetFlag(FLAGS_compute_ms);
  Json report = ResultHeader("step_synthetic_compute", absl::GetFlag(FLAGS_commit));
  Json runs = Json::array();
  std::vector<double> iperf_samples;
  Iperf3Options iperf;
  iperf.duration = absl::Seconds(absl::GetFlag(FLAGS_iperf_seconds));
  auto measure_iperf = [&]() -> double {
    absl::StatusOr<double> gbps = MeasureIperf3Loopback(iperf);
    if (!gbps.ok()) {
      std::cerr << "iperf3: " << gbps.status() << std::endl;
      return 0;
    }
    iperf_samples.push_back(*gbps);
    return *gbps;
  };
  std::cout << absl::StrFormat("%-6s %-7s %-6s %9s %9s %9s %7s %8s  %s\n", "run", "compute",
                               "wire", "step ms", "comm ms", "ideal ms", "x ideal", "overlap",
                               "phases ms (pull / compute / push)");
  for (const std::string& text : absl::GetFlag(FLAGS_runs)) {
    std::vector<std::string> parts = absl::StrSplit(text, 'x');
    uint32_t workers = 0, servers = 0;
    if (parts.size() != 2 || !absl::SimpleAtoi(parts[0], &workers) ||
        !absl::SimpleAtoi(parts[1], &servers) || workers == 0 || servers == 0) {
      std::cerr << "bad --runs entry \"" << text << "\": want WORKERSxSERVERS, e.g. 4x2"
                << std::endl;
      return 2;
    }
    JobSpec spec = Spec(data, workers, servers);
    if (absl::Status s = FillVocabulary(&spec); !s.ok()) {
      std::cerr << s << std::endl;
      return 2;
    }
    const double iperf_before = measure_iperf();
    absl::StatusOr<Measurement> comm = Measure(*binaries, spec, 0);
    absl::StatusOr<Measurement> full = comm.ok() ? Measure(*binaries, spec, compute_ms) : comm;
    const double iperf_after = measure_iperf();
    if (!full.ok()) {
      std::cerr << spec.name() << ": " << full.status() << std::endl;
      return 1;
    }
    absl::StatusOr<std::vector<TableSpec>> tables = ModelTables(spec.model(), 0);
    const uint64_t parameters = tables.ok() ? TotalElements(*tables) : 0;
    const double bytes_per_value = full->wire_dtype == BF16 ? 2 : 4;
    // Every worker pulls and pushes the whole model each step, all through loopback.
    const double wire_bytes = 2.0 * workers * parameters * bytes_per_value;
    const double iperf_gbps = (iperf_before > 0 && iperf_after > 0)
                                  ? (iperf_before + iperf_after) / 2
                                  : std::max(iperf_before, iperf_after);
    const double wire_ms = iperf_gbps > 0 ? wire_bytes / (iperf_gbps * 1e9) * 1e3 : 0;
    const double ideal_ms = std::max(compute_ms, wire_ms);
    const double step_ms = Quantile(full->step_seconds, 0.5) * 1e3;
    const double comm_ms = Quantile(comm->step_seconds, 0.5) * 1e3;
    // Communication hidden behind compute: 1 when step = max(comm, compute), 0 when their sum.
    const double hidden = std::min(comm_ms, compute_ms);
    const double overlap =
        hidden > 0 ? std::clamp((comm_ms + compute_ms - step_ms) / hidden, 0.0, 1.0) : 0;
    auto phase = [&](const char* name) {
      auto it = full->phase_mean.find(name);
      return it == full->phase_mean.end() ? 0.0 : it->second * 1e3;
    };
    std::cout << absl::StrFormat("%-6s %5.1fms %-6s %9.2f %9.2f %9.2f %7.2f %8.2f  %.1f / %.1f / %.1f\n",
                                 text, compute_ms, DType_Name(full->wire_dtype), step_ms, comm_ms,
                                 ideal_ms, ideal_ms > 0 ? step_ms / ideal_ms : 0, overlap,
                                 phase("pull"), phase("compute"), phase("push"));
    Json run;
    run["run"] = text;
    run["workers"] = workers;
    run["servers"] = servers;
    run["parameters"] = parameters;
    run["wire_dtype"] = DType_Name(full->wire_dtype);
    run["grad_clip"] = spec.training().grad_clip();
    run["compute_ms"] = compute_ms;
    run["step_ms"] = Summary(full->step_seconds);
    for (auto& [k, v] : run["step_ms"].items()) {
      if (k != "samples") v = v.get<double>() * 1e3;
    }
    run["comm_only_step_ms"] = Summary(comm->step_seconds);
    for (auto& [k, v] : run["comm_only_step_ms"].items()) {
      if (k != "samples") v = v.get<double>() * 1e3;
    }
    run["wire_bytes_per_step"] = wire_bytes;
    run["iperf3_gbps"] = iperf_gbps;
    run["wire_ms_at_iperf3"] = wire_ms;
    run["ideal_ms"] = ideal_ms;
    run["step_over_ideal"] = ideal_ms > 0 ? step_ms / ideal_ms : 0;
    run["overlap_fraction"] = overlap;
    run["worker_phase_mean_ms"] = {{"pull", phase("pull")},
                                   {"compute", phase("compute")},
                                   {"push", phase("push")}};
    run["wall_seconds"] = full->wall_seconds;
    runs.push_back(run);
  }
  report["config"] = {{"steps", absl::GetFlag(FLAGS_steps)},
                      {"warmup_fraction", absl::GetFlag(FLAGS_warmup_fraction)},
                      {"model", {{"layers", absl::GetFlag(FLAGS_layers)},
                                 {"width", absl::GetFlag(FLAGS_width)},
                                 {"heads", absl::GetFlag(FLAGS_heads)},
                                 {"context", absl::GetFlag(FLAGS_context)}}},
                      {"batch", absl::GetFlag(FLAGS_batch)},
                      {"worker_args", absl::GetFlag(FLAGS_worker_args)},
                      {"definitions",
                       "step_ms: median over progress-report windows (each the mean step time of "
                       "one worker over 5 steps) after the warm-up; ideal_ms: max(compute_ms, "
                       "wire_bytes_per_step / iperf3 loopback rate); overlap_fraction: (comm + "
                       "compute - step) / min(comm, compute), comm being the step time with no "
                       "compute"}};
  report["iperf3_samples_gbps"] = iperf_samples;
  report["runs"] = runs;
  return WriteResult(report, absl::GetFlag(FLAGS_out), "step");
}

}  // namespace
}  // namespace psrv

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "Measures the parameter-server path of a training step at a GPU-like compute time "
      "(synthetic compute) on a local cluster; writes JSON.\n"
      "Usage: bazel run //bench:step_bench -- [--runs=1x1,1x2,4x2] [--compute_ms=10] "
      "[--steps=200]");
  absl::ParseCommandLine(argc, argv);
  return psrv::Run(argv[0]);
}
