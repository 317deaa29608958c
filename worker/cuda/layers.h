// The GPT's layers that combine cuBLAS products with kernels: the Linear (PyTorch's, weight (out,
// in)) and causal multi-head self-attention, forward and backward, on the Blas's stream.
#ifndef PSRV_WORKER_CUDA_LAYERS_H_
#define PSRV_WORKER_CUDA_LAYERS_H_

#include "absl/status/status.h"
#include "worker/cuda/blas.h"
#include "worker/cuda/kernels.h"

namespace psrv {
namespace cuda {

// out (N, OC) = inp (N, C) @ weight^T + bias, weight (OC, C), bias (OC) or null.
absl::Status LinearForward(Blas& blas, const bf16* inp, const bf16* weight, const bf16* bias, int N,
                           int C, int OC, bf16* out);

// The Linear and the GELU after it as one product (GemmEpilogue::kGeluAux, cuBLASLt's
// GELU_AUX_BIAS epilogue): pre (N, OC) = inp @ weight^T + bias, kept for the backward, and
// out (N, OC) = gelu(pre). Through cuBLASLt the GELU takes the product's fp32 value, so out may
// differ from GeluForward(pre) by a bf16 rounding; where cuBLASLt declines, LinearForward into pre
// and then GeluForward run instead.
absl::Status LinearGeluForward(Blas& blas, const bf16* inp, const bf16* weight, const bf16* bias,
                               int N, int C, int OC, bf16* pre, bf16* out);

// Floats of scratch LinearBackward needs.
size_t LinearBackwardScratch(int N, int OC);

// dout (N, OC). dinp (N, C) = dout @ weight (bf16); dweight (OC, C) = dout^T @ inp and dbias (OC)
// = column sums of dout (fp32, overwritten; dbias may be null). dinp may alias inp: dweight is
// computed first.
absl::Status LinearBackward(Blas& blas, const bf16* dout, const bf16* inp, const bf16* weight,
                            int N, int C, int OC, bf16* dinp, float* dweight, float* dbias,
                            float* scratch);

// Scratch of the attention, each sized for (B, NH, T, ...) as commented.
struct AttentionScratch {
  bf16* heads;    // (B, NH, T, hs) the output per head (forward), d(output) per head (backward)
  float* scores;  // (B, NH, T, T) q k^T / sqrt(hs) (forward), d(weights) (backward)
  bf16* weights;  // (B, NH, T, T) att after dropout (both), then d(scores) (backward)
  bf16* dqkvr;    // (3, B, NH, T, hs) dq, dk, dv (backward)
  float* delta;   // (B, NH, T) the flash backward's row sums of dout * out (null otherwise)
  float* reduce = nullptr;  // BiasBackwardScratch(B * T, 3C) floats: a backward given a dbias
};

// Causal multi-head self-attention with NH heads of size hs = C/NH, as the CPU's
// AttentionForward (worker/model/gpt_kernels.h): qkv (B, T, 3C) holds q, k, v side by side; out
// (B, T, C) = heads side by side. Saved for the backward: qkvr (3, B, NH, T, hs), q, k and v with
// their heads split out; att (B, NH, T, T), the softmax weights before dropout.
absl::Status AttentionForward(Blas& blas, const bf16* qkv, int B, int T, int C, int NH,
                              const Dropout& dropout, bf16* qkvr, bf16* att, bf16* out,
                              const AttentionScratch& scratch);

// dout (B, T, C) -> dqkv (B, T, 3C), overwritten. `dropout` must be the forward's. dbias (3C),
// when not null, is overwritten with the column sums of dqkv (the gradient of qkv's bias), summed
// as dqkv is written (MergeQkvBias; needs scratch.reduce).
absl::Status AttentionBackward(Blas& blas, const bf16* dout, const bf16* qkvr, const bf16* att,
                               int B, int T, int C, int NH, const Dropout& dropout, bf16* dqkv,
                               float* dbias, const AttentionScratch& scratch);

// The same attention through the flash kernels (kernels.h): no (T, T) matrix anywhere; saved for
// the backward are qkvr and lse (B, NH, T) fp32 instead of att, and the backward needs the
// forward's `out`. scratch.scores and scratch.weights are unused; scratch.delta is needed.
// INVALID_ARGUMENT unless FlashAttentionSupports(C / NH).
// `kernels`: tensor cores (flash_attention_tc.cu) or fp32 CUDA cores (flash_attention.cu). The
// tensor-core kernels read q, k, v and dout and write out and dqkv in place, heads side by side:
// there qkvr holds a copy of qkv in its own (B, T, 3C) layout, none when qkvr == qkv (what the
// model passes), and the backward's dbias is a BiasBackward of dqkv; the fp32 kernels take the
// heads split out into qkvr as AttentionForward does.
absl::Status AttentionForwardFlash(const bf16* qkv, int B, int T, int C, int NH,
                                   const Dropout& dropout, bf16* qkvr, float* lse, bf16* out,
                                   const AttentionScratch& scratch, FlashKernels kernels,
                                   cudaStream_t stream);
absl::Status AttentionBackwardFlash(const bf16* dout, const bf16* qkvr, const bf16* out,
                                    const float* lse, int B, int T, int C, int NH,
                                    const Dropout& dropout, bf16* dqkv, float* dbias,
                                    const AttentionScratch& scratch, FlashKernels kernels,
                                    cudaStream_t stream);

}  // namespace cuda
}  // namespace psrv

#endif  // PSRV_WORKER_CUDA_LAYERS_H_
