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
#include "worker/cuda/cuda_status.h"

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
  RETURN_IF_ERROR(ValidateGptCudaConfig(config));
  std::unique_ptr<GptCuda> model(new GptCuda(config));
  RETURN_IF_ERROR(model->Init());
  return model;
}

GptCuda::GptCuda(const GptCudaConfig& config) : config_(config) {
  const std::vector<GptParamTable> tables = GptCudaTables(config);
  num_parameters_ = tables.back().offset + tables.back().size;
}

absl::Status GptCuda::Init() {
  CUDA_RETURN_IF_ERROR(cudaSetDevice(config_.device));
  CUDA_RETURN_IF_ERROR(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  BlasOptions options;
  options.use_cublaslt = config_.use_cublaslt;
  ASSIGN_OR_RETURN(blas_, Blas::Create(stream_, options));
  CUDA_RETURN_IF_ERROR(cudaStreamCreateWithFlags(&copy_stream_, cudaStreamNonBlocking));
  groups_ = GptParameterGroups(config_.layers, config_.width, config_.context, config_.vocab);
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

template <typename Float>
GptCuda::Tables<Float> GptCuda::View(Float* buffer) const {
  return GptViews(buffer, config_.layers, config_.width, config_.context, config_.vocab);
}

size_t GptCuda::Carve(char* base, int batch, Activations* a) const {
  const size_t B = batch, L = config_.layers, C = config_.width, T = config_.context,
               NH = config_.heads, V = config_.vocab;
  const bool flash = config_.flash_attention;
  const size_t BT = B * T, att = flash ? 0 : B * NH * T * T, lse = flash ? B * NH * T : 0;
  Arena arena(base);
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
    l.fch_gelu = arena.Take<bf16>(BT * 4 * C);
    l.residual3 = arena.Take<float>(BT * C);
  }
  a->lnf = arena.Take<bf16>(BT * C);
  a->lnf_mean = arena.Take<float>(BT);
  a->lnf_rstd = arena.Take<float>(BT);
  a->logits = arena.Take<float>(BT * V);
  a->dlogits = arena.Take<bf16>(BT * V);
  a->losses = arena.Take<float>(BT);
  a->qkv = arena.Take<bf16>(BT * 3 * C);
  a->proj = arena.Take<bf16>(BT * C);
  a->attention.heads = arena.Take<bf16>(BT * C);
  a->attention.scores = flash ? nullptr : arena.Take<float>(att);
  a->attention.weights = flash ? nullptr : arena.Take<bf16>(att);
  a->attention.delta = flash ? arena.Take<float>(lse) : nullptr;
  a->attention.dqkvr = arena.Take<bf16>(3 * BT * C);
  a->dresidual = arena.Take<float>(BT * C);
  a->dbtc = arena.Take<bf16>(BT * C);
  a->datty = arena.Take<bf16>(BT * C);
  a->dfch = arena.Take<bf16>(BT * 4 * C);
  a->reduce = arena.Take<float>(
      std::max(LinearBackwardScratch(BT, 4 * C), LayerNormBackwardScratch(BT, C)));
  return arena.size();
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
  reserved_batch_ = 0;
  acts_.Reset();
  Activations measured;
  const size_t bytes = Carve(nullptr, batch, &measured);
  RETURN_IF_ERROR(acts_.Allocate(bytes));
  Carve(acts_.as<char>(), batch, &a_);
  RETURN_IF_ERROR(host_staging_.Allocate((5 * BT + 1) * sizeof(int32_t)));
  RETURN_IF_ERROR(host_losses_.Allocate(BT * sizeof(float)));
  reserved_batch_ = batch;
  return absl::OkStatus();
}

absl::Status GptCuda::Synchronize() {
  CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
  return absl::OkStatus();
}

absl::Status GptCuda::UploadParams(const float* host_params) {
  CUDA_RETURN_IF_ERROR(cudaSetDevice(config_.device));
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

absl::StatusOr<bool> GptCuda::LoadRows(const int32_t* rows, int batch, bool buckets) {
  const int T = config_.context, V = config_.vocab;
  const size_t BT = static_cast<size_t>(reserved_batch_) * T;  // the staging layout's BT
  int32_t* staging = host_staging_.as<int32_t>();
  int32_t* inputs = staging;
  int32_t* targets = staging + BT;
  bool valid = true;
  for (int b = 0; b < batch; ++b) {
    const int32_t* row = rows + static_cast<size_t>(b) * (T + 1);  // (T+1)
    for (int j = 0; j <= T; ++j) valid &= row[j] >= 0 && row[j] < V;
    std::memcpy(inputs + static_cast<size_t>(b) * T, row, T * sizeof(int32_t));
    std::memcpy(targets + static_cast<size_t>(b) * T, row + 1, T * sizeof(int32_t));
  }
  if (!valid) return false;
  size_t count = BT * 2;  // int32s to upload
  if (buckets) {
    const int n = batch * T;
    BuildTokenBuckets(inputs, n, V, &counts_, &buckets_);
    std::copy(buckets_.token_ids.begin(), buckets_.token_ids.end(), staging + 2 * BT);
    std::copy(buckets_.starts.begin(), buckets_.starts.end(), staging + 3 * BT);
    std::copy(buckets_.positions.begin(), buckets_.positions.end(), staging + 4 * BT + 1);
    count = 5 * BT + 1;
  }
  CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(a_.staging, staging, count * sizeof(int32_t),
                                       cudaMemcpyHostToDevice, stream_));
  return true;
}

absl::Status GptCuda::ConvertParams() {
  CUDA_RETURN_IF_ERROR(
      ToBf16(params_.as<float>(), Dropout(), num_parameters_, params_bf16_.as<bf16>(), stream_));
  return absl::OkStatus();
}

absl::Status GptCuda::Forward(int B, int t, bool training, uint64_t seed,
                             const GroupHook& before_group) {
  const int L = config_.layers, C = config_.width, NH = config_.heads;
  const size_t BT = static_cast<size_t>(B) * t;
  const float rate = training ? config_.dropout : 0.0f;
  const Tables<const float> p = View<const float>(params_.as<float>());
  const Tables<const bf16> w = View<const bf16>(params_bf16_.as<bf16>());
  Blas& blas = *blas_;

  if (before_group) RETURN_IF_ERROR(before_group(0));
  CUDA_RETURN_IF_ERROR(EmbeddingForward(a_.inputs, p.wte, p.wpe, B, t, C,
                                        MakeDropout(seed, EmbedStream(), rate), a_.encoded,
                                        stream_));
  for (int l = 0; l < L; ++l) {
    const LayerActivations& la = a_.layers[l];
    const size_t l3cc = static_cast<size_t>(l) * 3 * C * C, lcc = static_cast<size_t>(l) * C * C,
                 l4cc = static_cast<size_t>(l) * 4 * C * C;
    const float* residual = l == 0 ? a_.encoded : a_.layers[l - 1].residual3;  // (B, T, C)
    if (before_group) RETURN_IF_ERROR(before_group(1 + l));

    // Attention: residual2 = residual + dropout(proj(attention(ln1(residual)))).
    CUDA_RETURN_IF_ERROR(LayerNormForward(residual, p.ln1_weight + l * C, p.ln1_bias + l * C, BT, C,
                                          la.ln1, la.ln1_mean, la.ln1_rstd, stream_));
    RETURN_IF_ERROR(LinearForward(blas, la.ln1, w.qkv_weight + l3cc,
                                            w.qkv_bias + l * 3 * C, BT, C, 3 * C, a_.qkv));
    const Dropout attention_dropout = MakeDropout(seed, AttentionStream(l), rate);
    if (config_.flash_attention) {
      RETURN_IF_ERROR(AttentionForwardFlash(a_.qkv, B, t, C, NH, attention_dropout,
                                                      la.qkvr, la.lse, la.atty, a_.attention,
                                                      stream_));
    } else {
      RETURN_IF_ERROR(AttentionForward(blas, a_.qkv, B, t, C, NH, attention_dropout,
                                                 la.qkvr, la.att, la.atty, a_.attention));
    }
    RETURN_IF_ERROR(
        LinearForward(blas, la.atty, w.proj_weight + lcc, w.proj_bias + l * C, BT, C, C, a_.proj));
    CUDA_RETURN_IF_ERROR(ResidualForward(residual, a_.proj,
                                         MakeDropout(seed, AttnProjStream(l), rate), BT * C,
                                         la.residual2, stream_));

    // MLP: residual3 = residual2 + dropout(proj(gelu(fc(ln2(residual2))))).
    CUDA_RETURN_IF_ERROR(LayerNormForward(la.residual2, p.ln2_weight + l * C, p.ln2_bias + l * C,
                                          BT, C, la.ln2, la.ln2_mean, la.ln2_rstd, stream_));
    RETURN_IF_ERROR(LinearForward(blas, la.ln2, w.fc_weight + l4cc, w.fc_bias + l * 4 * C,
                                            BT, C, 4 * C, la.fch));
    CUDA_RETURN_IF_ERROR(GeluForward(la.fch, BT * 4 * C, la.fch_gelu, stream_));
    RETURN_IF_ERROR(LinearForward(blas, la.fch_gelu, w.mlp_proj_weight + l4cc,
                                            w.mlp_proj_bias + l * C, BT, 4 * C, C, a_.proj));
    CUDA_RETURN_IF_ERROR(ResidualForward(la.residual2, a_.proj,
                                         MakeDropout(seed, MlpProjStream(l), rate), BT * C,
                                         la.residual3, stream_));
  }
  if (before_group) RETURN_IF_ERROR(before_group(L + 1));
  CUDA_RETURN_IF_ERROR(LayerNormForward(a_.layers[L - 1].residual3, p.lnf_weight, p.lnf_bias, BT, C,
                                        a_.lnf, a_.lnf_mean, a_.lnf_rstd, stream_));
  return absl::OkStatus();
}

absl::Status GptCuda::HeadLoss(int B, bool backward) {
  const int T = config_.context, C = config_.width, V = config_.vocab;
  const int BT = B * T;
  const Tables<const bf16> w = View<const bf16>(params_bf16_.as<bf16>());
  // logits (B, T, V) = lnf (B, T, C) @ wte^T: the output head shares the token embedding.
  RETURN_IF_ERROR(
      blas_->Gemm(RowMajorABt(BT, V, C, a_.lnf, w.wte, a_.logits, GemmType::kF32)));
  CUDA_RETURN_IF_ERROR(SoftmaxCrossEntropy(a_.logits, a_.targets, BT, V, 1.0f / BT, a_.losses,
                                           backward ? a_.dlogits : nullptr, stream_));
  CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(host_losses_.as<float>(), a_.losses, BT * sizeof(float),
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

absl::Status GptCuda::Backward(int B, uint64_t seed, const GroupHook& after_group) {
  const int T = config_.context, L = config_.layers, C = config_.width, NH = config_.heads,
            V = config_.vocab;
  const size_t BT = static_cast<size_t>(B) * T;
  const float rate = config_.dropout;
  const Tables<const float> p = View<const float>(params_.as<float>());
  const Tables<const bf16> w = View<const bf16>(params_bf16_.as<bf16>());
  const Tables<float> g = View<float>(grads_.as<float>());
  Blas& blas = *blas_;

  // Head: through logits = lnf @ wte^T. dwte is overwritten here; the embedding backward adds to
  // it at the end.
  bf16* dlnf = a_.dbtc;  // (B, T, C)
  RETURN_IF_ERROR(LinearBackward(blas, a_.dlogits, a_.lnf, w.wte, BT, C, V, dlnf, g.wte,
                                           /*dbias=*/nullptr, a_.reduce));
  float* dresidual = a_.dresidual;  // (B, T, C)
  CUDA_RETURN_IF_ERROR(cudaMemsetAsync(dresidual, 0, BT * C * sizeof(float), stream_));
  CUDA_RETURN_IF_ERROR(LayerNormBackward(dlnf, a_.layers[L - 1].residual3, p.lnf_weight,
                                         a_.lnf_mean, a_.lnf_rstd, BT, C, dresidual, g.lnf_weight,
                                         g.lnf_bias, a_.reduce, stream_));
  if (after_group) RETURN_IF_ERROR(after_group(L + 1));

  // dresidual holds d(loss)/d(layer l's output) on entry to each iteration and d(its input) after.
  for (int l = L - 1; l >= 0; --l) {
    const LayerActivations& la = a_.layers[l];
    const size_t l3cc = static_cast<size_t>(l) * 3 * C * C, lcc = static_cast<size_t>(l) * C * C,
                 l4cc = static_cast<size_t>(l) * 4 * C * C;
    const float* residual = l == 0 ? a_.encoded : a_.layers[l - 1].residual3;  // (B, T, C)
    bf16* dproj = a_.proj;                                                     // (B, T, C)

    // MLP.
    CUDA_RETURN_IF_ERROR(
        ToBf16(dresidual, MakeDropout(seed, MlpProjStream(l), rate), BT * C, dproj, stream_));
    RETURN_IF_ERROR(LinearBackward(blas, dproj, la.fch_gelu, w.mlp_proj_weight + l4cc, BT,
                                             4 * C, C, a_.dfch, g.mlp_proj_weight + l4cc,
                                             g.mlp_proj_bias + l * C, a_.reduce));
    CUDA_RETURN_IF_ERROR(GeluBackward(a_.dfch, la.fch, BT * 4 * C, a_.dfch, stream_));
    bf16* dln2 = a_.dbtc;  // (B, T, C)
    RETURN_IF_ERROR(LinearBackward(blas, a_.dfch, la.ln2, w.fc_weight + l4cc, BT, C,
                                             4 * C, dln2, g.fc_weight + l4cc, g.fc_bias + l * 4 * C,
                                             a_.reduce));
    CUDA_RETURN_IF_ERROR(LayerNormBackward(dln2, la.residual2, p.ln2_weight + l * C, la.ln2_mean,
                                           la.ln2_rstd, BT, C, dresidual, g.ln2_weight + l * C,
                                           g.ln2_bias + l * C, a_.reduce, stream_));

    // Attention.
    CUDA_RETURN_IF_ERROR(
        ToBf16(dresidual, MakeDropout(seed, AttnProjStream(l), rate), BT * C, dproj, stream_));
    RETURN_IF_ERROR(LinearBackward(blas, dproj, la.atty, w.proj_weight + lcc, BT, C, C,
                                             a_.datty, g.proj_weight + lcc, g.proj_bias + l * C,
                                             a_.reduce));
    bf16* dqkv = a_.qkv;  // (B, T, 3C)
    const Dropout attention_dropout = MakeDropout(seed, AttentionStream(l), rate);
    if (config_.flash_attention) {
      RETURN_IF_ERROR(AttentionBackwardFlash(a_.datty, la.qkvr, la.atty, la.lse, B, T,
                                                       C, NH, attention_dropout, dqkv,
                                                       a_.attention, stream_));
    } else {
      RETURN_IF_ERROR(AttentionBackward(blas, a_.datty, la.qkvr, la.att, B, T, C, NH,
                                                  attention_dropout, dqkv, a_.attention));
    }
    bf16* dln1 = a_.dbtc;  // (B, T, C)
    RETURN_IF_ERROR(LinearBackward(blas, dqkv, la.ln1, w.qkv_weight + l3cc, BT, C, 3 * C,
                                             dln1, g.qkv_weight + l3cc, g.qkv_bias + l * 3 * C,
                                             a_.reduce));
    CUDA_RETURN_IF_ERROR(LayerNormBackward(dln1, residual, p.ln1_weight + l * C, la.ln1_mean,
                                           la.ln1_rstd, BT, C, dresidual, g.ln1_weight + l * C,
                                           g.ln1_bias + l * C, a_.reduce, stream_));
    if (after_group) RETURN_IF_ERROR(after_group(1 + l));
  }

  // Embeddings: encoded = dropout(wte[inputs] + wpe).
  const Dropout embed = MakeDropout(seed, EmbedStream(), rate);
  CUDA_RETURN_IF_ERROR(EmbeddingBackwardWte(dresidual, embed, a_.bucket_tokens, a_.bucket_starts,
                                            a_.bucket_positions, buckets_.num_buckets(), C, g.wte,
                                            stream_));
  CUDA_RETURN_IF_ERROR(EmbeddingBackwardWpe(dresidual, embed, B, T, C, g.wpe, stream_));
  if (after_group) RETURN_IF_ERROR(after_group(0));
  return absl::OkStatus();
}

absl::StatusOr<float> GptCuda::ForwardBackward(const int32_t* rows, int batch, uint64_t seed) {
  if (batch < 1) return absl::InvalidArgumentError(absl::StrCat("batch = ", batch));
  CUDA_RETURN_IF_ERROR(cudaSetDevice(config_.device));
  RETURN_IF_ERROR(Reserve(batch));
  ASSIGN_OR_RETURN(const bool valid, LoadRows(rows, batch, /*buckets=*/true));
  if (!valid) {
    CUDA_RETURN_IF_ERROR(cudaMemsetAsync(grads_.as<void>(), 0, grads_.bytes(), stream_));
    RETURN_IF_ERROR(Synchronize());
    return std::numeric_limits<float>::quiet_NaN();
  }
  RETURN_IF_ERROR(ConvertParams());
  RETURN_IF_ERROR(Forward(batch, config_.context, /*training=*/true, seed));
  RETURN_IF_ERROR(HeadLoss(batch, /*backward=*/true));
  RETURN_IF_ERROR(Backward(batch, seed));
  RETURN_IF_ERROR(Synchronize());
  return MeanLoss(batch);
}

absl::StatusOr<float> GptCuda::ForwardBackwardStreamed(const float* host_params,
                                                       const int32_t* rows, int batch,
                                                       uint64_t seed, float* host_grads,
                                                       ParameterStream* stream) {
  if (batch < 1) return absl::InvalidArgumentError(absl::StrCat("batch = ", batch));
  CUDA_RETURN_IF_ERROR(cudaSetDevice(config_.device));
  RETURN_IF_ERROR(Reserve(batch));
  PinHostBuffer(host_params, num_parameters_ * sizeof(float));
  PinHostBuffer(host_grads, num_parameters_ * sizeof(float));
  ASSIGN_OR_RETURN(const bool valid, LoadRows(rows, batch, /*buckets=*/true));
  if (!valid) {  // NaN, zero gradients, nothing handed over: the step fails.
    std::fill(host_grads, host_grads + num_parameters_, 0.0f);
    return std::numeric_limits<float>::quiet_NaN();
  }
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
  RETURN_IF_ERROR(Forward(batch, config_.context, /*training=*/true, seed, upload));
  RETURN_IF_ERROR(HeadLoss(batch, /*backward=*/true));
  RETURN_IF_ERROR(Backward(batch, seed, download));
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
  if (batch < 1) return absl::InvalidArgumentError(absl::StrCat("batch = ", batch));
  CUDA_RETURN_IF_ERROR(cudaSetDevice(config_.device));
  RETURN_IF_ERROR(Reserve(batch));
  ASSIGN_OR_RETURN(const bool valid, LoadRows(rows, batch, /*buckets=*/false));
  if (!valid) return std::numeric_limits<float>::quiet_NaN();
  RETURN_IF_ERROR(ConvertParams());
  RETURN_IF_ERROR(Forward(batch, config_.context, /*training=*/false, /*seed=*/0));
  RETURN_IF_ERROR(HeadLoss(batch, /*backward=*/false));
  RETURN_IF_ERROR(Synchronize());
  return MeanLoss(batch);
}

absl::Status GptCuda::NextTokenLogits(const int32_t* tokens, int length, float* logits) {
  CUDA_RETURN_IF_ERROR(cudaSetDevice(config_.device));
  RETURN_IF_ERROR(Reserve(1));
  const int32_t start_token = 0;
  if (length < 1) {  // Outside the contract; read as the single token 0, as the CPU model does.
    tokens = &start_token;
    length = 1;
  }
  const int t = std::min(length, config_.context), C = config_.width, V = config_.vocab;
  int32_t* inputs = host_staging_.as<int32_t>();
  for (int i = 0; i < t; ++i) inputs[i] = std::clamp<int32_t>(tokens[length - t + i], 0, V - 1);
  CUDA_RETURN_IF_ERROR(
      cudaMemcpyAsync(a_.inputs, inputs, t * sizeof(int32_t), cudaMemcpyHostToDevice, stream_));
  RETURN_IF_ERROR(ConvertParams());
  RETURN_IF_ERROR(Forward(/*B=*/1, t, /*training=*/false, /*seed=*/0));
  // Only the last position's logits (V) = lnf[t-1] (C) @ wte^T.
  const Tables<const bf16> w = View<const bf16>(params_bf16_.as<bf16>());
  RETURN_IF_ERROR(blas_->Gemm(RowMajorABt(
      1, V, C, a_.lnf + static_cast<size_t>(t - 1) * C, w.wte, a_.logits, GemmType::kF32)));
  CUDA_RETURN_IF_ERROR(
      cudaMemcpyAsync(logits, a_.logits, V * sizeof(float), cudaMemcpyDeviceToHost, stream_));
  return Synchronize();
}

}  // namespace cuda
}  // namespace psrv
