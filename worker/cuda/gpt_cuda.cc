// The GPT on the GPU: forward and backward through layers.h and kernels.h in the order of the CPU
// GptModel (worker/model/gpt_model.cc), itself llm.c's gpt2_forward and gpt2_backward.
#include "worker/cuda/gpt_cuda.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "worker/cuda/cuda_status.h"
#include "worker/cuda/device.h"

namespace psrv {
namespace cuda {
namespace {

using gpt_dropout::AttentionStream;
using gpt_dropout::AttnProjStream;
using gpt_dropout::EmbedStream;
using gpt_dropout::MlpProjStream;

constexpr size_t kAlignment = 256;

// Bump allocator over one buffer; with a null base it only measures.
class Arena {
 public:
  explicit Arena(char* base) : base_(base) {}
  template <typename T>
  T* Take(size_t count) {
    offset_ = (offset_ + kAlignment - 1) / kAlignment * kAlignment;
    T* view = base_ != nullptr ? reinterpret_cast<T*>(base_ + offset_) : nullptr;
    offset_ += count * sizeof(T);
    return view;
  }
  size_t size() const { return offset_; }

 private:
  char* base_;
  size_t offset_ = 0;
};

FlashKernels FlashKernelsOf(const GptCudaConfig& config) {
  return config.flash_fp32 ? FlashKernels::kFp32 : FlashKernels::kTensorCores;
}

// The tensor-core flash attention works in place: q, k, v read where the qkv product writes them
// (the layer's qkvr), no heads split out or merged back, so no heads/dqkvr scratch.
bool AttentionInPlace(const GptCudaConfig& config) {
  return config.flash_attention && FlashKernelsOf(config) == FlashKernels::kTensorCores;
}

}  // namespace

absl::Status ValidateGptCudaConfig(const GptCudaConfig& config) {
  RETURN_IF_ERROR(ValidateGptConfig(config));
  if (config.flash_attention && !FlashAttentionSupports(config.width / config.heads)) {
    return absl::InvalidArgumentError(
        absl::StrCat("flash attention takes head sizes (width / heads) up to ", kFlashMaxHeadSize,
                     ", not ", config.width / config.heads));
  }
  if (config.device < 0 || config.device > 1023) {
    return absl::InvalidArgumentError(
        absl::StrCat("gpt device = ", config.device, ", want 0..1023"));
  }
  return absl::OkStatus();
}

std::vector<GptParamTable> GptCudaTables(const GptCudaConfig& config) {
  const size_t L = config.layers, C = config.width, T = config.context, V = config.vocab;
  constexpr float kStd = 0.02f;
  const float residual_std = kStd / std::sqrt(2.0f * config.layers);
  std::vector<GptParamTable> tables;
  size_t offset = 0;
  auto add = [&](const char* name, size_t size, GptParamTable::Init init, float stddev) {
    tables.push_back(GptParamTable{name, offset, size, init, stddev});
    offset += size;
  };
  // The order and shapes of GptTables (common/model_layout.cc).
  add("wte", V * C, GptParamTable::kNormal, kStd);
  add("wpe", T * C, GptParamTable::kNormal, kStd);
  add("h.ln1.weight", L * C, GptParamTable::kOnes, 0.0f);
  add("h.ln1.bias", L * C, GptParamTable::kZeros, 0.0f);
  add("h.attn.qkv.weight", L * 3 * C * C, GptParamTable::kNormal, kStd);
  add("h.attn.qkv.bias", L * 3 * C, GptParamTable::kZeros, 0.0f);
  add("h.attn.proj.weight", L * C * C, GptParamTable::kNormal, residual_std);
  add("h.attn.proj.bias", L * C, GptParamTable::kZeros, 0.0f);
  add("h.ln2.weight", L * C, GptParamTable::kOnes, 0.0f);
  add("h.ln2.bias", L * C, GptParamTable::kZeros, 0.0f);
  add("h.mlp.fc.weight", L * 4 * C * C, GptParamTable::kNormal, kStd);
  add("h.mlp.fc.bias", L * 4 * C, GptParamTable::kZeros, 0.0f);
  add("h.mlp.proj.weight", L * C * 4 * C, GptParamTable::kNormal, residual_std);
  add("h.mlp.proj.bias", L * C, GptParamTable::kZeros, 0.0f);
  add("lnf.weight", C, GptParamTable::kOnes, 0.0f);
  add("lnf.bias", C, GptParamTable::kZeros, 0.0f);
  return tables;
}

absl::StatusOr<std::unique_ptr<GptCuda>> GptCuda::Create(const GptCudaConfig& config) {
  return CreateStage(config, WholeGpt(config.layers), /*slots=*/1);
}

absl::StatusOr<std::unique_ptr<GptCuda>> GptCuda::CreateStage(const GptCudaConfig& config,
                                                              const GptPart& part, int slots) {
  RETURN_IF_ERROR(ValidateGptCudaConfig(config));
  if (part.layers < 1 || part.first_layer + part.layers > static_cast<size_t>(config.layers)) {
    return absl::InvalidArgumentError(absl::StrCat("a part of layers [", part.first_layer, ", ",
                                                   part.first_layer + part.layers, ") of a ",
                                                   config.layers, "-layer model"));
  }
  if (slots < 1 || slots > 4096) {
    return absl::InvalidArgumentError(
        absl::StrCat("micro-batches in flight must be in [1, 4096]; got ", slots));
  }
  std::unique_ptr<GptCuda> model(new GptCuda(config, part, slots));
  RETURN_IF_ERROR(model->Init());
  return model;
}

GptCuda::GptCuda(const GptCudaConfig& config, const GptPart& part, int slots)
    : config_(config),
      part_(part),
      num_parameters_(GptPartSize(part, config.width, config.context, config.vocab)),
      slots_(slots) {}

absl::Status GptCuda::CheckWhole(const char* call) const {
  if (part_.first_layer == 0 && part_.layers == static_cast<size_t>(config_.layers) &&
      part_.embeddings && part_.head) {
    return absl::OkStatus();
  }
  return absl::FailedPreconditionError(
      absl::StrCat(call, " needs the whole model; this is a pipeline stage's part"));
}

absl::Status GptCuda::Init() {
  CUDA_RETURN_IF_ERROR(cudaSetDevice(config_.device));
  CUDA_RETURN_IF_ERROR(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  BlasOptions options;
  options.use_cublaslt = config_.use_cublaslt;
  ASSIGN_OR_RETURN(blas_, Blas::Create(stream_, options));
  CUDA_RETURN_IF_ERROR(cudaStreamCreateWithFlags(&copy_stream_, cudaStreamNonBlocking));
  groups_ = GptPartParameterGroups(part_, config_.width, config_.context, config_.vocab);
  for (size_t g = 0; g < groups_.size(); ++g) {
    computed_.push_back(nullptr);
    copied_.push_back(nullptr);
    CUDA_RETURN_IF_ERROR(cudaEventCreateWithFlags(&computed_.back(), cudaEventDisableTiming));
    CUDA_RETURN_IF_ERROR(cudaEventCreateWithFlags(&copied_.back(), cudaEventDisableTiming));
  }
  RETURN_IF_ERROR(params_.Allocate(num_parameters_ * sizeof(float)));
  RETURN_IF_ERROR(params_bf16_.Allocate(num_parameters_ * sizeof(bf16)));
  RETURN_IF_ERROR(grads_.Allocate(num_parameters_ * sizeof(float)));
  // All-ones bytes are NaNs: a gradient some step forgot to write shows up in the tests.
  CUDA_RETURN_IF_ERROR(cudaMemset(grads_.as<void>(), 0xff, grads_.bytes()));
  CUDA_RETURN_IF_ERROR(cudaMemset(params_.as<void>(), 0, params_.bytes()));
  return absl::OkStatus();
}

GptCuda::~GptCuda() {
  // Buffers free themselves; the handles go before the stream they are bound to.
  if (stream_ != nullptr) cudaStreamSynchronize(stream_);
  if (copy_stream_ != nullptr) cudaStreamSynchronize(copy_stream_);
  if (graph_exec_ != nullptr) cudaGraphExecDestroy(graph_exec_);
  blas_.reset();
  for (cudaEvent_t event : computed_) cudaEventDestroy(event);
  for (cudaEvent_t event : copied_) cudaEventDestroy(event);
  for (const void* data : pinned_) cudaHostUnregister(const_cast<void*>(data));
  if (copy_stream_ != nullptr) cudaStreamDestroy(copy_stream_);
  if (stream_ != nullptr) cudaStreamDestroy(stream_);
}

void GptCuda::PinHostBuffer(const void* data, size_t bytes) {
  if (std::find(pinned_.begin(), pinned_.end(), data) != pinned_.end()) return;
  const cudaError_t error = cudaHostRegister(const_cast<void*>(data), bytes,
                                             cudaHostRegisterDefault);
  if (error == cudaSuccess) {
    pinned_.push_back(data);
    return;
  }
  cudaGetLastError();
  // Pageable then: the copies wait for the host (no overlap), the results are the same.
  std::fprintf(stderr, "psrv: cudaHostRegister(%zu bytes): %s; transfers will not overlap\n", bytes,
               cudaGetErrorString(error));
}

size_t GptCuda::device_bytes() const {
  return params_.bytes() + params_bf16_.bytes() + grads_.bytes() + grad_sum_.bytes() +
         acts_.bytes() + blas_->workspace_bytes();
}

size_t GptCuda::DeviceBytesAt(int batch, size_t* activation_bytes) const {
  std::vector<Activations> measured(slots_.size());
  const size_t activations = batch <= reserved_batch_ ? acts_.bytes()
                                                      : Carve(nullptr, batch, &measured);
  if (activation_bytes != nullptr) *activation_bytes = activations;
  return device_bytes() - acts_.bytes() + activations;
}

template <typename Float>
GptCuda::Tables<Float> GptCuda::View(Float* buffer) const {
  return GptPartLayout<Float*>(buffer, part_, config_.width, config_.context, config_.vocab);
}

size_t GptCuda::Carve(char* base, int batch, std::vector<Activations>* slots) const {
  const size_t B = batch, L = part_.layers, C = config_.width, T = config_.context,
               NH = config_.heads, V = config_.vocab;
  const bool flash = config_.flash_attention, head = part_.head;
  const size_t BT = B * T, att = flash ? 0 : B * NH * T * T, lse = flash ? B * NH * T : 0;
  Arena arena(base);
  for (size_t slot = 0; slot < slots->size(); ++slot) {
    Activations* a = &(*slots)[slot];
    // What a micro-batch keeps from its forward to its backward.
    a->staging = arena.Take<int32_t>(5 * BT + 1);
    if (a->staging != nullptr) {
      a->inputs = a->staging;
      a->targets = a->staging + BT;
      a->bucket_tokens = a->staging + 2 * BT;
      a->bucket_starts = a->staging + 3 * BT;
      a->bucket_positions = a->staging + 4 * BT + 1;
    }
    a->encoded = arena.Take<float>(BT * C);
    a->layers.resize(L);
    for (LayerActivations& l : a->layers) {
      l.ln1 = arena.Take<bf16>(BT * C);
      l.ln1_mean = arena.Take<float>(BT);
      l.ln1_rstd = arena.Take<float>(BT);
      l.qkvr = arena.Take<bf16>(3 * BT * C);
      l.att = flash ? nullptr : arena.Take<bf16>(att);
      l.lse = flash ? arena.Take<float>(lse) : nullptr;
      l.atty = arena.Take<bf16>(BT * C);
      l.residual2 = arena.Take<float>(BT * C);
      l.ln2 = arena.Take<bf16>(BT * C);
      l.ln2_mean = arena.Take<float>(BT);
      l.ln2_rstd = arena.Take<float>(BT);
      l.fch = arena.Take<bf16>(BT * 4 * C);
      l.fch_gelu = config_.recompute_gelu ? nullptr : arena.Take<bf16>(BT * 4 * C);
      l.residual3 = arena.Take<float>(BT * C);
    }
    a->lnf = head ? arena.Take<bf16>(BT * C) : nullptr;
    a->lnf_mean = head ? arena.Take<float>(BT) : nullptr;
    a->lnf_rstd = head ? arena.Take<float>(BT) : nullptr;
    a->dlogits = head ? arena.Take<bf16>(BT * V) : nullptr;
    a->losses = head ? arena.Take<float>(BT) : nullptr;
    if (slot > 0) {  // The scratch: slot 0's.
      const Activations& first = (*slots)[0];
      a->logits = first.logits;
      a->qkv = first.qkv;
      a->proj = first.proj;
      a->attention = first.attention;
      a->dresidual = first.dresidual;
      a->dbtc = first.dbtc;
      a->datty = first.datty;
      a->dfch = first.dfch;
      a->reduce = first.reduce;
      continue;
    }
    // One row: NextTokenLogits' (the training head's logits live in dlogits, bf16, in place).
    a->logits = head ? arena.Take<float>(V) : nullptr;
    a->qkv = arena.Take<bf16>(BT * 3 * C);
    a->proj = arena.Take<bf16>(BT * C);
    const bool in_place = AttentionInPlace(config_);
    a->attention.heads = in_place ? nullptr : arena.Take<bf16>(BT * C);
    a->attention.scores = flash ? nullptr : arena.Take<float>(att);
    a->attention.weights = flash ? nullptr : arena.Take<bf16>(att);
    a->attention.delta = flash ? arena.Take<float>(lse) : nullptr;
    a->attention.dqkvr = in_place ? nullptr : arena.Take<bf16>(3 * BT * C);
    a->dresidual = arena.Take<float>(BT * C);
    a->dbtc = arena.Take<bf16>(BT * C);
    a->datty = arena.Take<bf16>(BT * C);
    a->dfch = arena.Take<bf16>(BT * 4 * C);
    a->reduce = arena.Take<float>(
        std::max(LinearBackwardScratch(BT, 4 * C), LayerNormBackwardScratch(BT, C)));
    a->attention.reduce = a->reduce;  // qkv's bias gradient in the attention backward.
  }
  return arena.size();
}

size_t GptCuda::SlotBytes(int batch) const {
  std::vector<Activations> one(1), two(2);
  return Carve(nullptr, batch, &two) - Carve(nullptr, batch, &one);
}

absl::Status GptCuda::CheckActivationsFit(int batch, size_t bytes) const {
  const absl::StatusOr<DeviceMemory> memory = GetDeviceMemory();
  if (!memory.ok()) {
    (void)cudaGetLastError();  // Unknown: the allocation will tell.
    return absl::OkStatus();
  }
  const size_t total_bytes = memory->total_bytes;
  // The current ones are freed first.
  const size_t available = memory->free_bytes + acts_.bytes();
  if (bytes <= available) return absl::OkStatus();
  auto gb = [](size_t b) { return absl::StrFormat("%.2f GB", static_cast<double>(b) / 1e9); };
  return absl::ResourceExhaustedError(absl::StrCat(
      "the activations of a batch of ", batch, " x ", config_.context, " tokens need ", gb(bytes),
      " (", bytes, " bytes) on the GPU, which has ", gb(available), " free of ", gb(total_bytes),
      "; use a smaller training.batch_size with training.grad_accumulation_steps",
      config_.flash_attention ? "" : ", or --cuda_attention=flash (no T x T attention weights)",
      ", or split the layers over several workers (parallelism.pipeline)"));
}

absl::Status GptCuda::Reserve(int batch) {
  if (batch <= reserved_batch_) return absl::OkStatus();
  const size_t BT = static_cast<size_t>(batch) * config_.context;
  // Row counts are ints, and the column reductions launch one block row per 256 rows (at most
  // 65535 in a grid's y dimension).
  constexpr size_t kMaxTokens = size_t{65535} * 256;
  if (BT > kMaxTokens) {
    return absl::InvalidArgumentError(absl::StrCat("batch ", batch, " x context ", config_.context,
                                                   " = ", BT, " tokens, want at most ",
                                                   kMaxTokens));
  }
  std::vector<Activations> measured(slots_.size());
  const size_t bytes = Carve(nullptr, batch, &measured);
  RETURN_IF_ERROR(CheckActivationsFit(batch, bytes));
  reserved_batch_ = 0;
  acts_.Reset();
  RETURN_IF_ERROR(acts_.Allocate(bytes));
  for (Activations& a : slots_) a = Activations();
  Carve(acts_.as<char>(), batch, &slots_);
  RETURN_IF_ERROR(host_staging_.Allocate((5 * BT + 1) * sizeof(int32_t)));
  RETURN_IF_ERROR(host_losses_.Allocate(BT * sizeof(float)));
  reserved_batch_ = batch;
  return absl::OkStatus();
}

absl::Status GptCuda::Synchronize() {
  CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
  return absl::OkStatus();
}

absl::Status GptCuda::RunAsGraph(const std::function<absl::Status()>& enqueue) {
  CUDA_RETURN_IF_ERROR(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal));
  const absl::Status enqueued = enqueue();
  cudaGraph_t graph = nullptr;
  const cudaError_t ended = cudaStreamEndCapture(stream_, &graph);  // Always ends the capture.
  absl::Cleanup destroy = [graph] {
    if (graph != nullptr) cudaGraphDestroy(graph);
  };
  RETURN_IF_ERROR(enqueued);
  CUDA_RETURN_IF_ERROR(ended);
  if (graph_exec_ != nullptr) {
    // The same work with other arguments (seed, token buckets, batch) updates in place; other
    // work (another shape of graph) needs a new instance.
    cudaGraphExecUpdateResultInfo info;
    if (cudaGraphExecUpdate(graph_exec_, graph, &info) != cudaSuccess) {
      cudaGetLastError();  // The failed update's error is not a kernel's.
      cudaGraphExecDestroy(graph_exec_);
      graph_exec_ = nullptr;
    }
  }
  if (graph_exec_ == nullptr) {
    CUDA_RETURN_IF_ERROR(cudaGraphInstantiate(&graph_exec_, graph, 0));
    ++graph_instantiations_;
  }
  CUDA_RETURN_IF_ERROR(cudaGraphLaunch(graph_exec_, stream_));
  ++graph_launches_;
  return absl::OkStatus();
}

absl::Status GptCuda::UploadParams(const float* host_params) {
  CUDA_RETURN_IF_ERROR(cudaSetDevice(config_.device));
  params_converted_ = false;
  CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(params_.as<float>(), host_params,
                                       num_parameters_ * sizeof(float), cudaMemcpyHostToDevice,
                                       stream_));
  return Synchronize();
}

absl::Status GptCuda::DownloadGrads(float* host_grads) {
  CUDA_RETURN_IF_ERROR(cudaSetDevice(config_.device));
  CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(host_grads, grads_.as<float>(),
                                       num_parameters_ * sizeof(float), cudaMemcpyDeviceToHost,
                                       stream_));
  return Synchronize();
}

absl::Status GptCuda::AccumulateGrads(bool first) {
  CUDA_RETURN_IF_ERROR(cudaSetDevice(config_.device));
  if (grad_sum_.bytes() == 0) {
    RETURN_IF_ERROR(grad_sum_.Allocate(num_parameters_ * sizeof(float)));
  }
  if (first) {
    CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(grad_sum_.as<float>(), grads_.as<float>(),
                                         num_parameters_ * sizeof(float), cudaMemcpyDeviceToDevice,
                                         stream_));
  } else {
    CUDA_RETURN_IF_ERROR(
        AddFloats(grads_.as<float>(), num_parameters_, grad_sum_.as<float>(), stream_));
  }
  return absl::OkStatus();
}

absl::Status GptCuda::DownloadGradSum(float* host_grads, float scale) {
  if (grad_sum_.bytes() == 0) {
    return absl::FailedPreconditionError("DownloadGradSum before AccumulateGrads");
  }
  CUDA_RETURN_IF_ERROR(cudaSetDevice(config_.device));
  CUDA_RETURN_IF_ERROR(ScaleFloats(scale, num_parameters_, grad_sum_.as<float>(), stream_));
  CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(host_grads, grad_sum_.as<float>(),
                                       num_parameters_ * sizeof(float), cudaMemcpyDeviceToHost,
                                       stream_));
  return Synchronize();
}

absl::StatusOr<bool> GptCuda::LoadRows(Activations& a, const int32_t* rows, int batch,
                                       bool buckets) {
  const int T = config_.context, V = config_.vocab;
  const size_t BT = static_cast<size_t>(reserved_batch_) * T;  // the staging layout's BT
  int32_t* staging = host_staging_.as<int32_t>();
  int32_t* inputs = staging;
  int32_t* targets = staging + BT;
  bool valid = true;
  for (int b = 0; b < batch; ++b) {
    const int32_t* row = rows + static_cast<size_t>(b) * (T + 1);  // (T+1)
    bool row_valid = true;
    for (int j = 0; j <= T; ++j) row_valid &= row[j] >= 0 && row[j] < V;
    std::memcpy(inputs + static_cast<size_t>(b) * T, row, T * sizeof(int32_t));
    std::memcpy(targets + static_cast<size_t>(b) * T, row + 1, T * sizeof(int32_t));
    if (!row_valid) {  // Read as 0, so that the kernels stay in bounds; the caller reports NaN.
      for (int j = 0; j < T; ++j) {
        int32_t* input = inputs + static_cast<size_t>(b) * T + j;
        int32_t* target = targets + static_cast<size_t>(b) * T + j;
        if (*input < 0 || *input >= V) *input = 0;
        if (*target < 0 || *target >= V) *target = 0;
      }
      valid = false;
    }
  }
  size_t count = BT * 2;  // int32s to upload
  if (buckets) {
    const int n = batch * T;
    BuildTokenBuckets(inputs, n, V, &counts_, &buckets_);
    std::copy(buckets_.token_ids.begin(), buckets_.token_ids.end(), staging + 2 * BT);
    std::copy(buckets_.starts.begin(), buckets_.starts.end(), staging + 3 * BT);
    std::copy(buckets_.positions.begin(), buckets_.positions.end(), staging + 4 * BT + 1);
    count = 5 * BT + 1;
    a.num_buckets = buckets_.num_buckets();
  }
  CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(a.staging, staging, count * sizeof(int32_t),
                                       cudaMemcpyHostToDevice, stream_));
  return valid;
}

absl::Status GptCuda::ConvertParams() {
  CUDA_RETURN_IF_ERROR(
      ToBf16(params_.as<float>(), Dropout(), num_parameters_, params_bf16_.as<bf16>(), stream_));
  params_converted_ = true;
  return absl::OkStatus();
}

absl::Status GptCuda::Forward(Activations& a, int B, int t, bool training, uint64_t seed,
                             const GroupHook& before_group) {
  const int L = static_cast<int>(part_.layers), C = config_.width, NH = config_.heads;
  const int first_layer = static_cast<int>(part_.first_layer);
  const size_t BT = static_cast<size_t>(B) * t;
  const float rate = training ? config_.dropout : 0.0f;
  const Tables<const float> p = View<const float>(params_.as<float>());
  const Tables<const bf16> w = View<const bf16>(params_bf16_.as<bf16>());
  Blas& blas = *blas_;

  if (part_.embeddings) {
    if (before_group) RETURN_IF_ERROR(before_group(0));
    CUDA_RETURN_IF_ERROR(EmbeddingForward(a.inputs, p.wte, p.wpe, B, t, C,
                                          MakeDropout(seed, EmbedStream(), rate), a.encoded,
                                          stream_));
  }  // Else a.encoded holds the previous stage's output.
  // Without hooks every parameter is on the GPU already: each layer's MLP residual is fused with
  // the LayerNorm after it (the next layer's ln1, or ln_f), one kernel instead of two, bit for bit
  // the same. With hooks (the overlapped step) that LayerNorm waits for its own parameter group.
  const bool fuse_residual_with_next_norm = !before_group;
  bool ln1_done = false;  // the previous layer's fused residual computed this layer's ln1
  for (int l = 0; l < L; ++l) {
    const LayerActivations& la = a.layers[l];
    const size_t l3cc = static_cast<size_t>(l) * 3 * C * C, lcc = static_cast<size_t>(l) * C * C,
                 l4cc = static_cast<size_t>(l) * 4 * C * C;
    const int layer = first_layer + l;  // In the whole model: its dropout streams.
    const float* residual = l == 0 ? a.encoded : a.layers[l - 1].residual3;  // (B, T, C)
    if (before_group) RETURN_IF_ERROR(before_group(LayerGroup(l)));

    // Attention: residual2 = residual + dropout(proj(attention(ln1(residual)))).
    if (!ln1_done) {
      CUDA_RETURN_IF_ERROR(LayerNormForward(residual, p.ln1_weight + l * C, p.ln1_bias + l * C, BT,
                                            C, la.ln1, la.ln1_mean, la.ln1_rstd, stream_));
    }
    // In place, the product writes straight into what the layer keeps for the backward (qkvr).
    bf16* qkv = AttentionInPlace(config_) ? la.qkvr : a.qkv;  // (B, T, 3C)
    RETURN_IF_ERROR(LinearForward(blas, la.ln1, w.qkv_weight + l3cc, w.qkv_bias + l * 3 * C, BT, C,
                                  3 * C, qkv));
    const Dropout attention_dropout = MakeDropout(seed, AttentionStream(layer), rate);
    if (config_.flash_attention) {
      RETURN_IF_ERROR(AttentionForwardFlash(qkv, B, t, C, NH, attention_dropout, la.qkvr, la.lse,
                                            la.atty, a.attention, FlashKernelsOf(config_),
                                            stream_));
    } else {
      RETURN_IF_ERROR(AttentionForward(blas, a.qkv, B, t, C, NH, attention_dropout,
                                                 la.qkvr, la.att, la.atty, a.attention));
    }
    RETURN_IF_ERROR(
        LinearForward(blas, la.atty, w.proj_weight + lcc, w.proj_bias + l * C, BT, C, C, a.proj));
    // residual2 = residual + dropout(proj), and ln2(residual2) in the same launch.
    CUDA_RETURN_IF_ERROR(ResidualLayerNormForward(
        residual, a.proj, MakeDropout(seed, AttnProjStream(layer), rate), la.residual2,
        p.ln2_weight + l * C, p.ln2_bias + l * C, BT, C, la.ln2, la.ln2_mean, la.ln2_rstd,
        stream_));

    // MLP: residual3 = residual2 + dropout(proj(gelu(fc(ln2(residual2))))).
    // gelu(fch): kept for the backward, or in the backward's dfch scratch when recomputed there.
    bf16* fch_gelu = la.fch_gelu != nullptr ? la.fch_gelu : a.dfch;
    if (config_.gelu_epilogue) {
      RETURN_IF_ERROR(LinearGeluForward(blas, la.ln2, w.fc_weight + l4cc, w.fc_bias + l * 4 * C,
                                        BT, C, 4 * C, la.fch, fch_gelu));
    } else {
      RETURN_IF_ERROR(LinearForward(blas, la.ln2, w.fc_weight + l4cc, w.fc_bias + l * 4 * C, BT, C,
                                    4 * C, la.fch));
      CUDA_RETURN_IF_ERROR(GeluForward(la.fch, BT * 4 * C, fch_gelu, stream_));
    }
    RETURN_IF_ERROR(LinearForward(blas, fch_gelu, w.mlp_proj_weight + l4cc,
                                  w.mlp_proj_bias + l * C, BT, 4 * C, C, a.proj));
    const Dropout mlp_dropout = MakeDropout(seed, MlpProjStream(layer), rate);
    const bool last = l + 1 == L;
    ln1_done = fuse_residual_with_next_norm && (!last || part_.head);
    if (ln1_done) {
      // ... and the next LayerNorm of residual3 in the same launch.
      const LayerActivations* next = last ? nullptr : &a.layers[l + 1];
      CUDA_RETURN_IF_ERROR(ResidualLayerNormForward(
          la.residual2, a.proj, mlp_dropout, la.residual3,
          last ? p.lnf_weight : p.ln1_weight + (l + 1) * C,
          last ? p.lnf_bias : p.ln1_bias + (l + 1) * C, BT, C, last ? a.lnf : next->ln1,
          last ? a.lnf_mean : next->ln1_mean, last ? a.lnf_rstd : next->ln1_rstd, stream_));
    } else {
      CUDA_RETURN_IF_ERROR(
          ResidualForward(la.residual2, a.proj, mlp_dropout, BT * C, la.residual3, stream_));
    }
  }
  if (!part_.head) return absl::OkStatus();
  if (ln1_done) return absl::OkStatus();  // ln_f fused into the last layer's residual
  if (before_group) RETURN_IF_ERROR(before_group(HeadGroup()));
  CUDA_RETURN_IF_ERROR(LayerNormForward(a.layers[L - 1].residual3, p.lnf_weight, p.lnf_bias, BT, C,
                                        a.lnf, a.lnf_mean, a.lnf_rstd, stream_));
  return absl::OkStatus();
}

absl::Status GptCuda::HeadLoss(Activations& a, int B, bool backward) {
  const int T = config_.context, C = config_.width, V = config_.vocab;
  const int BT = B * T;
  const Tables<const bf16> w = View<const bf16>(params_bf16_.as<bf16>());
  // logits (B, T, V) = lnf (B, T, C) @ wte^T (the output head shares the token embedding), in
  // bf16 in the slot's dlogits buffer; the fused classifier writes their gradient over them.
  RETURN_IF_ERROR(
      blas_->Gemm(RowMajorABt(BT, V, C, a.lnf, w.wte, a.dlogits, GemmType::kBf16)));
  CUDA_RETURN_IF_ERROR(
      FusedClassifier(a.dlogits, a.targets, BT, V, 1.0f / BT, a.losses, backward, stream_));
  CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(host_losses_.as<float>(), a.losses, BT * sizeof(float),
                                       cudaMemcpyDeviceToHost, stream_));
  return absl::OkStatus();
}

float GptCuda::MeanLoss(int B) const {
  // The mean in double, in order, as the CPU model takes it.
  const int BT = B * config_.context;
  const float* losses = host_losses_.as<float>();
  double total = 0.0;
  for (int r = 0; r < BT; ++r) total += losses[r];
  return static_cast<float>(total / BT);
}

absl::Status GptCuda::Backward(Activations& a, int B, uint64_t seed,
                              const GroupHook& after_group) {
  const int T = config_.context, L = static_cast<int>(part_.layers), C = config_.width,
            NH = config_.heads, V = config_.vocab;
  const int first_layer = static_cast<int>(part_.first_layer);
  const size_t BT = static_cast<size_t>(B) * T;
  const float rate = config_.dropout;
  const Tables<const float> p = View<const float>(params_.as<float>());
  const Tables<const bf16> w = View<const bf16>(params_bf16_.as<bf16>());
  const Tables<float> g = View<float>(grads_.as<float>());
  Blas& blas = *blas_;

  float* dresidual = a.dresidual;  // (B, T, C)
  if (part_.head) {
    // Head: through logits = lnf @ wte^T. dwte is overwritten here; the embedding backward adds
    // to it at the end.
    bf16* dlnf = a.dbtc;  // (B, T, C)
    RETURN_IF_ERROR(LinearBackward(blas, a.dlogits, a.lnf, w.wte, BT, C, V, dlnf, g.wte,
                                   /*dbias=*/nullptr, a.reduce));
    CUDA_RETURN_IF_ERROR(cudaMemsetAsync(dresidual, 0, BT * C * sizeof(float), stream_));
    CUDA_RETURN_IF_ERROR(LayerNormBackward(dlnf, a.layers[L - 1].residual3, p.lnf_weight,
                                           a.lnf_mean, a.lnf_rstd, BT, C, dresidual, g.lnf_weight,
                                           g.lnf_bias, a.reduce, stream_));
    if (after_group) RETURN_IF_ERROR(after_group(HeadGroup()));
  }  // Else dresidual holds d(loss)/d(the part's output), from the next stage.

  // dresidual holds d(loss)/d(layer l's output) on entry to each iteration and d(its input) after.
  for (int l = L - 1; l >= 0; --l) {
    const LayerActivations& la = a.layers[l];
    const size_t l3cc = static_cast<size_t>(l) * 3 * C * C, lcc = static_cast<size_t>(l) * C * C,
                 l4cc = static_cast<size_t>(l) * 4 * C * C;
    const int layer = first_layer + l;  // In the whole model: its dropout streams.
    const float* residual = l == 0 ? a.encoded : a.layers[l - 1].residual3;  // (B, T, C)
    bf16* dproj = a.proj;                                                     // (B, T, C)

    // MLP. Each bias gradient is summed by the kernel that makes its product's output gradient
    // (the bf16 conversion through the dropout mask, GELU's backward, the attention's merge of q's,
    // k's and v's heads), so LinearBackward skips it.
    CUDA_RETURN_IF_ERROR(ToBf16Bias(dresidual, MakeDropout(seed, MlpProjStream(layer), rate), BT,
                                    C, dproj, g.mlp_proj_bias + l * C, a.reduce, stream_));
    // gelu(fch), when not kept, recomputed (the forward's bits) into dfch, which the product's
    // input gradient then overwrites (LinearBackward allows it).
    const bf16* fch_gelu = la.fch_gelu;
    if (fch_gelu == nullptr) {
      CUDA_RETURN_IF_ERROR(GeluForward(la.fch, BT * 4 * C, a.dfch, stream_));
      fch_gelu = a.dfch;
    }
    RETURN_IF_ERROR(LinearBackward(blas, dproj, fch_gelu, w.mlp_proj_weight + l4cc, BT, 4 * C, C,
                                   a.dfch, g.mlp_proj_weight + l4cc, /*dbias=*/nullptr,
                                   a.reduce));
    CUDA_RETURN_IF_ERROR(GeluBackwardBias(a.dfch, la.fch, BT, 4 * C, a.dfch, g.fc_bias + l * 4 * C,
                                          a.reduce, stream_));
    bf16* dln2 = a.dbtc;  // (B, T, C)
    RETURN_IF_ERROR(LinearBackward(blas, a.dfch, la.ln2, w.fc_weight + l4cc, BT, C, 4 * C, dln2,
                                   g.fc_weight + l4cc, /*dbias=*/nullptr, a.reduce));
    CUDA_RETURN_IF_ERROR(LayerNormBackward(dln2, la.residual2, p.ln2_weight + l * C, la.ln2_mean,
                                           la.ln2_rstd, BT, C, dresidual, g.ln2_weight + l * C,
                                           g.ln2_bias + l * C, a.reduce, stream_));

    // Attention.
    CUDA_RETURN_IF_ERROR(ToBf16Bias(dresidual, MakeDropout(seed, AttnProjStream(layer), rate), BT,
                                    C, dproj, g.proj_bias + l * C, a.reduce, stream_));
    RETURN_IF_ERROR(LinearBackward(blas, dproj, la.atty, w.proj_weight + lcc, BT, C, C, a.datty,
                                   g.proj_weight + lcc, /*dbias=*/nullptr, a.reduce));
    bf16* dqkv = a.qkv;  // (B, T, 3C)
    const Dropout attention_dropout = MakeDropout(seed, AttentionStream(layer), rate);
    if (config_.flash_attention) {
      RETURN_IF_ERROR(AttentionBackwardFlash(a.datty, la.qkvr, la.atty, la.lse, B, T, C, NH,
                                             attention_dropout, dqkv, g.qkv_bias + l * 3 * C,
                                             a.attention, FlashKernelsOf(config_), stream_));
    } else {
      RETURN_IF_ERROR(AttentionBackward(blas, a.datty, la.qkvr, la.att, B, T, C, NH,
                                        attention_dropout, dqkv, g.qkv_bias + l * 3 * C,
                                        a.attention));
    }
    bf16* dln1 = a.dbtc;  // (B, T, C)
    RETURN_IF_ERROR(LinearBackward(blas, dqkv, la.ln1, w.qkv_weight + l3cc, BT, C, 3 * C, dln1,
                                   g.qkv_weight + l3cc, /*dbias=*/nullptr, a.reduce));
    CUDA_RETURN_IF_ERROR(LayerNormBackward(dln1, residual, p.ln1_weight + l * C, la.ln1_mean,
                                           la.ln1_rstd, BT, C, dresidual, g.ln1_weight + l * C,
                                           g.ln1_bias + l * C, a.reduce, stream_));
    if (after_group) RETURN_IF_ERROR(after_group(LayerGroup(l)));
  }

  if (!part_.embeddings) return absl::OkStatus();  // dresidual: d(loss)/d(the part's input).
  // Embeddings: encoded = dropout(wte[inputs] + wpe). Without the head, wte's gradient is the
  // embedding's alone.
  if (!part_.head) {
    CUDA_RETURN_IF_ERROR(
        cudaMemsetAsync(g.wte, 0, static_cast<size_t>(V) * C * sizeof(float), stream_));
  }
  const Dropout embed = MakeDropout(seed, EmbedStream(), rate);
  CUDA_RETURN_IF_ERROR(EmbeddingBackwardWte(dresidual, embed, a.bucket_tokens, a.bucket_starts,
                                            a.bucket_positions, a.num_buckets, C, g.wte,
                                            stream_));
  CUDA_RETURN_IF_ERROR(EmbeddingBackwardWpe(dresidual, embed, B, T, C, g.wpe, stream_));
  if (after_group) RETURN_IF_ERROR(after_group(0));
  return absl::OkStatus();
}

absl::StatusOr<float> GptCuda::ForwardBackward(const int32_t* rows, int batch, uint64_t seed) {
  RETURN_IF_ERROR(CheckWhole("ForwardBackward"));
  if (batch < 1) return absl::InvalidArgumentError(absl::StrCat("batch = ", batch));
  CUDA_RETURN_IF_ERROR(cudaSetDevice(config_.device));
  RETURN_IF_ERROR(Reserve(batch));
  Activations& a = slots_[0];
  ASSIGN_OR_RETURN(const bool valid, LoadRows(a, rows, batch, /*buckets=*/true));
  if (!valid) {
    CUDA_RETURN_IF_ERROR(cudaMemsetAsync(grads_.as<void>(), 0, grads_.bytes(), stream_));
    RETURN_IF_ERROR(Synchronize());
    return std::numeric_limits<float>::quiet_NaN();
  }
  auto enqueue = [&]() -> absl::Status {
    RETURN_IF_ERROR(ConvertParams());
    RETURN_IF_ERROR(Forward(a, batch, config_.context, /*training=*/true, seed));
    RETURN_IF_ERROR(HeadLoss(a, batch, /*backward=*/true));
    return Backward(a, batch, seed);
  };
  RETURN_IF_ERROR(config_.cuda_graph ? RunAsGraph(enqueue) : enqueue());
  RETURN_IF_ERROR(Synchronize());
  return MeanLoss(batch);
}

absl::StatusOr<float> GptCuda::ForwardBackwardStreamed(const float* host_params,
                                                       const int32_t* rows, int batch,
                                                       uint64_t seed, float* host_grads,
                                                       ParameterStream* stream) {
  RETURN_IF_ERROR(CheckWhole("ForwardBackwardStreamed"));
  if (batch < 1) return absl::InvalidArgumentError(absl::StrCat("batch = ", batch));
  CUDA_RETURN_IF_ERROR(cudaSetDevice(config_.device));
  RETURN_IF_ERROR(Reserve(batch));
  PinHostBuffer(host_params, num_parameters_ * sizeof(float));
  PinHostBuffer(host_grads, num_parameters_ * sizeof(float));
  Activations& a = slots_[0];
  ASSIGN_OR_RETURN(const bool valid, LoadRows(a, rows, batch, /*buckets=*/true));
  if (!valid) {  // NaN, zero gradients, nothing handed over: the step fails.
    std::fill(host_grads, host_grads + num_parameters_, 0.0f);
    return std::numeric_limits<float>::quiet_NaN();
  }
  params_converted_ = false;  // Each group converts itself below.
  // On every way out, no copy into host_grads is still running.
  absl::Cleanup wait_for_copies = [this] { cudaStreamSynchronize(copy_stream_); };
  float* params = params_.as<float>();
  bf16* params_bf16 = params_bf16_.as<bf16>();
  float* grads = grads_.as<float>();
  // Forward: each group uploaded (and converted) just before the work that reads it.
  auto upload = [&](int group) -> absl::Status {
    for (const FlatRange& range : groups_[group]) {
      stream->AwaitParameters(range);
      CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(params + range.offset, host_params + range.offset,
                                           range.count * sizeof(float), cudaMemcpyHostToDevice,
                                           stream_));
      CUDA_RETURN_IF_ERROR(ToBf16(params + range.offset, Dropout(), range.count,
                                  params_bf16 + range.offset, stream_));
    }
    return absl::OkStatus();
  };
  // Backward: each group's gradients copied down on copy_stream_ once the compute stream has
  // finished them; the compute stream goes on meanwhile.
  auto download = [&](int group) -> absl::Status {
    CUDA_RETURN_IF_ERROR(cudaEventRecord(computed_[group], stream_));
    CUDA_RETURN_IF_ERROR(cudaStreamWaitEvent(copy_stream_, computed_[group], 0));
    for (const FlatRange& range : groups_[group]) {
      CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(host_grads + range.offset, grads + range.offset,
                                           range.count * sizeof(float), cudaMemcpyDeviceToHost,
                                           copy_stream_));
    }
    CUDA_RETURN_IF_ERROR(cudaEventRecord(copied_[group], copy_stream_));
    return absl::OkStatus();
  };
  RETURN_IF_ERROR(Forward(a, batch, config_.context, /*training=*/true, seed, upload));
  RETURN_IF_ERROR(HeadLoss(a, batch, /*backward=*/true));
  RETURN_IF_ERROR(Backward(a, batch, seed, download));
  // Everything is enqueued: hand each group over as its copy lands, in the order backward
  // finishes them (the final LayerNorm first, the embeddings last).
  for (int group = static_cast<int>(groups_.size()) - 1; group >= 0; --group) {
    CUDA_RETURN_IF_ERROR(cudaEventSynchronize(copied_[group]));
    for (const FlatRange& range : groups_[group]) stream->GradientsReady(range);
  }
  RETURN_IF_ERROR(Synchronize());
  return MeanLoss(batch);
}

absl::StatusOr<float> GptCuda::Loss(const int32_t* rows, int batch) {
  RETURN_IF_ERROR(CheckWhole("Loss"));
  if (batch < 1) return absl::InvalidArgumentError(absl::StrCat("batch = ", batch));
  CUDA_RETURN_IF_ERROR(cudaSetDevice(config_.device));
  RETURN_IF_ERROR(Reserve(batch));
  Activations& a = slots_[0];
  ASSIGN_OR_RETURN(const bool valid, LoadRows(a, rows, batch, /*buckets=*/false));
  if (!valid) return std::numeric_limits<float>::quiet_NaN();
  RETURN_IF_ERROR(ConvertParams());
  RETURN_IF_ERROR(Forward(a, batch, config_.context, /*training=*/false, /*seed=*/0));
  RETURN_IF_ERROR(HeadLoss(a, batch, /*backward=*/false));
  RETURN_IF_ERROR(Synchronize());
  return MeanLoss(batch);
}

absl::Status GptCuda::NextTokenLogits(const int32_t* tokens, int length, float* logits) {
  RETURN_IF_ERROR(CheckWhole("NextTokenLogits"));
  CUDA_RETURN_IF_ERROR(cudaSetDevice(config_.device));
  RETURN_IF_ERROR(Reserve(1));
  Activations& a = slots_[0];
  const int32_t start_token = 0;
  if (length < 1) {  // Outside the contract; read as the single token 0, as the CPU model does.
    tokens = &start_token;
    length = 1;
  }
  const int t = std::min(length, config_.context), C = config_.width, V = config_.vocab;
  int32_t* inputs = host_staging_.as<int32_t>();
  for (int i = 0; i < t; ++i) inputs[i] = std::clamp<int32_t>(tokens[length - t + i], 0, V - 1);
  CUDA_RETURN_IF_ERROR(
      cudaMemcpyAsync(a.inputs, inputs, t * sizeof(int32_t), cudaMemcpyHostToDevice, stream_));
  RETURN_IF_ERROR(ConvertParams());
  RETURN_IF_ERROR(Forward(a, /*B=*/1, t, /*training=*/false, /*seed=*/0));
  // Only the last position's logits (V) = lnf[t-1] (C) @ wte^T.
  const Tables<const bf16> w = View<const bf16>(params_bf16_.as<bf16>());
  RETURN_IF_ERROR(blas_->Gemm(RowMajorABt(
      1, V, C, a.lnf + static_cast<size_t>(t - 1) * C, w.wte, a.logits, GemmType::kF32)));
  CUDA_RETURN_IF_ERROR(
      cudaMemcpyAsync(logits, a.logits, V * sizeof(float), cudaMemcpyDeviceToHost, stream_));
  return Synchronize();
}

absl::StatusOr<float> GptCuda::StageForward(int slot, const int32_t* rows, const float* input,
                                            int batch, uint64_t seed, float* output,
                                            bool training) {
  if (slot < 0 || slot >= slots()) {
    return absl::InvalidArgumentError(absl::StrCat("slot ", slot, " of ", slots()));
  }
  if (batch < 1) return absl::InvalidArgumentError(absl::StrCat("batch = ", batch));
  CUDA_RETURN_IF_ERROR(cudaSetDevice(config_.device));
  if (batch > reserved_batch_) {
    for (int s = 0; s < slots(); ++s) {
      if (slots_[s].live && s != slot) {
        return absl::FailedPreconditionError(absl::StrCat(
            "a batch of ", batch, " rows while slot ", s, " holds one of ", slots_[s].batch));
      }
    }
    RETURN_IF_ERROR(Reserve(batch));
  }
  Activations& a = slots_[slot];
  a.live = false;
  const int T = config_.context, C = config_.width;
  const size_t BTC = static_cast<size_t>(batch) * T * C;
  bool valid = true;
  if (part_.embeddings || part_.head) {
    ASSIGN_OR_RETURN(valid, LoadRows(a, rows, batch, /*buckets=*/part_.embeddings && training));
  }
  if (!part_.embeddings) {
    CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(a.encoded, input, BTC * sizeof(float),
                                         cudaMemcpyHostToDevice, stream_));
  }
  if (!params_converted_) RETURN_IF_ERROR(ConvertParams());
  RETURN_IF_ERROR(Forward(a, batch, T, training, seed));
  float loss = 0.0f;
  if (part_.head) {
    RETURN_IF_ERROR(HeadLoss(a, batch, /*backward=*/training));
    RETURN_IF_ERROR(Synchronize());
    loss = MeanLoss(batch);
  } else {
    const float* out = a.layers[part_.layers - 1].residual3;
    CUDA_RETURN_IF_ERROR(
        cudaMemcpyAsync(output, out, BTC * sizeof(float), cudaMemcpyDeviceToHost, stream_));
    RETURN_IF_ERROR(Synchronize());
  }
  a.batch = batch;
  a.seed = seed;
  a.live = training;
  return valid ? loss : std::numeric_limits<float>::quiet_NaN();
}

absl::Status GptCuda::StageBackward(int slot, const float* doutput, float* dinput) {
  if (slot < 0 || slot >= slots()) {
    return absl::InvalidArgumentError(absl::StrCat("slot ", slot, " of ", slots()));
  }
  Activations& a = slots_[slot];
  if (!a.live) {
    return absl::FailedPreconditionError(
        absl::StrCat("slot ", slot, " holds no training forward to run backwards"));
  }
  CUDA_RETURN_IF_ERROR(cudaSetDevice(config_.device));
  const size_t BTC = static_cast<size_t>(a.batch) * config_.context * config_.width;
  if (!part_.head) {
    CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(a.dresidual, doutput, BTC * sizeof(float),
                                         cudaMemcpyHostToDevice, stream_));
  }
  RETURN_IF_ERROR(Backward(a, a.batch, a.seed));
  if (!part_.embeddings) {
    CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(dinput, a.dresidual, BTC * sizeof(float),
                                         cudaMemcpyDeviceToHost, stream_));
  }
  RETURN_IF_ERROR(Synchronize());
  a.live = false;
  return absl::OkStatus();
}

}  // namespace cuda
}  // namespace psrv
