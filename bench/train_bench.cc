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
#include "client/coordinator_client.h"
#include "client/local_cluster.h"
#include "common/job_spec.h"

ABSL_FLAG(std::string, data, "../shared/data/tinyshakespeare.txt",
          "Training text (relative paths are taken from the repository root).");
ABSL_FLAG(uint64_t, steps, 2000, "Iterations per run.");
ABSL_FLAG(std::vector<std::string>, runs, std::vector<std::string>({"1x12", "2x6"}),
          "Runs as WORKERSxBATCH (batch per worker), all with 1 server.");
ABSL_FLAG(std::string, out, "", "JSON output path (default bench/results/train_<host>.json).");
ABSL_FLAG(std::string, commit, "", "Git commit measured (recorded in the JSON).");

namespace psrv {
namespace {

using Json = nlohmann::ordered_json;

JobSpec Recipe(const std::string& data, uint64_t steps, uint32_t workers, uint32_t batch) {
  JobSpec spec;
  spec.set_name(absl::StrCat("shakespeare-char-", workers, "x", batch));
  spec.set_num_servers(1);
  spec.set_num_workers(workers);
  spec.mutable_data()->set_path(data);
  spec.mutable_data()->set_validation_fraction(0.1f);
  ModelSpec* model = spec.mutable_model();
  model->set_kind("gpt");
  model->set_tokenizer("char");
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
  ApplyJobDefaults(&spec);
  return spec;
}

absl::StatusOr<Json> RunOnce(const LocalBinaries& binaries, JobSpec spec) {
  const std::string log_dir = absl::StrCat("/tmp/train_bench_", getpid(), "_", spec.name());
  std::system(absl::StrCat("mkdir -p ", log_dir).c_str());
  LocalClusterOptions options;
  options.binaries = binaries;
  options.num_servers = spec.num_servers();
  options.num_workers = spec.num_workers();
  options.log_dir = log_dir;
  LocalCluster cluster(options);
  if (absl::Status s = cluster.Start(); !s.ok()) return s;
  CoordinatorClientOptions client_options;
  client_options.address = cluster.coordinator_address();
  CoordinatorClient client(client_options);
  absl::StatusOr<std::string> id = client.SubmitJob(spec);
  if (!id.ok()) return id.status();
  std::cout << spec.name() << ": job " << *id << ", logs in " << log_dir << std::endl;
  std::vector<double> tokens_per_sec;
  uint64_t printed = 0;
  absl::StatusOr<JobStatus> final = client.WatchJob(
      *id,
      [&](const JobStatus& status) {
        if (status.state() == RUNNING && status.tokens_per_sec() > 0) {
          tokens_per_sec.push_back(status.tokens_per_sec());
        }
        if (status.step() >= printed + spec.training().steps() / 10) {
          printed = status.step();
          std::cout << "  step " << status.step() << " loss " << status.loss() << " val "
                    << status.val_loss() << " tok/s " << status.tokens_per_sec() << std::endl;
        }
      },
      [&] { return cluster.CheckProcesses(); });
  cluster.Stop();
  if (!final.ok()) return final.status();
  if (final->state() != SUCCEEDED) {
    return absl::InternalError(absl::StrCat("job ", JobState_Name(final->state()), ": ",
                                            final->message(), " (logs in ", log_dir, ")"));
  }
  const double seconds = (final->end_time_ms() - final->start_time_ms()) / 1000.0;
  const double tokens = static_cast<double>(spec.training().steps()) * spec.num_workers() *
                        spec.training().batch_size() * spec.model().context();
  std::sort(tokens_per_sec.begin(), tokens_per_sec.end());
  Json run;
  run["name"] = spec.name();
  run["servers"] = spec.num_servers();
  run["workers"] = spec.num_workers();
  run["batch_per_worker"] = spec.training().batch_size();
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
  report["reference_val_loss"] = 1.88;
  Json runs = Json::array();
  for (const std::string& text : absl::GetFlag(FLAGS_runs)) {
    std::vector<std::string> parts = absl::StrSplit(text, 'x');
    uint32_t workers = 0, batch = 0;
    if (parts.size() != 2 || !absl::SimpleAtoi(parts[0], &workers) ||
        !absl::SimpleAtoi(parts[1], &batch) || workers == 0 || batch == 0) {
      std::cerr << "bad --runs entry \"" << text << "\": want WORKERSxBATCH, e.g. 2x6" << std::endl;
      return 2;
    }
    JobSpec spec = Recipe(data, absl::GetFlag(FLAGS_steps), workers, batch);
    if (absl::Status s = FillVocabulary(&spec); !s.ok()) {
      std::cerr << s << std::endl;
      return 2;
    }
    absl::StatusOr<Json> run = RunOnce(*binaries, spec);
    if (!run.ok()) {
      std::cerr << spec.name() << ": " << run.status() << std::endl;
      return 1;
    }
    runs.push_back(*run);
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
  absl::ParseCommandLine(argc, argv);
  return psrv::Run(argv[0]);
}
