// Stragglers against the consistency modes: a small character GPT trained on tinyshakespeare by 4
// workers and 1 server on a real local cluster, where workers are slowed by ps_worker --slowdown:
//   transient   every worker, each step, 4 times as long with probability 0.1 (stragglers that
//               come and go);
//   persistent  one worker 3 times as long on every step;
//   none        nobody (the baseline).
// For each scenario and mode (SYNC; SSP with staleness 1, 2, 4, 8; SYNC with backup workers, 3 of
// 4; ASYNC) it records the wall
// time of the job (every worker runs the same number of steps) and its final validation loss,
// with the ratio of wall times against SYNC in the same scenario. Results:
// bench/results/straggler_<host>.json; table in bench/README.md.
#include <algorithm>
#include <iostream>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "bench/local_job.h"
#include "bench/result_file.h"
#include "client/coordinator_client.h"
#include "common/job_spec.h"

ABSL_FLAG(std::string, data, "../shared/data/tinyshakespeare.txt",
          "Training text (relative paths are taken from the repository root).");
ABSL_FLAG(uint64_t, steps, 1000, "Steps per worker.");
ABSL_FLAG(uint32_t, workers, 4, "Workers.");
ABSL_FLAG(uint32_t, batch, 8, "Rows per worker per step.");
ABSL_FLAG(uint32_t, layers, 4, "GPT layers.");
ABSL_FLAG(uint32_t, width, 128, "GPT width (4 heads).");
ABSL_FLAG(std::vector<std::string>, scenarios,
          std::vector<std::string>({"none", "transient", "persistent"}),
          "none, transient (every worker --slowdown=4@0.1), persistent (worker 0 --slowdown=3).");
ABSL_FLAG(std::vector<std::string>, modes,
          std::vector<std::string>({"sync", "ssp1", "ssp2", "ssp4", "ssp8", "backup3", "async"}),
          "sync, sspN (SSP with staleness N), backupN (SYNC, each step applied once N workers "
          "pushed it), async. Scenario none runs sync only unless "
          "--baseline_all_modes.");
ABSL_FLAG(double, learning_rate, 2e-3, "Peak learning rate of SYNC (AdamW; decays to a tenth).");
ABSL_FLAG(double, async_learning_rate_scale, 0.5,
          "SSP and ASYNC apply every worker's push as an update of its own (num_workers times as "
          "many updates as SYNC, each from one worker's batch): their learning rate is SYNC's "
          "times this.");
ABSL_FLAG(bool, baseline_all_modes, false, "Run every mode in scenario none too.");
ABSL_FLAG(std::vector<std::string>, worker_args, {}, "More flags for every ps_worker.");
ABSL_FLAG(std::string, out, "", "JSON output path (default bench/results/straggler_<host>.json).");
ABSL_FLAG(std::string, commit, "", "Git commit measured (recorded in the JSON).");

namespace psrv {
namespace {

using Json = nlohmann::ordered_json;

struct Mode {
  std::string name;
  ConsistencyMode consistency = SYNC;
  uint32_t staleness = 0;
  uint32_t aggregate_first = 0;  // SYNC with backup workers.
};

absl::StatusOr<Mode> ParseMode(const std::string& text) {
  Mode mode;
  mode.name = text;
  absl::string_view rest = text;
  if (text == "sync") return mode;
  if (text == "async") {
    mode.consistency = ASYNC;
    return mode;
  }
  if (absl::ConsumePrefix(&rest, "ssp") && absl::SimpleAtoi(rest, &mode.staleness)) {
    mode.consistency = SSP;
    return mode;
  }
  if (absl::ConsumePrefix(&rest, "backup") && absl::SimpleAtoi(rest, &mode.aggregate_first) &&
      mode.aggregate_first > 0) {
    return mode;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("bad --modes entry \"", text, "\": want sync, sspN, backupN or async"));
}

JobSpec Spec(const std::string& data, const std::string& scenario, const Mode& mode) {
  JobSpec spec;
  spec.set_name(absl::StrCat("straggler-", scenario, "-", mode.name));
  spec.set_num_servers(1);
  spec.set_num_workers(absl::GetFlag(FLAGS_workers));
  spec.mutable_data()->set_path(data);
  spec.mutable_data()->set_validation_fraction(0.1f);
  ModelSpec* model = spec.mutable_model();
  model->set_kind("gpt");
  model->set_tokenizer("char");
  model->set_layers(absl::GetFlag(FLAGS_layers));
  model->set_heads(4);
  model->set_width(absl::GetFlag(FLAGS_width));
  model->set_context(64);
  model->set_dropout(0.0f);
  TrainingSpec* t = spec.mutable_training();
  const uint64_t steps = absl::GetFlag(FLAGS_steps);
  t->set_steps(steps);
  t->set_batch_size(absl::GetFlag(FLAGS_batch));
  t->set_consistency(mode.consistency);
  if (mode.consistency == SSP) t->set_staleness(mode.staleness);
  t->set_aggregate_first(mode.aggregate_first);
  OptimizerConfig* o = t->mutable_optimizer();
  o->set_kind(ADAMW);
  const double lr = absl::GetFlag(FLAGS_learning_rate) *
                    (mode.consistency == SYNC ? 1.0 : absl::GetFlag(FLAGS_async_learning_rate_scale));
  o->set_learning_rate(static_cast<float>(lr));
  o->set_min_learning_rate(static_cast<float>(lr / 10));
  o->set_warmup_steps(30);
  o->set_decay_steps(steps);
  o->set_beta1(0.9f);
  o->set_beta2(0.99f);
  o->set_weight_decay(0.1f);
  t->set_grad_clip(1.0f);
  t->set_eval_every(0);
  t->set_eval_batches(20);
  t->set_report_every(25);
  t->set_sample_length(100);
  t->set_seed(1337);
  ApplyJobDefaults(&spec);
  return spec;
}

// What the servers say of staleness: push staleness (updates; the mean over shards of each
// shard's mean, and the largest) and the seconds SSP pulls waited (the most of any shard: every
// pull asks every shard, so that is about the workers' total).
struct ShardStats {
  int shards = 0;
  double mean_staleness = 0;
  uint64_t max_staleness = 0;
  double blocked_seconds = 0;
  uint64_t late_pushes = 0;  // Backup workers, summed over shards.
};

ShardStats ReadShardStats(const JobStatus& status) {
  ShardStats stats;
  std::set<std::string> servers;
  for (const ShardAssignment& shard : status.shard_map().shards()) {
    servers.insert(shard.server_address());
  }
  for (const std::string& address : servers) {
    absl::StatusOr<ServerStatus> server = GetServerStatus(address, status.job_id(), absl::Seconds(2));
    if (!server.ok()) continue;
    for (const ShardStatus& shard : server->shards()) {
      if (shard.role() != PRIMARY) continue;
      ++stats.shards;
      stats.mean_staleness += shard.mean_push_staleness();
      stats.max_staleness = std::max(stats.max_staleness, shard.max_push_staleness());
      stats.blocked_seconds = std::max(stats.blocked_seconds, shard.blocked_seconds());
      stats.late_pushes += shard.late_pushes();
    }
  }
  if (stats.shards > 0) stats.mean_staleness /= stats.shards;
  return stats;
}

// Flags of all workers, and of single ones, for `scenario`.
bool ScenarioArgs(const std::string& scenario, std::vector<std::string>* all,
                  std::vector<std::vector<std::string>>* single) {
  if (scenario == "none") return true;
  if (scenario == "transient") {
    all->push_back("--slowdown=4@0.1");
    return true;
  }
  if (scenario == "persistent") {
    single->push_back({"--slowdown=3"});
    return true;
  }
  return false;
}

int Run(const char* argv0) {
  absl::StatusOr<LocalBinaries> binaries = FindLocalBinaries("", argv0);
  if (!binaries.ok()) {
    std::cerr << binaries.status() << std::endl;
    return 1;
  }
  std::vector<Mode> modes;
  for (const std::string& text : absl::GetFlag(FLAGS_modes)) {
    absl::StatusOr<Mode> mode = ParseMode(text);
    if (!mode.ok()) {
      std::cerr << mode.status().message() << std::endl;
      return 2;
    }
    modes.push_back(*mode);
  }
  const std::string data = FromWorkspace(absl::GetFlag(FLAGS_data));
  Json report = ResultHeader("straggler", absl::GetFlag(FLAGS_commit));
  report["data"] = data;
  report["model"] = absl::StrCat("gpt char, ", absl::GetFlag(FLAGS_layers), " layers, 4 heads, width ",
                                 absl::GetFlag(FLAGS_width), ", context 64, AdamW, clip 1");
  report["learning_rate_sync"] = absl::GetFlag(FLAGS_learning_rate);
  report["learning_rate_ssp_async"] =
      absl::GetFlag(FLAGS_learning_rate) * absl::GetFlag(FLAGS_async_learning_rate_scale);
  report["servers"] = 1;
  report["workers"] = absl::GetFlag(FLAGS_workers);
  report["batch_per_worker"] = absl::GetFlag(FLAGS_batch);
  report["steps_per_worker"] = absl::GetFlag(FLAGS_steps);
  report["worker_args"] = absl::GetFlag(FLAGS_worker_args);
  Json runs = Json::array();
  for (const std::string& scenario : absl::GetFlag(FLAGS_scenarios)) {
    std::vector<std::string> worker_args = absl::GetFlag(FLAGS_worker_args);
    std::vector<std::vector<std::string>> per_worker;
    if (!ScenarioArgs(scenario, &worker_args, &per_worker)) {
      std::cerr << "bad --scenarios entry \"" << scenario
                << "\": want none, transient or persistent" << std::endl;
      return 2;
    }
    double sync_seconds = 0;
    for (const Mode& mode : modes) {
      if (scenario == "none" && mode.name != "sync" && !absl::GetFlag(FLAGS_baseline_all_modes)) {
        continue;
      }
      JobSpec spec = Spec(data, scenario, mode);
      if (absl::Status s = FillVocabulary(&spec); !s.ok()) {
        std::cerr << s << std::endl;
        return 2;
      }
      // The servers' view of staleness, read while the job runs (the cluster stops with it).
      double mean_staleness = 0, blocked_seconds = 0;
      uint64_t max_staleness = 0, late_pushes = 0;
      absl::Time last_read = absl::InfinitePast();
      absl::StatusOr<JobStatus> final = RunLocalJob(
          *binaries, spec, "straggler_bench", worker_args,
          [&](const JobStatus& status, LocalCluster*) {
            if (status.state() != RUNNING || absl::Now() - last_read < absl::Seconds(1)) return;
            last_read = absl::Now();
            ShardStats stats = ReadShardStats(status);
            if (stats.shards == 0) return;
            mean_staleness = stats.mean_staleness;
            max_staleness = stats.max_staleness;
            blocked_seconds = stats.blocked_seconds;
            late_pushes = stats.late_pushes;
          },
          per_worker);
      if (!final.ok()) {
        std::cerr << spec.name() << ": " << final.status() << std::endl;
        return 1;
      }
      const double seconds = (final->end_time_ms() - final->start_time_ms()) / 1000.0;
      if (mode.name == "sync") sync_seconds = seconds;
      Json run;
      run["scenario"] = scenario;
      run["mode"] = mode.name;
      run["consistency"] = ConsistencyMode_Name(mode.consistency);
      if (mode.consistency == SSP) run["staleness"] = mode.staleness;
      if (mode.aggregate_first > 0) {
        run["aggregate_first"] = mode.aggregate_first;
        run["late_pushes"] = late_pushes;
      }
      run["wall_seconds"] = seconds;
      if (sync_seconds > 0) run["wall_over_sync"] = seconds / sync_seconds;
      run["final_val_loss"] = final->val_loss();
      if (mode.consistency != SYNC) {
        // As of the servers' last reading, about a second before the end.
        run["push_staleness_mean"] = mean_staleness;
        run["push_staleness_max"] = max_staleness;
      }
      if (mode.consistency == SSP) run["pull_blocked_seconds"] = blocked_seconds;
      run["final_train_loss"] = final->loss();
      runs.push_back(run);
      std::cout << scenario << " " << mode.name << ": " << seconds << " s"
                << (sync_seconds > 0 ? absl::StrCat(" (", seconds / sync_seconds, " of sync)")
                                     : std::string())
                << ", val loss " << final->val_loss();
      if (mode.consistency != SYNC) {
        std::cout << ", push staleness " << mean_staleness << " (max " << max_staleness << ")";
      }
      std::cout << std::endl;
    }
  }
  report["runs"] = runs;
  return WriteResult(report, absl::GetFlag(FLAGS_out), "straggler");
}

}  // namespace
}  // namespace psrv

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "Wall time and validation loss of SYNC, SSP and ASYNC with straggling workers on a local "
      "cluster; writes JSON.\n"
      "Usage: bazel run -c opt //bench:straggler_bench -- [--scenarios=none,transient,persistent]\n"
      "       [--modes=sync,ssp1,ssp2,ssp4,ssp8,backup3,async] [--steps=1000] [--commit=...]");
  absl::ParseCommandLine(argc, argv);
  return psrv::Run(argv[0]);
}
