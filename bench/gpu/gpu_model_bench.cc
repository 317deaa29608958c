// Training throughput of the CUDA GPT (worker/cuda/gpt_cuda.h) on one GPU: forward + backward
// ms/iter, tokens/s, MFU and peak memory for nanoGPT's shakespeare-char model and the GPT-2 124M
// shape, written as JSON in the schema torch_baseline.py also writes (see README.md).
//
// Two timings per config:
//   "device": parameters already on the GPU, as PyTorch keeps them (the number compared with it);
//   "with_host_transfer": the worker's path through LanguageModel: fp32 parameters uploaded from
//     pinned host memory, forward + backward, fp32 gradients copied back.
//   "with_host_transfer_streamed": the overlapped worker's path (ForwardBackwardStreamed): the
//     same copies per layer, overlapped with compute (issue 16's target: within 10% of "device").
// FLOPs per token = 6 N + 6 L C T (N: all parameters, the tied wte once; the second term is the
// causal half of attention's two T x T products); MFU = tokens/s * FLOPs per token / 989e12
// (H100 SXM dense bf16).
//
// Self-contained: no gRPC or protobuf, flags parsed here, so that the binary needs only the CUDA
// libraries on the GPU machine. Usage:
//   gpu_model_bench [--configs=shakespeare_char,gpt2_124m] [--iters=20] [--warmup=5]
//                   [--gpt2_batch=16] [--shakespeare_batch=64] [--use_cublaslt=1]
//                   [--attention=materialized,flash,flash_fp32] [--recompute_gelu=1]
//                   [--gelu_epilogue=0] [--cuda_graph=0]
//                   [--commit=SHA] [--out=gpu_model.json]
// --attention: which attention paths to run each config with (GptCudaConfig::flash_attention:
// flash on tensor cores, flash_fp32 the fp32 CUDA-core kernels); every result names its
// "attention".
// --recompute_gelu=0 keeps the MLP's GELU output for the backward instead of recomputing it there
// (GptCudaConfig::recompute_gelu; the rows say which).
// --gelu_epilogue=1 runs the MLP's fc product and its GELU as one cuBLASLt product
// (GptCudaConfig::gelu_epilogue; the rows say which).
// --cuda_graph=1 runs each step as one CUDA graph (GptCudaConfig::cuda_graph; the rows say which).
// --memory_plan=1 runs no step: per config and attention path, the model's device memory at the
// config's batch as "memory_plan" rows (exact: the simulator gives a GPU's figure).
// --attention_shapes=BxNHxTxHS,... (default GPT-2 small's attention at T 1024 and 256 and
// shakespeare_char's; "none" skips): the attention layer alone, forward + backward without dropout,
// per path, as "attention_micro" rows (the row torch_baseline.py's SDPA rows are compared with).
#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "worker/cuda/blas.h"
#include "worker/cuda/device.h"
#include "worker/cuda/device_buffer.h"
#include "worker/cuda/gpt_cuda.h"
#include "worker/cuda/layers.h"

namespace psrv {
namespace cuda {
namespace {

using nlohmann::ordered_json;

constexpr double kPeakFlops = 989e12;  // H100 SXM, dense bf16

struct BenchConfig {
  std::string name;
  GptCudaConfig model;
  int batch;
  int token_vocab;  // token ids drawn from [0, token_vocab) (GPT-2: 50257 of the padded 50304)
};

// --key=value flags; a bare --key is "1".
class Flags {
 public:
  Flags(int argc, char** argv) {
    for (int i = 1; i < argc; ++i) {
      std::string arg = argv[i];
      if (arg.rfind("--", 0) != 0) {
        std::fprintf(stderr, "unexpected argument %s\n", arg.c_str());
        std::exit(2);
      }
      arg = arg.substr(2);
      const size_t eq = arg.find('=');
      values_[arg.substr(0, eq)] = eq == std::string::npos ? "1" : arg.substr(eq + 1);
    }
  }
  std::string Get(const std::string& key, const std::string& default_value) {
    used_.push_back(key);
    auto it = values_.find(key);
    return it == values_.end() ? default_value : it->second;
  }
  int GetInt(const std::string& key, int default_value) {
    return std::stoi(Get(key, std::to_string(default_value)));
  }
  // Exits on a flag nobody asked for (a typo).
  void CheckAllUsed() const {
    for (const auto& [key, value] : values_) {
      if (std::find(used_.begin(), used_.end(), key) == used_.end()) {
        std::fprintf(stderr, "unknown flag --%s\n", key.c_str());
        std::exit(2);
      }
    }
  }

 private:
  std::map<std::string, std::string> values_;
  std::vector<std::string> used_;
};

std::vector<std::string> Split(const std::string& text) {
  std::vector<std::string> parts;
  size_t start = 0;
  while (start <= text.size()) {
    const size_t comma = text.find(',', start);
    const std::string part = text.substr(start, comma == std::string::npos ? comma : comma - start);
    if (!part.empty()) parts.push_back(part);
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return parts;
}

std::string NowUtc() {
  const std::time_t now = std::time(nullptr);
  char text[32];
  std::strftime(text, sizeof(text), "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&now));
  return text;
}

std::string Hostname() {
  char host[256] = {0};
  gethostname(host, sizeof(host) - 1);
  return host;
}

struct Timing {
  std::vector<double> ms;
  double median() const {
    std::vector<double> sorted = ms;
    std::sort(sorted.begin(), sorted.end());
    const size_t n = sorted.size();
    return n == 0 ? 0.0 : (n % 2 ? sorted[n / 2] : 0.5 * (sorted[n / 2 - 1] + sorted[n / 2]));
  }
  double mean() const {
    double sum = 0.0;
    for (double m : ms) sum += m;
    return ms.empty() ? 0.0 : sum / ms.size();
  }
  double min() const { return ms.empty() ? 0.0 : *std::min_element(ms.begin(), ms.end()); }
};

ordered_json TimingJson(const Timing& t, double tokens_per_iter, double flops_per_token) {
  ordered_json j;
  const double median = t.median();
  j["ms_per_iter_median"] = median;
  j["ms_per_iter_mean"] = t.mean();
  j["ms_per_iter_min"] = t.min();
  j["tokens_per_s"] = tokens_per_iter / (median / 1e3);
  j["mfu"] = tokens_per_iter / (median / 1e3) * flops_per_token / kPeakFlops;
  j["samples_ms"] = t.ms;
  return j;
}

double NowMs() {
  return std::chrono::duration<double, std::milli>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// Exits the process with the config's name and the error (a benchmark has nothing to recover).
[[noreturn]] void Die(const BenchConfig& bench, const absl::Status& status) {
  std::fprintf(stderr, "%s: %s\n", bench.name.c_str(), std::string(status.message()).c_str());
  std::exit(1);
}

// The config's attention path as the --attention flag names it.
const char* AttentionName(const GptCudaConfig& c) {
  return !c.flash_attention ? "materialized" : (c.flash_fp32 ? "flash_fp32" : "flash");
}

// Runs one config; exits the process on a CUDA error.
ordered_json RunConfig(const BenchConfig& bench, int warmup, int iters) {
  auto die = [&](const absl::Status& status) { Die(bench, status); };
  cudaFree(nullptr);  // create the context before the memory baseline
  absl::StatusOr<DeviceMemory> before = GetDeviceMemory();
  if (!before.ok()) die(before.status());

  absl::StatusOr<std::unique_ptr<GptCuda>> created = GptCuda::Create(bench.model);
  if (!created.ok()) die(created.status());
  GptCuda& gpt = **created;
  const GptCudaConfig& c = bench.model;
  const size_t n = gpt.num_parameters();
  const int B = bench.batch, T = c.context;

  // Parameters as the servers initialise them (normal / ones / zeros per table), in pinned memory
  // as a worker with a pinned parameter buffer would hold them.
  PinnedBuffer params, grads;
  if (absl::Status s = params.Allocate(n * sizeof(float)); !s.ok()) die(s);
  if (absl::Status s = grads.Allocate(n * sizeof(float)); !s.ok()) die(s);
  std::mt19937_64 rng(1234);
  for (const GptParamTable& table : GptCudaTables(c)) {
    float* p = params.as<float>() + table.offset;
    std::normal_distribution<float> normal(0.0f, table.stddev > 0.0f ? table.stddev : 1.0f);
    for (size_t i = 0; i < table.size; ++i) {
      p[i] = table.init == GptParamTable::kNormal
                 ? normal(rng)
                 : (table.init == GptParamTable::kOnes ? 1.0f : 0.0f);
    }
  }
  if (absl::Status s = gpt.UploadParams(params.as<float>()); !s.ok()) die(s);
  std::vector<int32_t> rows(static_cast<size_t>(B) * (T + 1));
  for (int32_t& t : rows) t = static_cast<int32_t>(rng() % bench.token_vocab);

  size_t peak_used = 0;
  auto sample_memory = [&] {
    absl::StatusOr<DeviceMemory> now = GetDeviceMemory();
    if (now.ok()) peak_used = std::max(peak_used, now->total_bytes - now->free_bytes);
  };
  const size_t planned_bytes = gpt.DeviceBytesAt(B);
  auto step = [&](uint64_t seed) {
    absl::StatusOr<float> loss = gpt.ForwardBackward(rows.data(), B, seed);
    if (!loss.ok()) die(loss.status());
    return *loss;
  };

  std::printf("%s: %zu parameters, batch %d x %d tokens, %d warm-up + %d timed steps\n",
              bench.name.c_str(), n, B, T, warmup, iters);
  const float loss_first = step(0);
  sample_memory();
  for (int i = 1; i < warmup; ++i) step(i);
  Timing device, host;
  float loss_last = loss_first;
  float device_loss_1000 = 0.0f;
  for (int i = 0; i < iters; ++i) {
    const double t0 = NowMs();
    loss_last = step(1000 + i);
    device.ms.push_back(NowMs() - t0);
    if (i == 0) device_loss_1000 = loss_last;
  }
  sample_memory();
  for (int i = 0; i < iters; ++i) {
    const double t0 = NowMs();
    if (absl::Status s = gpt.UploadParams(params.as<float>()); !s.ok()) die(s);
    step(2000 + i);
    if (absl::Status s = gpt.DownloadGrads(grads.as<float>()); !s.ok()) die(s);
    host.ms.push_back(NowMs() - t0);
  }
  // The overlapped worker's path (GptCuda::ForwardBackwardStreamed): each layer's parameters
  // uploaded just before forward reads them and its gradients copied back while backward goes on,
  // from page-aligned host buffers the model pins itself, as the worker's StepPipeline hands it;
  // every parameter is there at once (no network), so this is the copies' cost alone.
  struct AllParametersHere : ParameterStream {
    void AwaitParameters(const FlatRange&) override {}
    void GradientsReady(const FlatRange&) override {}
  } all_here;
  const size_t page_bytes = (n * sizeof(float) + 4095) / 4096 * 4096;
  std::unique_ptr<float, decltype(&std::free)> stream_params(
      static_cast<float*>(std::aligned_alloc(4096, page_bytes)), &std::free);
  std::unique_ptr<float, decltype(&std::free)> stream_grads(
      static_cast<float*>(std::aligned_alloc(4096, page_bytes)), &std::free);
  if (stream_params == nullptr || stream_grads == nullptr) die(absl::ResourceExhaustedError("host"));
  std::memcpy(stream_params.get(), params.as<float>(), n * sizeof(float));
  auto streamed_step = [&](uint64_t seed) {
    absl::StatusOr<float> loss = gpt.ForwardBackwardStreamed(stream_params.get(), rows.data(), B,
                                                             seed, stream_grads.get(), &all_here);
    if (!loss.ok()) die(loss.status());
    return *loss;
  };
  const float streamed_loss = streamed_step(1000);  // pins the buffers; the device step's seed
  Timing streamed;
  for (int i = 0; i < iters; ++i) {
    const double t0 = NowMs();
    streamed_step(3000 + i);
    streamed.ms.push_back(NowMs() - t0);
  }

  const double tokens_per_iter = static_cast<double>(B) * T;
  const double flops_per_token =
      6.0 * n + 6.0 * c.layers * static_cast<double>(c.width) * c.context;
  ordered_json r;
  r["config"] = bench.name;
  r["attention"] = AttentionName(c);
  r["recompute_gelu"] = c.recompute_gelu;
  r["gelu_epilogue"] = c.gelu_epilogue;
  r["cuda_graph"] = c.cuda_graph;
  r["layers"] = c.layers;
  r["heads"] = c.heads;
  r["width"] = c.width;
  r["context"] = c.context;
  r["vocab"] = c.vocab;
  r["batch"] = B;
  r["dropout"] = c.dropout;
  r["num_parameters"] = n;
  r["tokens_per_iter"] = tokens_per_iter;
  r["flops_per_token"] = flops_per_token;
  r["warmup"] = warmup;
  r["iters"] = iters;
  const ordered_json device_json = TimingJson(device, tokens_per_iter, flops_per_token);
  for (const auto& [key, value] : device_json.items()) r[key] = value;
  // Memory: what the model allocated (exact), and the device's used memory growth
  // (cudaMemGetInfo, includes the CUDA context's and cuBLAS's own allocations).
  r["peak_memory_bytes"] = gpt.device_bytes();
  r["peak_memory_bytes_planned"] = planned_bytes;  // DeviceBytesAt before the first step
  r["device_memory_used_bytes"] = peak_used - (before->total_bytes - before->free_bytes);
  r["device_memory_total_bytes"] = before->total_bytes;
  r["loss_first"] = loss_first;
  r["loss_last"] = loss_last;
  r["with_host_transfer"] = TimingJson(host, tokens_per_iter, flops_per_token);
  r["with_host_transfer_streamed"] = TimingJson(streamed, tokens_per_iter, flops_per_token);
  // The same step as the first timed device step (same seed and parameters): equal bit for bit.
  r["streamed_loss_equals_device"] = streamed_loss == device_loss_1000;
  r["cublaslt_calls"] = gpt.blas().lt_calls();
  r["gemm_ex_calls"] = gpt.blas().gemm_ex_calls();
  std::printf(
      "%s: %.2f ms/iter, %.0f tokens/s, MFU %.1f%%, model memory %.2f GiB, "
      "with host transfer %.2f ms/iter (streamed per layer %.2f); loss %.4f -> %.4f\n",
      bench.name.c_str(), device.median(), r["tokens_per_s"].get<double>(),
      100.0 * r["mfu"].get<double>(), gpt.device_bytes() / 1073741824.0, host.median(),
      streamed.median(), loss_first, loss_last);
  return r;
}

// --memory_plan: the model's device memory at the config's batch (GptCuda::DeviceBytesAt: the
// bytes a step allocates, computed without allocating the activations or running a step), so
// that the simulator gives the figure a GPU run reports as peak_memory_bytes.
ordered_json PlanMemory(const BenchConfig& bench) {
  absl::StatusOr<std::unique_ptr<GptCuda>> created = GptCuda::Create(bench.model);
  if (!created.ok()) Die(bench, created.status());
  const GptCudaConfig& c = bench.model;
  size_t activations = 0;
  const size_t total = (*created)->DeviceBytesAt(bench.batch, &activations);
  ordered_json r;
  r["config"] = bench.name;
  r["attention"] = AttentionName(c);
  r["recompute_gelu"] = c.recompute_gelu;
  r["batch"] = bench.batch;
  r["context"] = c.context;
  r["num_parameters"] = (*created)->num_parameters();
  r["peak_memory_bytes"] = total;
  r["activation_bytes"] = activations;
  r["other_bytes"] = total - activations;  // parameters (fp32 + bf16), gradients, cuBLAS workspace
  std::printf("%s %s%s, batch %d: %.2f GB (activations %.2f GB)\n", bench.name.c_str(),
              AttentionName(c),
              c.recompute_gelu ? "" : ", GELU output kept", bench.batch, total / 1e9,
              activations / 1e9);
  return r;
}

struct AttentionShape {
  int B, NH, T, hs;
};

// "16x12x1024x64,..." into shapes; exits on a malformed entry.
std::vector<AttentionShape> ParseAttentionShapes(const std::string& text) {
  std::vector<AttentionShape> shapes;
  if (text == "none") return shapes;
  for (const std::string& part : Split(text)) {
    AttentionShape s{};
    char tail = 0;
    if (std::sscanf(part.c_str(), "%dx%dx%dx%d%c", &s.B, &s.NH, &s.T, &s.hs, &tail) != 4 ||
        s.B < 1 || s.NH < 1 || s.T < 1 || s.hs < 1) {
      std::fprintf(stderr, "bad --attention_shapes entry %s (want BxNHxTxHS)\n", part.c_str());
      std::exit(2);
    }
    shapes.push_back(s);
  }
  return shapes;
}

// The attention layer alone (layers.h), forward + backward, no dropout: one path, one shape.
ordered_json RunAttention(const AttentionShape& s, const std::string& attention, int warmup,
                          int iters) {
  auto die = [&](const absl::Status& status) {
    std::fprintf(stderr, "attention %s: %s\n", attention.c_str(),
                 std::string(status.message()).c_str());
    std::exit(1);
  };
  const int C = s.NH * s.hs;
  const size_t BT = static_cast<size_t>(s.B) * s.T, square = BT * s.NH * s.T;
  const bool flash = attention != "materialized";
  const FlashKernels kernels =
      attention == "flash_fp32" ? FlashKernels::kFp32 : FlashKernels::kTensorCores;
  absl::StatusOr<std::unique_ptr<Blas>> blas = Blas::Create(/*stream=*/0, BlasOptions{});
  if (!blas.ok()) die(blas.status());
  DeviceBuffer qkv, qkvr, out, dout, dqkv, heads, dqkvr, att, scores, weights, lse, delta;
  for (auto [buffer, bytes] : std::vector<std::pair<DeviceBuffer*, size_t>>{
           {&qkv, 3 * BT * C * sizeof(bf16)},
           {&qkvr, 3 * BT * C * sizeof(bf16)},
           {&out, BT * C * sizeof(bf16)},
           {&dout, BT * C * sizeof(bf16)},
           {&dqkv, 3 * BT * C * sizeof(bf16)},
           {&heads, BT * C * sizeof(bf16)},
           {&dqkvr, 3 * BT * C * sizeof(bf16)},
           {&att, flash ? 0 : square * sizeof(bf16)},
           {&scores, flash ? 0 : square * sizeof(float)},
           {&weights, flash ? 0 : square * sizeof(bf16)},
           {&lse, BT * s.NH * sizeof(float)},
           {&delta, BT * s.NH * sizeof(float)}}) {
    if (absl::Status status = buffer->Allocate(bytes); !status.ok()) die(status);
  }
  std::mt19937_64 rng(7);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (DeviceBuffer* buffer : {&qkv, &dout}) {
    std::vector<bf16> host(buffer->bytes() / sizeof(bf16));
    for (bf16& x : host) x = __float2bfloat16_rn(normal(rng));
    if (cudaMemcpy(buffer->as<bf16>(), host.data(), buffer->bytes(), cudaMemcpyHostToDevice) !=
        cudaSuccess) {
      die(absl::InternalError("cudaMemcpy of the inputs failed"));
    }
  }
  const AttentionScratch scratch{heads.as<bf16>(), scores.as<float>(), weights.as<bf16>(),
                                 dqkvr.as<bf16>(), delta.as<float>()};
  const Dropout none{};
  Blas& b = **blas;
  // What the forward keeps for the backward: the tensor-core kernels work on qkv in place, as the
  // model runs them (no copy); the others split the heads out into qkvr.
  bf16* saved = flash && kernels == FlashKernels::kTensorCores ? qkv.as<bf16>() : qkvr.as<bf16>();
  Timing forward, both;
  for (int i = 0; i < warmup + iters; ++i) {
    const double t0 = NowMs();
    absl::Status status =
        flash ? AttentionForwardFlash(qkv.as<bf16>(), s.B, s.T, C, s.NH, none, saved,
                                      lse.as<float>(), out.as<bf16>(), scratch, kernels, 0)
              : AttentionForward(b, qkv.as<bf16>(), s.B, s.T, C, s.NH, none, qkvr.as<bf16>(),
                                 att.as<bf16>(), out.as<bf16>(), scratch);
    if (!status.ok()) die(status);
    cudaDeviceSynchronize();
    const double t1 = NowMs();
    status = flash ? AttentionBackwardFlash(dout.as<bf16>(), saved, out.as<bf16>(),
                                            lse.as<float>(), s.B, s.T, C, s.NH, none,
                                            dqkv.as<bf16>(), /*dbias=*/nullptr, scratch,
                                            kernels, 0)
                   : AttentionBackward(b, dout.as<bf16>(), qkvr.as<bf16>(), att.as<bf16>(), s.B,
                                       s.T, C, s.NH, none, dqkv.as<bf16>(), /*dbias=*/nullptr,
                                       scratch);
    if (!status.ok()) die(status);
    if (cudaDeviceSynchronize() != cudaSuccess) die(absl::InternalError("attention failed"));
    if (i >= warmup) {
      forward.ms.push_back(t1 - t0);
      both.ms.push_back(NowMs() - t0);
    }
  }
  // FlashAttention-2's count: the forward's two T x T products, 4 B NH T^2 hs FLOPs halved by
  // the causal mask, and the backward 2.5 times the forward.
  const double flops = 3.5 * 2.0 * s.B * s.NH * static_cast<double>(s.T) * s.T * s.hs;
  ordered_json r;
  r["batch"] = s.B;
  r["heads"] = s.NH;
  r["context"] = s.T;
  r["head_size"] = s.hs;
  r["attention"] = attention;
  r["ms_forward_median"] = forward.median();
  r["ms_forward_backward_median"] = both.median();
  r["tflops_per_s"] = flops / (both.median() / 1e3) / 1e12;
  r["samples_ms"] = both.ms;
  std::printf("attention %dx%dx%dx%d %s: forward %.3f ms, forward + backward %.3f ms\n", s.B,
              s.NH, s.T, s.hs, attention.c_str(), forward.median(), both.median());
  return r;
}

int Main(int argc, char** argv) {
  Flags flags(argc, argv);
  const std::vector<std::string> names = Split(flags.Get("configs", "shakespeare_char,gpt2_124m"));
  const int iters = flags.GetInt("iters", 20);
  const int warmup = std::max(1, flags.GetInt("warmup", 5));
  const int gpt2_batch = flags.GetInt("gpt2_batch", 16);
  const int shakespeare_batch = flags.GetInt("shakespeare_batch", 64);
  const bool use_cublaslt = flags.GetInt("use_cublaslt", 1) != 0;
  const bool recompute_gelu = flags.GetInt("recompute_gelu", 1) != 0;
  const bool gelu_epilogue = flags.GetInt("gelu_epilogue", 0) != 0;
  const bool cuda_graph = flags.GetInt("cuda_graph", 0) != 0;
  const bool memory_plan = flags.GetInt("memory_plan", 0) != 0;
  const std::vector<std::string> attentions =
      Split(flags.Get("attention", "materialized,flash,flash_fp32"));
  for (const std::string& a : attentions) {
    if (a != "materialized" && a != "flash" && a != "flash_fp32") {
      std::fprintf(stderr, "unknown --attention %s (known: materialized, flash, flash_fp32)\n",
                   a.c_str());
      return 2;
    }
  }
  std::vector<AttentionShape> attention_shapes =
      ParseAttentionShapes(flags.Get("attention_shapes", "16x12x1024x64,16x12x256x64,64x6x256x64"));
  const std::string commit = flags.Get("commit", "unknown");
  const std::string out = flags.Get("out", "gpu_model.json");
  flags.CheckAllUsed();

  std::string why_none;
  absl::StatusOr<int> count = CudaDeviceCount(&why_none);
  if (!count.ok() || *count == 0) {
    std::fprintf(stderr, "no CUDA GPU: %s\n",
                 count.ok() ? why_none.c_str() : std::string(count.status().message()).c_str());
    return 1;
  }
  if (absl::Status supported = CheckDeviceSupported(0); !supported.ok()) {
    std::fprintf(stderr, "%s\n", std::string(supported.message()).c_str());
    return 1;
  }
  absl::StatusOr<std::string> device = DeviceName(0);

  std::map<std::string, BenchConfig> known;
  {
    // nanoGPT config/train_shakespeare_char.py.
    BenchConfig b{"shakespeare_char", {}, shakespeare_batch, 65};
    b.model.layers = 6, b.model.heads = 6, b.model.width = 384, b.model.context = 256;
    b.model.vocab = 65, b.model.dropout = 0.2f;
    known[b.name] = b;
  }
  {
    // Small enough for the CPU SIMT simulator: checks that the benchmark runs
    // (//bench/gpu:gpu_model_bench_simt_test); its timings mean nothing.
    BenchConfig b{"tiny", {}, 2, 65};
    b.model.layers = 2, b.model.heads = 2, b.model.width = 64, b.model.context = 64;
    b.model.vocab = 65, b.model.dropout = 0.2f;
    known[b.name] = b;
  }
  {
    // GPT-2 small with nanoGPT's padded vocabulary.
    BenchConfig b{"gpt2_124m", {}, gpt2_batch, 50257};
    b.model.layers = 12, b.model.heads = 12, b.model.width = 768, b.model.context = 1024;
    b.model.vocab = 50304, b.model.dropout = 0.0f;
    known[b.name] = b;
  }

  ordered_json report;
  report["benchmark"] = "gpu_model";
  report["implementation"] = "psrv_cuda";
  report["device"] = device.ok() ? *device : "unknown";
  report["date_utc"] = NowUtc();
  report["commit"] = commit;
  report["hostname"] = Hostname();
  report["precision"] =
      "bf16 products and activations, fp32 accumulation, residual stream, "
      "LayerNorm/softmax statistics, master parameters and gradients";
  report["use_cublaslt"] = use_cublaslt;
  report["peak_tflops_bf16"] = kPeakFlops / 1e12;
  report["flops_formula"] = "6*N + 6*L*C*T per token (N all parameters, tied wte once)";
  int driver = 0, runtime = 0;
  cudaDriverGetVersion(&driver);
  cudaRuntimeGetVersion(&runtime);
  report["cuda_driver_version"] = driver;
  report["cuda_runtime_version"] = runtime;
  report[memory_plan ? "memory_plan" : "results"] = ordered_json::array();
  for (const std::string& name : names) {
    auto it = known.find(name);
    if (it == known.end()) {
      std::fprintf(stderr, "unknown config %s (known: shakespeare_char, gpt2_124m, tiny)\n",
                   name.c_str());
      return 2;
    }
    for (const std::string& attention : attentions) {
      BenchConfig bench = it->second;
      bench.model.use_cublaslt = use_cublaslt;
      bench.model.recompute_gelu = recompute_gelu;
      bench.model.gelu_epilogue = gelu_epilogue;
      bench.model.cuda_graph = cuda_graph;
      bench.model.flash_attention = attention != "materialized";
      bench.model.flash_fp32 = attention == "flash_fp32";
      report[memory_plan ? "memory_plan" : "results"].push_back(
          memory_plan ? PlanMemory(bench) : RunConfig(bench, warmup, iters));
    }
  }
  report["attention_micro"] = ordered_json::array();
  if (memory_plan) attention_shapes.clear();
  for (const AttentionShape& shape : attention_shapes) {
    for (const std::string& attention : attentions) {
      report["attention_micro"].push_back(RunAttention(shape, attention, warmup, iters));
    }
  }
  std::ofstream file(out);
  file << report.dump(2) << "\n";
  if (!file) {
    std::fprintf(stderr, "cannot write %s\n", out.c_str());
    return 1;
  }
  std::printf("wrote %s\n", out.c_str());
  return 0;
}

}  // namespace
}  // namespace cuda
}  // namespace psrv

int main(int argc, char** argv) { return psrv::cuda::Main(argc, argv); }
