// The CPU layer kernels of the GPT model, after llm.c's train_gpt2.c: each forward and its
// backward. Matrix products run on OpenBLAS (cblas_sgemm): with OpenBLAS single-threaded they are
// split by rows over `pool`, otherwise OpenBLAS threads each one. The other loops are split over
// `pool` (null: the calling thread alone). N = B*T rows.
//
// Conventions: "overwritten" outputs are written in full, "accumulated" ones (+=) must hold a valid
// value on entry. Every kernel's result is the same for any pool size: the work is cut into chunks
// that depend only on the shapes, and each output element is computed within one chunk in a fixed
// order.
#ifndef PSRV_WORKER_MODEL_GPT_KERNELS_H_
#define PSRV_WORKER_MODEL_GPT_KERNELS_H_

#include <cstddef>
#include <cstdint>

#include "common/thread_pool.h"

namespace psrv {

// out (B, T, C) = wte[tokens[b, t]] + wpe[t]. tokens (B, T) in [0, V), wte (V, C), wpe (>= T, C).
void EmbeddingForward(const int32_t* tokens, const float* wte, const float* wpe, int B, int T,
                      int C, float* out, ThreadPool* pool);
// dwte (V, C) accumulated: += dout rows scattered by token. dwpe (T, C) overwritten: dout summed
// over B.
void EmbeddingBackward(const float* dout, const int32_t* tokens, int B, int T, int C, float* dwte,
                       float* dwpe, ThreadPool* pool);

// Per row of inp (N, C): out = (inp - mean) * rstd * weight + bias, rstd = 1/sqrt(var + 1e-5).
// weight, bias (C); out (N, C); mean, rstd (N) saved for the backward.
void LayerNormForward(const float* inp, const float* weight, const float* bias, int N, int C,
                      float* out, float* mean, float* rstd, ThreadPool* pool);
// dinp (N, C) accumulated; dweight, dbias (C) overwritten.
void LayerNormBackward(const float* dout, const float* inp, const float* weight, const float* mean,
                       const float* rstd, int N, int C, float* dinp, float* dweight, float* dbias,
                       ThreadPool* pool);

// out (N, OC) = inp (N, C) @ weight^T + bias, weight (OC, C) as in PyTorch's Linear, bias (OC) or
// null for none.
void MatmulForward(const float* inp, const float* weight, const float* bias, int N, int C, int OC,
                   float* out, ThreadPool* pool);
// dout (N, OC). dinp (N, C) = dout @ weight, overwritten (accumulated if accumulate_dinp).
// dweight (OC, C) = dout^T @ inp and dbias (OC) = column sums of dout, overwritten; dbias may be
// null.
void MatmulBackward(const float* dout, const float* inp, const float* weight, int N, int C, int OC,
                    bool accumulate_dinp, float* dinp, float* dweight, float* dbias,
                    ThreadPool* pool);

// Causal multi-head self-attention with NH heads of size hs = C/NH. qkv (B, T, 3C) holds q, k, v
// side by side in each row. att (B, NH, T, T) is overwritten with the softmax weights
// softmax(q k^T / sqrt(hs)) over t2 <= t (zero above the diagonal). With a dropout mask
// (B, NH, T, T; entries 0 or 1/(1-p)), att_dropped (B, NH, T, T) = att * mask is what weighs the
// values; with a null mask att_dropped is unused (may be null). out (B, T, C) = heads side by side.
void AttentionForward(const float* qkv, const float* mask, int B, int T, int C, int NH, float* att,
                      float* att_dropped, float* out, ThreadPool* pool);
// dout (B, T, C) -> dqkv (B, T, 3C), overwritten. datt (B, NH, T, T) is scratch.
void AttentionBackward(const float* dout, const float* qkv, const float* att,
                       const float* att_dropped, const float* mask, int B, int T, int C, int NH,
                       float* datt, float* dqkv, ThreadPool* pool);

// GELU, tanh approximation: out = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))). inp, out,
// tanh_out (n); tanh_out keeps the tanh values for the backward.
void GeluForward(const float* inp, size_t n, float* out, float* tanh_out, ThreadPool* pool);
// dinp (n) = dout * gelu'(inp), overwritten; dinp may alias dout.
void GeluBackward(const float* dout, const float* inp, const float* tanh_values, size_t n,
                  float* dinp, ThreadPool* pool);

// Per row of logits (N, V): probs = softmax(row), losses[row] = -log probs[targets[row]]. probs may
// alias logits. Returns the mean of losses (N). targets (N) in [0, V).
float SoftmaxCrossEntropyForward(const float* logits, const int32_t* targets, int N, int V,
                                 float* probs, float* losses, ThreadPool* pool);
// d(scale * sum of losses)/d(logits): dlogits (N, V) = scale * (probs - onehot(targets)),
// overwritten; dlogits may alias probs.
void SoftmaxCrossEntropyBackward(const float* probs, const int32_t* targets, int N, int V,
                                 float scale, float* dlogits, ThreadPool* pool);

// mask (n) = 1/(1-p) where kept, 0 where dropped, each element dropped with probability p by a
// hash of (seed, stream, index) alone: the same arguments give the same mask on any thread count.
void DropoutMask(uint64_t seed, uint64_t stream, float p, size_t n, float* mask, ThreadPool* pool);

// out (n) = a + b * mask (mask may be null for none); out may alias a.
void ResidualForward(const float* a, const float* b, const float* mask, size_t n, float* out,
                     ThreadPool* pool);

// out (n) = x * mask; out may alias x.
void Multiply(const float* x, const float* mask, size_t n, float* out, ThreadPool* pool);

}  // namespace psrv

#endif  // PSRV_WORKER_MODEL_GPT_KERNELS_H_
