// Linear and attention layers on the GPU (see layers.h). The attention materialises the (T, T)
// weights, like llm.c's first CUDA version: q k^T and att v are cuBLAS batched products over the
// B*NH heads, the causal softmax a kernel. AttentionForwardFlash/AttentionBackwardFlash run the
// flash kernels instead (flash_attention_tc.cu on tensor cores, or flash_attention.cu in fp32),
// with no (T, T) matrix.
#include "worker/cuda/layers.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "worker/cuda/cuda_status.h"

namespace psrv {
namespace cuda {

absl::Status LinearForward(Blas& blas, const bf16* inp, const bf16* weight, const bf16* bias, int N,
                           int C, int OC, bf16* out) {
  GemmArgs args = RowMajorABt(N, OC, C, inp, weight, out, GemmType::kBf16);
  args.bias = bias;
  return blas.Gemm(args);
}

absl::Status LinearGeluForward(Blas& blas, const bf16* inp, const bf16* weight, const bf16* bias,
                               int N, int C, int OC, bf16* pre, bf16* out) {
  GemmArgs args = RowMajorABt(N, OC, C, inp, weight, out, GemmType::kBf16);
  args.bias = bias;
  args.epilogue = GemmEpilogue::kGeluAux;
  args.aux = pre;
  return blas.Gemm(args);
}

size_t LinearBackwardScratch(int N, int OC) { return BiasBackwardScratch(N, OC); }

absl::Status LinearBackward(Blas& blas, const bf16* dout, const bf16* inp, const bf16* weight,
                            int N, int C, int OC, bf16* dinp, float* dweight, float* dbias,
                            float* scratch) {
  RETURN_IF_ERROR(blas.Gemm(RowMajorAtB(OC, C, N, dout, inp, dweight, GemmType::kF32)));
  RETURN_IF_ERROR(blas.Gemm(RowMajorAB(N, C, OC, dout, weight, dinp, GemmType::kBf16)));
  if (dbias != nullptr) {
    CUDA_RETURN_IF_ERROR(BiasBackward(dout, N, OC, dbias, scratch, blas.stream()));
  }
  return absl::OkStatus();
}

namespace {

// q, k, v (each (B, NH, T, hs) = B*T*C elements) one after another in a qkvr-shaped buffer.
template <typename Bf16>
struct QkvHeads {
  Bf16* q;
  Bf16* k;
  Bf16* v;
};

template <typename Bf16>
QkvHeads<Bf16> HeadsOf(Bf16* qkvr, int B, int T, int C) {
  const size_t n = static_cast<size_t>(B) * T * C;
  return {qkvr, qkvr + n, qkvr + 2 * n};
}

// Moves q, k, v between qkv (B, T, 3C), the heads side by side, and qkvr (3, B, NH, T, hs): the
// forward splits the heads out (split = true), the backward merges the gradients back.
cudaError_t MoveQkv(bool split, const bf16* from, int B, int T, int C, int NH, bf16* to,
                    cudaStream_t stream) {
  const int hs = C / NH;
  const size_t head_elements = static_cast<size_t>(B) * T * C;
  for (int part = 0; part < 3; ++part) {
    const cudaError_t error =
        split ? SplitHeads(from + part * C, B, T, NH, hs, 3 * C, to + part * head_elements, stream)
              : MergeHeads(from + part * head_elements, B, T, NH, hs, 3 * C, to + part * C, stream);
    if (error != cudaSuccess) return error;
  }
  return cudaSuccess;
}

// dqkv (B, T, 3C) = the merged dqkvr and, when dbias is set, qkv's bias gradient in the same pass.
cudaError_t MergeQkvGradients(const AttentionScratch& scratch, int B, int T, int C, int NH,
                              bf16* dqkv, float* dbias, cudaStream_t stream) {
  if (dbias == nullptr) return MoveQkv(/*split=*/false, scratch.dqkvr, B, T, C, NH, dqkv, stream);
  return MergeQkvBias(scratch.dqkvr, B, T, NH, C / NH, dqkv, dbias, scratch.reduce, stream);
}

absl::Status CheckFlashHeadSize(int hs) {
  if (FlashAttentionSupports(hs)) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat("flash attention takes head sizes up to ", kFlashMaxHeadSize, ", not ", hs));
}

}  // namespace

absl::Status AttentionForward(Blas& blas, const bf16* qkv, int B, int T, int C, int NH,
                              const Dropout& dropout, bf16* qkvr, bf16* att, bf16* out,
                              const AttentionScratch& scratch) {
  const cudaStream_t stream = blas.stream();
  const int hs = C / NH, BH = B * NH;
  const QkvHeads<const bf16> heads = HeadsOf<const bf16>(qkvr, B, T, C);  // (B, NH, T, hs) each
  const bf16 *q = heads.q, *k = heads.k, *v = heads.v;
  CUDA_RETURN_IF_ERROR(MoveQkv(/*split=*/true, qkv, B, T, C, NH, qkvr, stream));

  // scores (T, T) = q (T, hs) @ k^T / sqrt(hs), per head. Entries above the diagonal are computed
  // and ignored.
  const int64_t th = static_cast<int64_t>(T) * hs, tt = static_cast<int64_t>(T) * T;
  GemmArgs scores = RowMajorABt(T, T, hs, q, k, scratch.scores, GemmType::kF32, {BH, th, th, tt});
  scores.alpha = 1.0f / std::sqrt(static_cast<float>(hs));
  RETURN_IF_ERROR(blas.Gemm(scores));
  CUDA_RETURN_IF_ERROR(CausalSoftmaxForward(scratch.scores, BH, T, dropout, att,
                                            dropout.enabled ? scratch.weights : nullptr, stream));
  const bf16* weights = dropout.enabled ? scratch.weights : att;  // (B, NH, T, T)
  // y (T, hs) = weights (T, T) @ v (T, hs), per head; then the heads side by side.
  RETURN_IF_ERROR(blas.Gemm(
      RowMajorAB(T, hs, T, weights, v, scratch.heads, GemmType::kBf16, {BH, tt, th, th})));
  CUDA_RETURN_IF_ERROR(MergeHeads(scratch.heads, B, T, NH, hs, C, out, stream));
  return absl::OkStatus();
}

absl::Status AttentionBackward(Blas& blas, const bf16* dout, const bf16* qkvr, const bf16* att,
                               int B, int T, int C, int NH, const Dropout& dropout, bf16* dqkv,
                               float* dbias, const AttentionScratch& scratch) {
  const cudaStream_t stream = blas.stream();
  const int hs = C / NH, BH = B * NH;
  const QkvHeads<const bf16> heads = HeadsOf(qkvr, B, T, C);
  const bf16 *q = heads.q, *k = heads.k, *v = heads.v;
  const QkvHeads<bf16> grads = HeadsOf(scratch.dqkvr, B, T, C);
  bf16 *dq = grads.q, *dk = grads.k, *dv = grads.v;
  bf16* dy = scratch.heads;  // (B, NH, T, hs)
  CUDA_RETURN_IF_ERROR(SplitHeads(dout, B, T, NH, hs, C, dy, stream));

  const int64_t th = static_cast<int64_t>(T) * hs, tt = static_cast<int64_t>(T) * T;
  const bf16* weights = att;  // (B, NH, T, T) what weighed v in the forward
  if (dropout.enabled) {
    CUDA_RETURN_IF_ERROR(
        DropoutBf16(att, dropout, static_cast<size_t>(BH) * tt, scratch.weights, stream));
    weights = scratch.weights;
  }
  // d(weights) (T, T) = dy (T, hs) @ v^T; dv (T, hs) = weights^T (T, T) @ dy.
  float* dweights = scratch.scores;
  RETURN_IF_ERROR(
      blas.Gemm(RowMajorABt(T, T, hs, dy, v, dweights, GemmType::kF32, {BH, th, th, tt})));
  RETURN_IF_ERROR(
      blas.Gemm(RowMajorAtB(T, hs, T, weights, dy, dv, GemmType::kBf16, {BH, tt, th, th})));
  // d(scores) * 1/sqrt(hs) overwrites the dropped weights (dv has read them).
  bf16* dscores = scratch.weights;
  CUDA_RETURN_IF_ERROR(CausalSoftmaxBackward(
      dweights, att, BH, T, 1.0f / std::sqrt(static_cast<float>(hs)), dropout, dscores, stream));
  // dq (T, hs) = dscores (T, T) @ k; dk (T, hs) = dscores^T @ q.
  RETURN_IF_ERROR(
      blas.Gemm(RowMajorAB(T, hs, T, dscores, k, dq, GemmType::kBf16, {BH, tt, th, th})));
  RETURN_IF_ERROR(
      blas.Gemm(RowMajorAtB(T, hs, T, dscores, q, dk, GemmType::kBf16, {BH, tt, th, th})));
  CUDA_RETURN_IF_ERROR(MergeQkvGradients(scratch, B, T, C, NH, dqkv, dbias, stream));
  return absl::OkStatus();
}

absl::Status AttentionForwardFlash(const bf16* qkv, int B, int T, int C, int NH,
                                   const Dropout& dropout, bf16* qkvr, float* lse, bf16* out,
                                   const AttentionScratch& scratch, FlashKernels kernels,
                                   cudaStream_t stream) {
  const int hs = C / NH;
  RETURN_IF_ERROR(CheckFlashHeadSize(hs));
  const float scale = 1.0f / std::sqrt(static_cast<float>(hs));
  if (kernels == FlashKernels::kTensorCores) {
    // q, k, v read where the product wrote them, the output written where the next product reads
    // it; qkv itself is what the backward needs (kept as qkvr, in place when they are the same).
    if (qkvr != qkv) {
      CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(qkvr, qkv, static_cast<size_t>(B) * T * 3 * C * sizeof(bf16),
                                           cudaMemcpyDeviceToDevice, stream));
    }
    CUDA_RETURN_IF_ERROR(FlashAttentionForwardTensorCores(
        qkvr, qkvr + C, qkvr + 2 * C, InterleavedHeads(T, NH, hs, 3 * C), B * NH, T, hs, scale,
        dropout, out, InterleavedHeads(T, NH, hs, C), lse, stream));
    return absl::OkStatus();
  }
  const QkvHeads<const bf16> heads = HeadsOf<const bf16>(qkvr, B, T, C);
  CUDA_RETURN_IF_ERROR(MoveQkv(/*split=*/true, qkv, B, T, C, NH, qkvr, stream));
  CUDA_RETURN_IF_ERROR(FlashAttentionForward(heads.q, heads.k, heads.v, B * NH, T, hs, scale,
                                             dropout, scratch.heads, lse, stream));
  CUDA_RETURN_IF_ERROR(MergeHeads(scratch.heads, B, T, NH, hs, C, out, stream));
  return absl::OkStatus();
}

absl::Status AttentionBackwardFlash(const bf16* dout, const bf16* qkvr, const bf16* out,
                                    const float* lse, int B, int T, int C, int NH,
                                    const Dropout& dropout, bf16* dqkv, float* dbias,
                                    const AttentionScratch& scratch, FlashKernels kernels,
                                    cudaStream_t stream) {
  const int hs = C / NH;
  RETURN_IF_ERROR(CheckFlashHeadSize(hs));
  CUDA_RETURN_IF_ERROR(FlashAttentionDelta(dout, out, B, T, NH, hs, scratch.delta, stream));
  const float scale = 1.0f / std::sqrt(static_cast<float>(hs));
  if (kernels == FlashKernels::kTensorCores) {
    // Everything in place: q, k, v in qkvr = the forward's qkv (B, T, 3C), dout (B, T, C), the
    // gradients straight into dqkv (B, T, 3C); then qkv's bias gradient from dqkv.
    const HeadLayout qkv_layout = InterleavedHeads(T, NH, hs, 3 * C);
    CUDA_RETURN_IF_ERROR(FlashAttentionBackwardTensorCores(
        qkvr, qkvr + C, qkvr + 2 * C, qkv_layout, dout, InterleavedHeads(T, NH, hs, C), lse,
        scratch.delta, B * NH, T, hs, scale, dropout, dqkv, dqkv + C, dqkv + 2 * C, qkv_layout,
        stream));
    if (dbias != nullptr) {
      CUDA_RETURN_IF_ERROR(BiasBackward(dqkv, B * T, 3 * C, dbias, scratch.reduce, stream));
    }
    return absl::OkStatus();
  }
  const QkvHeads<const bf16> heads = HeadsOf(qkvr, B, T, C);
  const QkvHeads<bf16> grads = HeadsOf(scratch.dqkvr, B, T, C);
  bf16* dy = scratch.heads;  // (B, NH, T, hs)
  CUDA_RETURN_IF_ERROR(SplitHeads(dout, B, T, NH, hs, C, dy, stream));
  CUDA_RETURN_IF_ERROR(FlashAttentionBackward(heads.q, heads.k, heads.v, dy, lse, scratch.delta,
                                              B * NH, T, hs, scale, dropout, grads.q, grads.k,
                                              grads.v, stream));
  CUDA_RETURN_IF_ERROR(MergeQkvGradients(scratch, B, T, C, NH, dqkv, dbias, stream));
  return absl::OkStatus();
}

}  // namespace cuda
}  // namespace psrv
