// Host-side launchers of the GPT's CUDA kernels, one .cu file per layer kind (after llm.c):
// embedding.cu, layernorm.cu, residual.cu, matmul.cu (bias), gelu.cu, attention.cu (heads and the
// causal softmax), softmax_ce.cu (fused softmax + cross-entropy), dropout.cu (masks, conversions).
//
// Every launcher enqueues its kernels on `stream` and returns cudaGetLastError() (launch errors
// only; faults inside a kernel surface at the next synchronisation). Shapes are in the comments;
// N = B*T rows. Conventions as worker/model/gpt_kernels.h: "overwritten" outputs are written in
// full, "accumulated" (+=) ones must hold a valid value on entry. No kernel uses atomics: every
// result is bitwise reproducible for the same inputs.
//
// Precision (what PyTorch's bf16 autocast does): the residual stream, LayerNorm statistics and
// every gradient of a parameter are fp32; inputs of matrix products and the activations saved for
// the backward are bf16; kernels compute in fp32 internally.
#ifndef PSRV_WORKER_CUDA_KERNELS_H_
#define PSRV_WORKER_CUDA_KERNELS_H_

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

namespace psrv {
namespace cuda {

using bf16 = __nv_bfloat16;

// A dropout site's mask, drawn as the CPU model draws it (worker/model/gpt_kernels.cc,
// DropoutMask): element i is dropped when the top 32 bits of SplitMix64(base + i) fall below
// threshold; kept elements are scaled by keep_scale. The masks are therefore bitwise equal to the
// CPU's for the same (seed, stream, p), and are recomputed from the index in the backward instead
// of being stored. A disabled site (p = 0, or evaluation) multiplies by 1.
struct Dropout {
  bool enabled = false;
  uint64_t base = 0;
  uint64_t threshold = 0;
  float keep_scale = 1.0f;
};

// The site `stream` of step `seed` with drop probability p in [0, 1); p == 0 gives a disabled site.
Dropout MakeDropout(uint64_t seed, uint64_t stream, float p);

// ---- dropout.cu ----

// mask (n) = the Dropout's multipliers (0 or keep_scale; all 1 when disabled). For tests.
cudaError_t DropoutMask(const Dropout& dropout, size_t n, float* mask, cudaStream_t stream);
// out (n) = bf16(x * mask). out may alias x.
cudaError_t ToBf16(const float* x, const Dropout& dropout, size_t n, bf16* out,
                   cudaStream_t stream);
// out (n) = bf16(x * mask). out may alias x.
cudaError_t DropoutBf16(const bf16* x, const Dropout& dropout, size_t n, bf16* out,
                        cudaStream_t stream);

// ---- embedding.cu ----

// out (B, T, C) = (wte[tokens[b, t]] + wpe[t]) * mask. tokens (B, T) in [0, V), wte (V, C),
// wpe (>= T, C).
cudaError_t EmbeddingForward(const int32_t* tokens, const float* wte, const float* wpe, int B,
                             int T, int C, const Dropout& dropout, float* out, cudaStream_t stream);
// dwte (V, C) accumulated: += (dout * mask) rows scattered by token. The scatter is a gather per
// distinct token (TokenBuckets, token_buckets.h): bucket j adds the rows positions[starts[j] ..
// starts[j+1]) of dout (N, C), in that order, to row tokens[j] of dwte. No atomics.
cudaError_t EmbeddingBackwardWte(const float* dout, const Dropout& dropout,
                                 const int32_t* bucket_tokens, const int32_t* bucket_starts,
                                 const int32_t* bucket_positions, int num_buckets, int C,
                                 float* dwte, cudaStream_t stream);
// dwpe (T, C) overwritten: (dout (B, T, C) * mask) summed over B.
cudaError_t EmbeddingBackwardWpe(const float* dout, const Dropout& dropout, int B, int T, int C,
                                 float* dwpe, cudaStream_t stream);

// ---- layernorm.cu ----

// Per row of inp (N, C): out = (inp - mean) * rstd * weight + bias, rstd = 1/sqrt(var + 1e-5).
// weight, bias (C); out (N, C) bf16; mean, rstd (N) saved for the backward.
cudaError_t LayerNormForward(const float* inp, const float* weight, const float* bias, int N, int C,
                             bf16* out, float* mean, float* rstd, cudaStream_t stream);
// The residual connection and the LayerNorm after it in one launch: residual (N, C) = inp +
// branch * mask (ResidualForward; residual may alias inp), then LayerNormForward of residual. The
// same values, bit for bit, as the two kernels one after the other.
cudaError_t ResidualLayerNormForward(const float* inp, const bf16* branch, const Dropout& dropout,
                                     float* residual, const float* weight, const float* bias,
                                     int N, int C, bf16* out, float* mean, float* rstd,
                                     cudaStream_t stream);
// Floats of scratch LayerNormBackward needs for N rows of C.
size_t LayerNormBackwardScratch(int N, int C);
// dinp (N, C) accumulated; dweight, dbias (C) overwritten. scratch: LayerNormBackwardScratch(N, C)
// floats.
cudaError_t LayerNormBackward(const bf16* dout, const float* inp, const float* weight,
                              const float* mean, const float* rstd, int N, int C, float* dinp,
                              float* dweight, float* dbias, float* scratch, cudaStream_t stream);

// ---- residual.cu ----

// out (n) = a + b * mask; out may alias a.
cudaError_t ResidualForward(const float* a, const bf16* b, const Dropout& dropout, size_t n,
                            float* out, cudaStream_t stream);
// sum (n) += x (n), accumulated (gradient accumulation).
cudaError_t AddFloats(const float* x, size_t n, float* sum, cudaStream_t stream);
// x (n) *= scale.
cudaError_t ScaleFloats(float scale, size_t n, float* x, cudaStream_t stream);

// ---- matmul.cu (the products themselves run in cuBLAS, blas.h) ----

// out (N, OC) += bias (OC) on every row (the bias of a product when cuBLASLt's epilogue is not
// used).
cudaError_t AddBias(const bf16* bias, int N, int OC, bf16* out, cudaStream_t stream);
// Floats of scratch BiasBackward needs.
size_t BiasBackwardScratch(int N, int OC);
// dbias (OC) overwritten = column sums of dout (N, OC), in fp32.
cudaError_t BiasBackward(const bf16* dout, int N, int OC, float* dbias, float* scratch,
                         cudaStream_t stream);
// The bias gradient fused with the kernel that makes dout, in one pass over the data: the same
// bits as that kernel then BiasBackward, one read of (N, OC) fewer. scratch as BiasBackward's.
// dinp (N, OC) = GeluBackward(dout, inp) (dinp may alias dout); dbias (OC) overwritten = the column
// sums of dinp.
cudaError_t GeluBackwardBias(const bf16* dout, const bf16* inp, int N, int OC, bf16* dinp,
                             float* dbias, float* scratch, cudaStream_t stream);
// out (N, OC) = ToBf16(x, dropout) (the mask index is the flat index r * OC + c); dbias (OC)
// overwritten = the column sums of out.
cudaError_t ToBf16Bias(const float* x, const Dropout& dropout, int N, int OC, bf16* out,
                       float* dbias, float* scratch, cudaStream_t stream);
// dqkv (B, T, 3C) = dqkvr (3, B, NH, T, hs) with q's, k's and v's heads merged back side by side
// (MergeHeads of each third), C = NH * hs; dbias (3C) overwritten = the column sums of dqkv.
// scratch: BiasBackwardScratch(B * T, 3C).
cudaError_t MergeQkvBias(const bf16* dqkvr, int B, int T, int NH, int hs, bf16* dqkv,
                         float* dbias, float* scratch, cudaStream_t stream);

// ---- gelu.cu ----

// GELU, tanh approximation: out = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))). inp, out (n).
cudaError_t GeluForward(const bf16* inp, size_t n, bf16* out, cudaStream_t stream);
// dinp (n) = dout * gelu'(inp), overwritten; dinp may alias dout.
cudaError_t GeluBackward(const bf16* dout, const bf16* inp, size_t n, bf16* dinp,
                         cudaStream_t stream);

// ---- attention.cu (the products q k^T, att v and their backward run in cuBLAS) ----

// out (B, NH, T, hs) = the heads of in (B, T, row_stride): out[b, h, t, :] = in[b, t, h*hs ...).
// For q, k, v of qkv (B, T, 3C): in = qkv, qkv + C, qkv + 2C with row_stride = 3C.
cudaError_t SplitHeads(const bf16* in, int B, int T, int NH, int hs, int row_stride, bf16* out,
                       cudaStream_t stream);
// The inverse: out[b, t, h*hs ...) (B, T, row_stride) = in[b, h, t, :] (B, NH, T, hs); the other
// columns of out are left alone.
cudaError_t MergeHeads(const bf16* in, int B, int T, int NH, int hs, int row_stride, bf16* out,
                       cudaStream_t stream);
// Per row t of each of BH score matrices preatt (BH, T, T) (already scaled by 1/sqrt(hs)):
// att = softmax over t2 <= t, zero above the diagonal (bf16). With dropout, att_dropped (BH, T, T)
// = att * mask (mask index = the flat index into (BH, T, T)); otherwise att_dropped may be null.
cudaError_t CausalSoftmaxForward(const float* preatt, int BH, int T, const Dropout& dropout,
                                 bf16* att, bf16* att_dropped, cudaStream_t stream);
// datt (BH, T, T): d(loss)/d(att_dropped). dpreatt (BH, T, T) overwritten = scale *
// d(loss)/d(scores) through the mask and the softmax whose output is att; zero above the diagonal.
cudaError_t CausalSoftmaxBackward(const float* datt, const bf16* att, int BH, int T, float scale,
                                  const Dropout& dropout, bf16* dpreatt, cudaStream_t stream);

// ---- flash_attention.cu: the same causal attention without (T, T) matrices ----

// The largest head size the flash kernels take (a head's row lives in one thread's registers).
constexpr int kFlashMaxHeadSize = 64;
bool FlashAttentionSupports(int hs);
// q, k, v, out (BH, T, hs): out = (softmax over t2 <= t of scale * q k^T) * mask @ v per head, with
// the attention dropout of CausalSoftmaxForward (same mask indices); lse (BH, T) = the logsumexp
// of each row's scaled scores, what the backward needs. cudaErrorInvalidValue for an unsupported
// head size or BH > 65535.
cudaError_t FlashAttentionForward(const bf16* q, const bf16* k, const bf16* v, int BH, int T,
                                  int hs, float scale, const Dropout& dropout, bf16* out,
                                  float* lse, cudaStream_t stream);
// delta (B*NH, T) = row sums of dout * out, both (B, T, NH * hs) with the heads side by side.
cudaError_t FlashAttentionDelta(const bf16* dout, const bf16* out, int B, int T, int NH, int hs,
                                float* delta, cudaStream_t stream);
// dy (BH, T, hs) = d(loss)/d(out) -> dq, dk, dv (BH, T, hs), overwritten; lse from the forward,
// delta from FlashAttentionDelta; `dropout` must be the forward's.
cudaError_t FlashAttentionBackward(const bf16* q, const bf16* k, const bf16* v, const bf16* dy,
                                   const float* lse, const float* delta, int BH, int T, int hs,
                                   float scale, const Dropout& dropout, bf16* dq, bf16* dk,
                                   bf16* dv, cudaStream_t stream);

// ---- flash_attention_tc.cu: the same contract on tensor cores (sm_80+) ----

// Which flash kernels run: bf16 WMMA products with fp32 accumulation (flash_attention_tc.cu; the
// default) or the fp32 CUDA-core kernels above (the reference and fallback).
enum class FlashKernels { kTensorCores, kFp32 };

// Where the heads of a (B, NH, T, hs) tensor are: row t of head bh = b * NH + h starts at element
// b * batch_stride + h * head_stride + t * row_stride.
struct HeadLayout {
  int heads = 1;  // NH
  size_t batch_stride = 0, head_stride = 0, row_stride = 0;
};
// The heads one after another, (B * NH, T, hs): what the fp32 kernels above take.
inline HeadLayout ContiguousHeads(int T, int hs) {
  return {1, static_cast<size_t>(T) * hs, 0, static_cast<size_t>(hs)};
}
// The heads side by side in the rows of a (B, T, row_stride) matrix, head h at column h * hs: q, k
// and v in qkv (B, T, 3C) (row_stride 3C, from qkv, qkv + C, qkv + 2C), the output (B, T, C).
inline HeadLayout InterleavedHeads(int T, int NH, int hs, int row_stride) {
  return {NH, static_cast<size_t>(T) * row_stride, static_cast<size_t>(hs),
          static_cast<size_t>(row_stride)};
}

// FlashAttentionForward's and FlashAttentionBackward's contract (the same lse and delta, (BH, T)),
// on tensor cores, with each tensor's heads where its layout says (q, k, v and dq, dk, dv share
// theirs): the model passes qkv, its output and their gradients in place, with no heads split
// out or merged back. The probabilities and score gradients are rounded to bf16 between the
// products.
cudaError_t FlashAttentionForwardTensorCores(const bf16* q, const bf16* k, const bf16* v,
                                             const HeadLayout& qkv_layout, int BH, int T, int hs,
                                             float scale, const Dropout& dropout, bf16* out,
                                             const HeadLayout& out_layout, float* lse,
                                             cudaStream_t stream);
cudaError_t FlashAttentionBackwardTensorCores(const bf16* q, const bf16* k, const bf16* v,
                                              const HeadLayout& qkv_layout, const bf16* dy,
                                              const HeadLayout& dy_layout, const float* lse,
                                              const float* delta, int BH, int T, int hs,
                                              float scale, const Dropout& dropout, bf16* dq,
                                              bf16* dk, bf16* dv, const HeadLayout& dqkv_layout,
                                              cudaStream_t stream);

// ---- softmax_ce.cu ----

// Per row of logits (N, V): losses[row] = -log softmax(row)[targets[row]]. With dlogits non-null,
// also dlogits (N, V) = dscale * (softmax(row) - onehot(targets[row])), i.e. d(dscale * sum of
// losses)/d(logits). targets (N) in [0, V).
cudaError_t SoftmaxCrossEntropy(const float* logits, const int32_t* targets, int N, int V,
                                float dscale, float* losses, bf16* dlogits, cudaStream_t stream);

// The classifier in place: the same from bf16 logits (N, V), and with `backward` their gradient
// written over them (bf16), so that no fp32 logits are ever held (llm.c's fused classifier).
cudaError_t FusedClassifier(bf16* logits, const int32_t* targets, int N, int V, float dscale,
                            float* losses, bool backward, cudaStream_t stream);

}  // namespace cuda
}  // namespace psrv

#endif  // PSRV_WORKER_CUDA_KERNELS_H_
