// Training throughput of the CPU language models: forward+backward tokens per second of GptModel
// (and MlpModel for comparison) on random token rows, written as JSON.
//
// tokens per step = B * predictions_per_row (GPT: B*T). FLOPs per token (forward + backward):
//   GPT: 6 * (N - T*C) + 12 * L * C * T   (N parameters less the position table, which does no
//        products; the second term is attention's q k^T and att v over the full T x T, as computed)
//   MLP: 6 * (k*E*H + H*V)
#include <cblas.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "bench/machine_info.h"
#include "common/initializer.h"
#include "worker/model/gpt_model.h"
#include "worker/model/mlp_model.h"
#include "worker/model/openblas_env.h"

ABSL_FLAG(std::string, out, "bench/results/model_throughput.json",
          "JSON result path; relative paths are under the workspace with `bazel run`");
ABSL_FLAG(std::string, models, "gpt,mlp", "Comma-separated: gpt, mlp");
ABSL_FLAG(int, iters, 30, "Timed forward+backward steps per model");
ABSL_FLAG(int, warmup, 5, "Untimed steps first");
ABSL_FLAG(int, batch, 12, "Rows per step (B)");
ABSL_FLAG(int, layers, 4, "GPT L");
ABSL_FLAG(int, heads, 4, "GPT heads");
ABSL_FLAG(int, width, 128, "GPT C");
ABSL_FLAG(int, context, 64, "GPT T");
ABSL_FLAG(int, vocab, 65, "V (both models)");
ABSL_FLAG(double, dropout, 0.0, "GPT dropout");
ABSL_FLAG(int, threads, 0, "GPT kernel threads, the caller included (0: one per core)");
ABSL_FLAG(int, mlp_context, 8, "MLP k");
ABSL_FLAG(int, mlp_embedding_dim, 24, "MLP E");
ABSL_FLAG(int, mlp_hidden_dim, 256, "MLP H");

namespace psrv {
namespace {

using nlohmann::json;

std::string ReadFirstLine(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);
  return line;
}

// The output of a shell command's first line, or "" if it fails.
std::string CommandLine(const std::string& command) {
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) return "";
  char buffer[256] = {};
  const bool got = fgets(buffer, sizeof(buffer), pipe) != nullptr;
  pclose(pipe);
  std::string line = got ? buffer : "";
  while (!line.empty() && (line.back() == '\n' || line.back() == '\r')) line.pop_back();
  return line;
}

std::string Env(const char* name) {
  const char* value = getenv(name);
  return value == nullptr ? "" : value;
}

// The q-th quantile (0..1) of `v` by linear interpolation.
double Quantile(std::vector<double> v, double q) {
  std::sort(v.begin(), v.end());
  const double pos = q * (v.size() - 1);
  const size_t lo = static_cast<size_t>(pos);
  const size_t hi = std::min(lo + 1, v.size() - 1);
  return v[lo] + (pos - lo) * (v[hi] - v[lo]);
}

// Times `warmup` + `iters` ForwardBackward steps on random rows (new rows every step, drawn
// before the clock starts) and summarises tokens/s and GFLOP/s.
json Measure(LanguageModel& model, const std::vector<float>& params, int batch,
             double flops_per_token) {
  const int iters = absl::GetFlag(FLAGS_iters), warmup = absl::GetFlag(FLAGS_warmup);
  std::mt19937_64 rng(1);
  std::vector<std::vector<int32_t>> rows(
      4, std::vector<int32_t>(static_cast<size_t>(batch) * model.window()));
  for (auto& r : rows) {
    for (int32_t& t : r) t = static_cast<int32_t>(rng() % model.vocab_size());
  }
  std::vector<float> grads(model.num_parameters());
  const double tokens = static_cast<double>(batch) * model.predictions_per_row();
  std::vector<double> seconds;
  float loss = 0.0f;
  for (int i = 0; i < warmup + iters; ++i) {
    const auto start = std::chrono::steady_clock::now();
    loss =
        model.ForwardBackward(params.data(), rows[i % rows.size()].data(), batch, i, grads.data());
    const auto end = std::chrono::steady_clock::now();
    if (i >= warmup) seconds.push_back(std::chrono::duration<double>(end - start).count());
  }
  std::vector<double> tokens_per_s;
  for (double s : seconds) tokens_per_s.push_back(tokens / s);
  const double median = Quantile(tokens_per_s, 0.5);
  return {{"tokens_per_step", tokens},
          {"step_ms_median", Quantile(seconds, 0.5) * 1e3},
          {"tokens_per_s",
           {{"median", median},
            {"p10", Quantile(tokens_per_s, 0.1)},
            {"p90", Quantile(tokens_per_s, 0.9)}}},
          {"gflops_per_s_median", median * flops_per_token / 1e9},
          {"flops_per_token", flops_per_token},
          {"last_loss", loss},
          {"samples_tokens_per_s", tokens_per_s}};
}

json BenchGpt() {
  GptConfig config;
  config.layers = absl::GetFlag(FLAGS_layers);
  config.heads = absl::GetFlag(FLAGS_heads);
  config.width = absl::GetFlag(FLAGS_width);
  config.context = absl::GetFlag(FLAGS_context);
  config.vocab = absl::GetFlag(FLAGS_vocab);
  config.dropout = static_cast<float>(absl::GetFlag(FLAGS_dropout));
  config.threads = absl::GetFlag(FLAGS_threads);
  absl::StatusOr<std::unique_ptr<GptModel>> model = GptModel::Create(config);
  if (!model.ok()) {
    fprintf(stderr, "%s\n", model.status().ToString().c_str());
    exit(2);
  }
  const std::vector<float> params = InitializeTables(GptTables(config, 1337));
  const double n = static_cast<double>((*model)->num_parameters());
  const double L = config.layers, C = config.width, T = config.context;
  const double flops_per_token = 6.0 * (n - T * C) + 12.0 * L * C * T;
  json result = Measure(**model, params, absl::GetFlag(FLAGS_batch), flops_per_token);
  result["config"] = {
      {"layers", config.layers},
      {"heads", config.heads},
      {"width", config.width},
      {"context", config.context},
      {"vocab", config.vocab},
      {"dropout", config.dropout},
      {"batch", absl::GetFlag(FLAGS_batch)},
      {"threads", config.threads > 0
                      ? config.threads
                      : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()))}};
  result["num_parameters"] = (*model)->num_parameters();
  result["flops_formula"] = "6*(N - T*C) + 12*L*C*T per token (fwd+bwd, full TxT attention)";
  return result;
}

json BenchMlp() {
  ModelSpec spec;
  spec.set_kind("mlp");
  spec.set_context(absl::GetFlag(FLAGS_mlp_context));
  spec.set_embedding_dim(absl::GetFlag(FLAGS_mlp_embedding_dim));
  spec.set_hidden_dim(absl::GetFlag(FLAGS_mlp_hidden_dim));
  const int vocab = absl::GetFlag(FLAGS_vocab);
  absl::StatusOr<MlpModel> model = MlpModel::Create(spec, vocab);
  if (!model.ok()) {
    fprintf(stderr, "%s\n", model.status().ToString().c_str());
    exit(2);
  }
  const std::vector<float> params = InitializeTables(MlpTables(spec, vocab, 1337));
  // As many predictions per step as the GPT's B*T.
  const int batch = absl::GetFlag(FLAGS_batch) * absl::GetFlag(FLAGS_context);
  const double k = spec.context(), E = spec.embedding_dim(), H = spec.hidden_dim();
  const double flops_per_token = 6.0 * (k * E * H + H * vocab);
  json result = Measure(*model, params, batch, flops_per_token);
  result["config"] = {{"context", spec.context()},
                      {"embedding_dim", spec.embedding_dim()},
                      {"hidden_dim", spec.hidden_dim()},
                      {"vocab", vocab},
                      {"batch", batch}};
  result["num_parameters"] = model->num_parameters();
  result["flops_formula"] = "6*(k*E*H + H*V) per token (fwd+bwd)";
  return result;
}

int Run() {
  json report;
  report["benchmark"] = "model_throughput";
  report["date_utc"] = absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", absl::Now(), absl::UTCTimeZone());
  report["machine"] = json(MachineInfo());
  report["commit"] =
      CommandLine("git rev-parse HEAD 2>/dev/null") +
      (CommandLine("git status --porcelain 2>/dev/null | head -1").empty() ? "" : "-dirty");
  report["environment"] = {
      {"OPENBLAS_CORETYPE", Env("OPENBLAS_CORETYPE")},
      {"OPENBLAS_NUM_THREADS", Env("OPENBLAS_NUM_THREADS")},
      {"set_by_reexec", Env("PSRV_OPENBLAS_SET")},
      {"openblas_core", openblas_get_corename()},
      {"openblas_config", openblas_get_config()},
      {"openblas_threads", openblas_get_num_threads()},
      {"note",
       "OpenBLAS 0.3.21 misdetects this VM's CPU and uses SSE3 kernels unless OPENBLAS_CORETYPE is "
       "set before it loads; with OPENBLAS_NUM_THREADS=1 the GPT splits its products over its own "
       "thread pool (steadier and ~10% faster here than OpenBLAS's threads)"}};
  report["iterations"] = {{"warmup", absl::GetFlag(FLAGS_warmup)},
                          {"timed", absl::GetFlag(FLAGS_iters)}};
  for (const absl::string_view name : absl::StrSplit(absl::GetFlag(FLAGS_models), ',')) {
    if (name == "gpt") {
      report["gpt"] = BenchGpt();
    } else if (name == "mlp") {
      report["mlp"] = BenchMlp();
    } else {
      fprintf(stderr, "unknown model \"%s\" in --models\n", std::string(name).c_str());
      return 2;
    }
    const json& r = report[std::string(name)];
    printf("%s: %.0f tokens/s median (p10 %.0f, p90 %.0f), %.1f GFLOP/s, %.2f ms/step\n",
           std::string(name).c_str(), r["tokens_per_s"]["median"].get<double>(),
           r["tokens_per_s"]["p10"].get<double>(), r["tokens_per_s"]["p90"].get<double>(),
           r["gflops_per_s_median"].get<double>(), r["step_ms_median"].get<double>());
  }
  report["machine"]["loadavg_at_end"] = ReadFirstLine("/proc/loadavg");

  std::string out = absl::GetFlag(FLAGS_out);
  const std::string workspace = Env("BUILD_WORKSPACE_DIRECTORY");
  if (!out.empty() && out[0] != '/' && !workspace.empty()) out = workspace + "/" + out;
  std::ofstream file(out);
  file << report.dump(2) << "\n";
  if (!file) {
    fprintf(stderr, "cannot write %s\n", out.c_str());
    return 1;
  }
  printf("wrote %s\n", out.c_str());
  return 0;
}

}  // namespace
}  // namespace psrv

int main(int argc, char** argv) {
  psrv::ConfigureOpenBlas(argv);
  absl::SetProgramUsageMessage(
      "Forward+backward tokens/s of the CPU language models.\n"
      "Usage: model_throughput [--out=PATH] [--models=gpt,mlp] [--iters=N]");
  absl::ParseCommandLine(argc, argv);
  return psrv::Run();
}
