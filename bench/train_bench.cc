// Quality and speed of training through the parameter servers: the nanoGPT CPU recipe for
// shakespeare-char (4 layers, 4 heads, width 128, context 64, batch 12, 2000 iterations, lr 1e-3
// decaying to 1e-4 after 100 warm-up steps, AdamW beta2 0.99, weight decay 0.1, clip 1.0,
// dropout 0) on a real local cluster: 1 server + 1 worker, then 1 server + 2 workers with batch 6
// each (the same global batch). Writes the final validation loss, wall time and training tokens/s
// of each run as JSON. The reference implementation reaches a validation loss of about 1.88.
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <map>
#include <numeric>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "bench/machine_info.h"
#include "bench/result_file.h"
#include "bench/local_job.h"
#include "bench/worker_metrics.h"
#include "common/initializer.h"
#include "common/job_spec.h"
#include "common/model_layout.h"
#include "worker/model/gpt_model.h"
#include "worker/model/model_factory.h"
#include "worker/model/openblas_env.h"

ABSL_FLAG(std::string, data, "../shared/data/tinyshakespeare.txt",
          "Training text (relative paths are taken from the repository root).");
ABSL_FLAG(uint64_t, steps, 2000, "Iterations per run.");
ABSL_FLAG(std::vector<std::string>, runs, std::vector<std::string>({"1x12", "2x6"}),
          "Runs as WORKERSxBATCH (batch per worker), or GROUPSxBATCH/pPmM: GROUPS pipeline "
          "groups of P stages, M micro-batches of BATCH rows each; all with 1 server.");
ABSL_FLAG(std::vector<std::string>, wire_dtypes, std::vector<std::string>({"default"}),
          "Each run once per wire dtype: FP32, BF16, or default (the job default: BF16 for GPTs).");
ABSL_FLAG(std::vector<std::string>, top_k, {},
          "Each run also with TOP_K gradient compression at these fractions (e.g. 0.01), error "
          "feedback on; the JSON has the bytes pushed per step of every run.");
ABSL_FLAG(std::string, tokenizer, "char",
          "char (the shakespeare-char recipe) or bpe (a SentencePiece BPE model of --vocab_size "
          "pieces, trained on the training split).");
ABSL_FLAG(uint32_t, vocab_size, 8192, "Tokenizer bpe: pieces.");
ABSL_FLAG(bool, untied, false,
          "Untied embeddings (model.tie_embeddings false): the input embedding is a sparse table.");
ABSL_FLAG(std::vector<std::string>, embedding_pushes, std::vector<std::string>({"sparse"}),
          "With --untied: each run once per way of pushing and pulling the input embedding: "
          "sparse (only the rows of the batch's tokens) or dense (the whole table: ps_worker "
          "--row_sparse_pushes=false --row_sparse_pulls=false).");
ABSL_FLAG(std::vector<std::string>, worker_args, {},
          "More flags for every ps_worker (e.g. --overlap=false).");
ABSL_FLAG(int, compute_only_steps, 100,
          "Forward+backward steps of the same model in this process before and after each run "
          "(after 5 untimed ones): the compute-only tokens/s the run is compared with (from the "
          "median step, the mean of before and after). 0: skip.");
ABSL_FLAG(std::string, out, "", "JSON output path (default bench/results/train_<host>.json).");
ABSL_FLAG(std::string, commit, "", "Git commit measured (recorded in the JSON).");

namespace psrv {
namespace {

using Json = nlohmann::ordered_json;

// `workers` data-parallel workers (pipeline groups when `pipeline` > 1, each of `pipeline` stages
// and `micro_batches` micro-batches) of `batch` rows.
JobSpec Recipe(const std::string& data, uint64_t steps, uint32_t workers, uint32_t batch,
               const std::string& wire_dtype, uint32_t pipeline = 1, uint32_t micro_batches = 1) {
  JobSpec spec;
  spec.set_name(absl::StrCat("shakespeare-",
                             absl::GetFlag(FLAGS_tokenizer) == "bpe"
                                 ? absl::StrCat("bpe", absl::GetFlag(FLAGS_vocab_size))
                                 : "char",
                             absl::GetFlag(FLAGS_untied) ? "-untied" : "", "-", workers, "x", batch,
                             pipeline > 1 ? absl::StrCat("-p", pipeline, "m", micro_batches) : "",
                             wire_dtype == "default" ? "" : absl::StrCat("-", wire_dtype)));
  spec.set_num_servers(1);
  spec.set_num_workers(workers * pipeline);
  if (pipeline > 1) {
    spec.mutable_parallelism()->set_pipeline(pipeline);
    spec.mutable_parallelism()->set_micro_batches(micro_batches);
  }
  spec.mutable_data()->set_path(data);
  spec.mutable_data()->set_validation_fraction(0.1f);
  ModelSpec* model = spec.mutable_model();
  model->set_kind("gpt");
  model->set_tokenizer(absl::GetFlag(FLAGS_tokenizer));
  if (model->tokenizer() == "bpe") model->set_vocab_size(absl::GetFlag(FLAGS_vocab_size));
  if (absl::GetFlag(FLAGS_untied)) model->set_tie_embeddings(false);
  model->set_layers(4);
  model->set_heads(4);
  model->set_width(128);
  model->set_context(64);
  model->set_dropout(0.0f);
  TrainingSpec* t = spec.mutable_training();
  t->set_steps(steps);
  t->set_batch_size(batch);
  t->set_consistency(SYNC);
  OptimizerConfig* o = t->mutable_optimizer();
  o->set_kind(ADAMW);
  o->set_learning_rate(1e-3f);
  o->set_min_learning_rate(1e-4f);
  o->set_warmup_steps(100);
  o->set_decay_steps(steps);
  o->set_beta1(0.9f);
  o->set_beta2(0.99f);
  o->set_weight_decay(0.1f);
  t->set_grad_clip(1.0f);
  t->set_eval_every(250);
  t->set_eval_batches(20);
  t->set_report_every(50);
  t->set_sample_length(300);
  t->set_seed(1337);
  if (wire_dtype == "FP32") t->set_wire_dtype(FP32);
  if (wire_dtype == "BF16") t->set_wire_dtype(BF16);
  ApplyJobDefaults(&spec);
  return spec;
}

// Tokens per second of the worker's model alone (forward + backward of `spec`'s batch, as a
// worker computes it, with the same OpenBLAS setup), on random token rows: from the median step
// (the machine's hiccups left out) and from the mean step (with them, as a run's wall time has
// them).
struct ComputeOnlyRate {
  double median = 0;
  double mean = 0;
};

absl::StatusOr<ComputeOnlyRate> ComputeOnlyTokensPerSec(const JobSpec& spec, int steps) {
  const ModelSpec& m = spec.model();
  const GptConfig config = GptConfigFromSpec(m, VocabSize(m));
  absl::StatusOr<std::unique_ptr<GptModel>> model = GptModel::Create(config);
  if (!model.ok()) return model.status();
  std::vector<float> params((*model)->num_parameters()), grads(params.size());
  size_t offset = 0;
  for (const TableSpec& table : GptTables(config, spec.training().seed())) {
    InitializeRange(table, 0, TableElements(table), params.data() + offset);
    offset += TableElements(table);
  }
  const int batch = static_cast<int>(spec.training().batch_size());
  std::vector<int32_t> rows(static_cast<size_t>(batch) * (config.context + 1));
  for (size_t i = 0; i < rows.size(); ++i) rows[i] = static_cast<int32_t>((i * 7919) % config.vocab);
  for (int i = 0; i < 5; ++i) (*model)->ForwardBackward(params.data(), rows.data(), batch, i, grads.data());
  std::vector<double> seconds;  // Per step: the median resists the machine's hiccups.
  for (int i = 0; i < steps; ++i) {
    const absl::Time start = absl::Now();
    (*model)->ForwardBackward(params.data(), rows.data(), batch, i, grads.data());
    seconds.push_back(absl::ToDoubleSeconds(absl::Now() - start));
  }
  std::sort(seconds.begin(), seconds.end());
  const double tokens = static_cast<double>(batch) * config.context;
  const double mean = std::accumulate(seconds.begin(), seconds.end(), 0.0) /
                      static_cast<double>(seconds.size());
  return ComputeOnlyRate{tokens / seconds[seconds.size() / 2], tokens / mean};
}

// Bytes the workers pushed and pulled per step, from their /metrics
// (psrv_worker_pushed_bytes_total and psrv_worker_pulled_bytes_total over psrv_worker_steps_total,
// summed over workers); 0 if none could be read.
std::pair<double, double> PushedAndPulledBytesPerStep(LocalCluster* cluster) {
  double pushed = 0, pulled = 0, steps = 0;
  for (const ParsedMetrics& metrics : ReadWorkerMetrics(cluster)) {
    pushed += metrics.Sum("psrv_worker_pushed_bytes_total", {});
    pulled += metrics.Sum("psrv_worker_pulled_bytes_total", {});
    steps += metrics.Sum("psrv_worker_steps_total", {});
  }
  if (steps == 0) return {0, 0};
  return {pushed / steps, pulled / steps};
}

absl::StatusOr<Json> RunOnce(const LocalBinaries& binaries, JobSpec spec,
                             const std::vector<std::string>& more_worker_args) {
  std::vector<std::string> worker_args = absl::GetFlag(FLAGS_worker_args);
  worker_args.insert(worker_args.end(), more_worker_args.begin(), more_worker_args.end());
  std::vector<double> tokens_per_sec;
  uint64_t printed = 0;
  double pushed_bytes_per_step = 0, pulled_bytes_per_step = 0;
  std::map<std::string, double> phases;  // The last read before the workers exit.
  absl::Time last_read = absl::InfinitePast();
  absl::StatusOr<JobStatus> final = RunLocalJob(
      binaries, spec, "train_bench", worker_args,
      [&](const JobStatus& status, LocalCluster* cluster) {
        if (status.state() == RUNNING && status.tokens_per_sec() > 0) {
          tokens_per_sec.push_back(status.tokens_per_sec());
        }
        if (status.state() == RUNNING && absl::Now() - last_read > absl::Seconds(2)) {
          last_read = absl::Now();
          const auto [pushed, pulled] = PushedAndPulledBytesPerStep(cluster);
          if (pushed > 0) pushed_bytes_per_step = pushed;
          if (pulled > 0) pulled_bytes_per_step = pulled;
          std::map<std::string, double> now = WorkerPhaseMeans(cluster);
          if (!now.empty()) phases = std::move(now);
        }
        if (status.step() >= printed + spec.training().steps() / 10) {
          printed = status.step();
          std::cout << "  step " << status.step() << " loss " << status.loss() << " val "
                    << status.val_loss() << " tok/s " << status.tokens_per_sec() << std::endl;
        }
      });
  if (!final.ok()) return final.status();
  const double seconds = (final->end_time_ms() - final->start_time_ms()) / 1000.0;
  // Rows per step: every group's micro-batches (a pipeline's stages share them).
  const double tokens = static_cast<double>(spec.training().steps()) * DataGroups(spec) *
                        std::max<uint32_t>(1, spec.parallelism().micro_batches()) *
                        spec.training().batch_size() * spec.model().context();
  std::sort(tokens_per_sec.begin(), tokens_per_sec.end());
  Json run;
  run["name"] = spec.name();
  run["servers"] = spec.num_servers();
  run["workers"] = spec.num_workers();
  run["pipeline_stages"] = PipelineStages(spec);
  run["micro_batches"] = std::max<uint32_t>(1, spec.parallelism().micro_batches());
  run["batch_per_worker"] = spec.training().batch_size();
  run["wire_dtype"] = DType_Name(spec.training().wire_dtype());
  run["tokenizer"] = spec.model().tokenizer();
  run["vocab_size"] = VocabSize(spec.model());
  run["tie_embeddings"] = TiesEmbeddings(spec.model());
  if (!TiesEmbeddings(spec.model())) {
    run["embedding_pushes"] =
        std::find(worker_args.begin(), worker_args.end(), "--row_sparse_pushes=false") !=
                worker_args.end()
            ? "dense"
            : "sparse";
  }
  if (spec.training().compression().kind() == TOP_K) {
    run["compression"] = "TOP_K";
    run["top_k_fraction"] = spec.training().compression().fraction();
  }
  // Per worker step, all workers together (one worker's when there is one); read during the run.
  run["pushed_bytes_per_step"] = pushed_bytes_per_step;
  run["pulled_bytes_per_step"] = pulled_bytes_per_step;
  // The workers' mean time per step in each phase (ms), read every 2 s during the run: with the
  // compute-only step below, where the end-to-end step's time goes.
  Json phase_ms = Json::object();
  for (const auto& [phase, seconds_per_step] : phases) phase_ms[phase] = seconds_per_step * 1e3;
  run["worker_phase_mean_ms"] = phase_ms;
  run["steps"] = spec.training().steps();
  run["final_val_loss"] = final->val_loss();
  Json curve = Json::array();
  for (const ValidationPoint& p : final->val_history()) curve.push_back({p.step(), p.loss()});
  run["val_curve"] = curve;
  run["final_train_loss"] = final->loss();
  run["wall_seconds"] = seconds;
  run["training_tokens"] = tokens;
  run["tokens_per_sec_overall"] = tokens / seconds;
  run["tokens_per_sec_reported_median"] =
      tokens_per_sec.empty() ? 0.0 : tokens_per_sec[tokens_per_sec.size() / 2];
  run["sample"] = final->sample();
  std::cout << spec.name() << ": val loss " << final->val_loss() << ", " << seconds << " s, "
            << tokens / seconds << " tokens/s" << std::endl;
  return run;
}

int Run(const char* argv0) {
  absl::StatusOr<LocalBinaries> binaries = FindLocalBinaries("", argv0);
  if (!binaries.ok()) {
    std::cerr << binaries.status() << std::endl;
    return 1;
  }
  const std::string data = FromWorkspace(absl::GetFlag(FLAGS_data));
  Json report = ResultHeader("train_shakespeare_char", absl::GetFlag(FLAGS_commit));
  report["data"] = data;
  if (absl::GetFlag(FLAGS_tokenizer) == "char") report["reference_val_loss"] = 1.88;
  report["worker_args"] = absl::GetFlag(FLAGS_worker_args);
  Json runs = Json::array();
  for (const std::string& text : absl::GetFlag(FLAGS_runs)) {
    // WORKERSxBATCH, or GROUPSxBATCH/pPmM: GROUPS pipeline groups of P stages, M micro-batches.
    std::vector<std::string> layout = absl::StrSplit(text, '/');
    std::vector<std::string> parts = absl::StrSplit(layout[0], 'x');
    uint32_t workers = 0, batch = 0, pipeline = 1, micro_batches = 1;
    bool good = layout.size() <= 2 && parts.size() == 2 && absl::SimpleAtoi(parts[0], &workers) &&
                absl::SimpleAtoi(parts[1], &batch) && workers > 0 && batch > 0;
    if (good && layout.size() == 2) {
      std::vector<std::string> pm = absl::StrSplit(layout[1].substr(1), 'm');
      good = layout[1].size() > 1 && layout[1][0] == 'p' && pm.size() == 2 &&
             absl::SimpleAtoi(pm[0], &pipeline) && absl::SimpleAtoi(pm[1], &micro_batches) &&
             pipeline > 1 && micro_batches > 0;
    }
    if (!good) {
      std::cerr << "bad --runs entry \"" << text
                << "\": want WORKERSxBATCH (e.g. 2x6) or GROUPSxBATCH/pPmM (e.g. 2x3/p2m2)"
                << std::endl;
      return 2;
    }
    for (const std::string& dtype : absl::GetFlag(FLAGS_wire_dtypes)) {
      if (dtype != "default" && dtype != "FP32" && dtype != "BF16") {
        std::cerr << "bad --wire_dtypes entry \"" << dtype << "\": want FP32, BF16 or default"
                  << std::endl;
        return 2;
      }
      JobSpec dense_spec =
          Recipe(data, absl::GetFlag(FLAGS_steps), workers, batch, dtype, pipeline, micro_batches);
      if (absl::Status s = FillVocabulary(&dense_spec); !s.ok()) {
        std::cerr << s << std::endl;
        return 2;
      }
      std::vector<JobSpec> variants = {dense_spec};
      for (const std::string& text : absl::GetFlag(FLAGS_top_k)) {
        double fraction = 0;
        if (!absl::SimpleAtod(text, &fraction) || !(fraction > 0 && fraction <= 1)) {
          std::cerr << "bad --top_k entry \"" << text << "\": want a fraction in (0, 1]"
                    << std::endl;
          return 2;
        }
        JobSpec compressed = dense_spec;
        compressed.set_name(absl::StrCat(dense_spec.name(), "-topk", text));
        compressed.mutable_training()->mutable_compression()->set_kind(TOP_K);
        compressed.mutable_training()->mutable_compression()->set_fraction(
            static_cast<float>(fraction));
        variants.push_back(compressed);
      }
      // Untied: each variant once per way of pushing the input embedding.
      std::vector<std::pair<JobSpec, std::vector<std::string>>> runs_of_variants;
      for (const JobSpec& spec : variants) {
        if (!absl::GetFlag(FLAGS_untied)) {
          runs_of_variants.push_back({spec, {}});
          continue;
        }
        for (const std::string& pushes : absl::GetFlag(FLAGS_embedding_pushes)) {
          if (pushes != "sparse" && pushes != "dense") {
            std::cerr << "bad --embedding_pushes entry \"" << pushes
                      << "\": want sparse or dense" << std::endl;
            return 2;
          }
          JobSpec named = spec;
          named.set_name(absl::StrCat(spec.name(), "-", pushes));
          runs_of_variants.push_back(
              {named, pushes == "dense"
                          ? std::vector<std::string>{"--row_sparse_pushes=false",
                                                     "--row_sparse_pulls=false"}
                          : std::vector<std::string>{}});
        }
      }
      for (const auto& [spec, more_worker_args] : runs_of_variants) {
        // The whole global batch on one worker: what a single machine computes per step.
        JobSpec alone = spec;
        alone.mutable_training()->set_batch_size(spec.training().batch_size() * workers *
                                                 micro_batches);
        alone.set_num_workers(1);
        alone.clear_parallelism();
        auto compute_only = [&]() -> absl::StatusOr<ComputeOnlyRate> {
          if (absl::GetFlag(FLAGS_compute_only_steps) <= 0) return ComputeOnlyRate{};
          return ComputeOnlyTokensPerSec(alone, absl::GetFlag(FLAGS_compute_only_steps));
        };
        absl::StatusOr<ComputeOnlyRate> before = compute_only();
        absl::StatusOr<Json> run =
            before.ok() ? RunOnce(*binaries, spec, more_worker_args) : before.status();
        absl::StatusOr<ComputeOnlyRate> after = run.ok() ? compute_only() : run.status();
        if (!after.ok()) {
          std::cerr << spec.name() << ": " << after.status() << std::endl;
          return 1;
        }
        if (before->median > 0 && after->median > 0) {
          const double overall = (*run)["tokens_per_sec_overall"].get<double>();
          const double median = (before->median + after->median) / 2;
          (*run)["compute_only_tokens_per_sec"] = median;
          (*run)["compute_only_tokens_per_sec_before_after"] = {before->median, after->median};
          (*run)["end_to_end_over_compute_only"] = overall / median;
          // The same from the mean compute-only step: the machine's hiccups on both sides of the
          // ratio (the end-to-end rate has them: it is tokens over wall time).
          const double mean = (before->mean + after->mean) / 2;
          (*run)["compute_only_mean_tokens_per_sec"] = mean;
          (*run)["end_to_end_over_compute_only_mean"] = overall / mean;
          // The same as one step's time (the global batch), beside the workers' compute phase in
          // the cluster (their own part of it).
          const double step_tokens = (*run)["training_tokens"].get<double>() /
                                     static_cast<double>(spec.training().steps());
          (*run)["compute_only_step_ms"] = step_tokens / median * 1e3;
          (*run)["compute_only_mean_step_ms"] = step_tokens / mean * 1e3;
          std::cout << spec.name() << ": end to end / compute only = "
                    << (*run)["end_to_end_over_compute_only"].get<double>() << " (against its mean "
                    << (*run)["end_to_end_over_compute_only_mean"].get<double>()
                    << "); per step: compute alone " << (*run)["compute_only_step_ms"].get<double>()
                    << " ms (mean " << (*run)["compute_only_mean_step_ms"].get<double>()
                    << "), in the cluster (ms) " << (*run)["worker_phase_mean_ms"].dump()
                    << std::endl;
        }
        runs.push_back(*run);
      }
    }
  }
  report["runs"] = runs;
  return WriteResult(report, absl::GetFlag(FLAGS_out), "train");
}

}  // namespace
}  // namespace psrv

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "Trains the nanoGPT shakespeare-char CPU recipe through a local cluster; writes JSON.\n"
      "Usage: bazel run -c opt //bench:train_bench -- [--steps=2000] [--runs=1x12,2x6]");
  psrv::ConfigureOpenBlas(argv);  // As ps_worker does, for the compute-only measurement.
  absl::ParseCommandLine(argc, argv);
  return psrv::Run(argv[0]);
}
