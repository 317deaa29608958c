// Pipeline parallelism in one process (worker/pipeline/in_process_pipeline.h): the CPU GPT's
// layers split over P stages (a thread each, one core each where the machine has them), M
// micro-batches per step, GPipe and 1F1B. Measures each stage's idle fraction (the bubble) against
// the theory (P-1)/(M+P-1), the activation memory each stage holds at its peak, and tokens/s
// against one stage (P = 1) in the same run. Results: bench/results/pipeline_<host>.json.
#include <unistd.h>

#include <algorithm>
#include <iostream>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "bench/result_file.h"
#include "bench/sample_stats.h"
#include "common/status_macros.h"
#include "worker/model/openblas_env.h"
#include "worker/pipeline/in_process_pipeline.h"
#include "worker/pipeline/schedule.h"
#include "worker/pipeline/stage_plan.h"

ABSL_FLAG(int, layers, 8, "GPT layers.");
ABSL_FLAG(int, width, 128, "GPT width (C).");
ABSL_FLAG(int, heads, 4, "Attention heads.");
ABSL_FLAG(int, context, 64, "Tokens per row (T).");
ABSL_FLAG(int, vocab, 65, "Vocabulary (65: tinyshakespeare's characters).");
ABSL_FLAG(int, batch, 4, "Rows per micro-batch.");
ABSL_FLAG(std::string, stages, "2,4", "Pipeline sizes P to measure.");
ABSL_FLAG(std::string, micro_batches, "1,4,8,16", "Micro-batches per step M to measure.");
ABSL_FLAG(int, steps, 7, "Measured steps per configuration (after one warm-up step).");
ABSL_FLAG(std::string, out, "", "JSON output path (default bench/results/pipeline_<host>.json).");
ABSL_FLAG(std::string, commit, "", "Git commit measured (recorded in the JSON).");

namespace psrv {
namespace {

using Json = nlohmann::ordered_json;

std::vector<int> Ints(const std::string& list) {
  std::vector<int> values;
  for (absl::string_view v : absl::StrSplit(list, ',', absl::SkipEmpty())) {
    values.push_back(std::stoi(std::string(v)));
  }
  return values;
}

struct Measured {
  double step_seconds = 0;  // Median.
  double bubble = 0;        // Median over steps of the mean idle fraction of the stages.
  std::vector<double> stage_bubble;  // Median per stage.
  std::vector<size_t> peak_activation_bytes;
};

absl::StatusOr<Measured> Measure(const GptConfig& config, int stages, PipelineSchedule schedule,
                                 int micro_batches, int batch, int steps) {
  ASSIGN_OR_RETURN(std::vector<StagePlan> plans, PlanStages(config, stages));
  ASSIGN_OR_RETURN(std::unique_ptr<InProcessPipeline> pipeline,
                   InProcessPipeline::Create(config, plans, schedule, micro_batches, batch));
  std::mt19937 random(1);
  std::normal_distribution<float> normal(0.0f, 0.02f);
  std::vector<std::vector<float>> params;
  std::vector<const float*> pointers;
  for (const StagePlan& plan : plans) {
    params.emplace_back(plan.parameters);
    for (float& p : params.back()) p = normal(random);
  }
  for (const auto& p : params) pointers.push_back(p.data());
  std::vector<int32_t> rows(static_cast<size_t>(micro_batches) * batch * (config.context + 1));
  for (int32_t& token : rows) token = static_cast<int32_t>(random() % config.vocab);
  std::vector<uint64_t> seeds(micro_batches);
  std::vector<double> times, bubbles;
  std::vector<std::vector<double>> stage_bubbles(stages);
  for (int step = 0; step <= steps; ++step) {
    for (int m = 0; m < micro_batches; ++m) seeds[m] = step * 1000 + m;
    ASSIGN_OR_RETURN(PipelineStepResult result, pipeline->Step(pointers, rows.data(), seeds.data()));
    if (step == 0) continue;  // Warm-up: buffers grow, caches fill.
    times.push_back(result.wall_seconds);
    double idle = 0;
    for (int s = 0; s < stages; ++s) {
      const double stage_idle =
          std::max(0.0, 1.0 - result.times[s].busy_seconds / result.wall_seconds);
      stage_bubbles[s].push_back(stage_idle);
      idle += stage_idle;
    }
    bubbles.push_back(idle / stages);
  }
  Measured m;
  m.step_seconds = Quantile(times, 0.5);
  m.bubble = Quantile(bubbles, 0.5);
  for (int s = 0; s < stages; ++s) {
    m.stage_bubble.push_back(Quantile(stage_bubbles[s], 0.5));
    m.peak_activation_bytes.push_back(pipeline->PeakActivationBytes(s));
  }
  return m;
}

int Run() {
  GptConfig config;
  config.layers = absl::GetFlag(FLAGS_layers);
  config.width = absl::GetFlag(FLAGS_width);
  config.heads = absl::GetFlag(FLAGS_heads);
  config.context = absl::GetFlag(FLAGS_context);
  config.vocab = absl::GetFlag(FLAGS_vocab);
  config.dropout = 0.0f;
  config.threads = 1;  // One core per stage.
  const int batch = absl::GetFlag(FLAGS_batch), steps = absl::GetFlag(FLAGS_steps);
  const unsigned cores = std::thread::hardware_concurrency();
  Json report = ResultHeader("pipeline", absl::GetFlag(FLAGS_commit));
  report["model"] = {{"layers", config.layers}, {"width", config.width},
                     {"heads", config.heads},   {"context", config.context},
                     {"vocab", config.vocab},   {"micro_batch_rows", batch}};
  report["note"] = absl::StrCat(
      "stages are threads of one process with one core each; ", cores,
      " cores here: configurations with more stages than cores time-share them, so their "
      "idle fractions mix the bubble with waiting for a core");
  Json rows = Json::array();
  for (int M : Ints(absl::GetFlag(FLAGS_micro_batches))) {
    absl::StatusOr<Measured> alone = Measure(config, 1, PipelineSchedule::kGpipe, M, batch, steps);
    if (!alone.ok()) {
      std::cerr << "P=1 M=" << M << ": " << alone.status() << std::endl;
      return 1;
    }
    const double tokens = static_cast<double>(M) * batch * config.context;
    for (int P : Ints(absl::GetFlag(FLAGS_stages))) {
      for (PipelineSchedule schedule : {PipelineSchedule::kGpipe, PipelineSchedule::kOneFOneB}) {
        const char* name = schedule == PipelineSchedule::kGpipe ? "gpipe" : "1f1b";
        absl::StatusOr<Measured> m = Measure(config, P, schedule, M, batch, steps);
        if (!m.ok()) {
          std::cerr << name << " P=" << P << " M=" << M << ": " << m.status() << std::endl;
          return 1;
        }
        Json row;
        row["schedule"] = name;
        row["stages"] = P;
        row["micro_batches"] = M;
        row["oversubscribed"] = static_cast<unsigned>(P) > cores;
        row["bubble_measured"] = m->bubble;
        row["bubble_theory"] = TheoreticalBubble(P, M);
        row["bubble_per_stage"] = m->stage_bubble;
        row["peak_activation_bytes_per_stage"] = m->peak_activation_bytes;
        row["step_seconds_median"] = m->step_seconds;
        row["tokens_per_second"] = tokens / m->step_seconds;
        row["one_stage_tokens_per_second"] = tokens / alone->step_seconds;
        row["speedup_vs_one_stage"] = alone->step_seconds / m->step_seconds;
        std::cout << name << " P=" << P << " M=" << M << ": bubble " << m->bubble << " (theory "
                  << TheoreticalBubble(P, M) << "), step " << m->step_seconds * 1e3
                  << " ms, x" << alone->step_seconds / m->step_seconds << " of one stage; peak "
                  << "activations stage 0: " << (m->peak_activation_bytes[0] >> 10) << " KiB"
                  << std::endl;
        rows.push_back(row);
      }
    }
  }
  report["results"] = rows;
  return WriteResult(report, absl::GetFlag(FLAGS_out), "pipeline");
}

}  // namespace
}  // namespace psrv

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "Measures the pipeline bubble, activation memory and tokens/s of GPipe and 1F1B (stages "
      "as threads of one process, CPU GPT).\n"
      "Usage: bazel run //bench:pipeline_bench -- [--stages=2,4] [--micro_batches=1,4,8,16]\n"
      "       [--steps=5] [--commit=$(git rev-parse HEAD)] [--out=bench/results/pipeline_<host>.json]");
  psrv::ConfigureOpenBlas(argv);  // One OpenBLAS thread: each stage has its core.
  absl::ParseCommandLine(argc, argv);
  return psrv::Run();
}
