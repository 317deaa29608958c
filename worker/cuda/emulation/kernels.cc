// The launchers of worker/cuda/kernels.h as plain CPU loops with the kernels' contracts (same
// inputs, outputs, dtypes and roundings), for //worker/cuda:gpt_cuda_emulated_test, which runs the
// GPU model's host code on the CPU. They check the wiring of gpt_cuda.cc and layers.cc, not the
// .cu files themselves (kernels_test does that on a GPU). Tests only.
#include "worker/cuda/kernels.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace psrv {
namespace cuda {
namespace {

float F(bf16 x) { return __bfloat162float(x); }
bf16 B(float x) { return __float2bfloat16_rn(x); }

uint64_t SplitMix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

float Scale(const Dropout& d, uint64_t i) {
  if (!d.enabled) return 1.0f;
  return (SplitMix64(d.base + i) >> 32) < d.threshold ? 0.0f : d.keep_scale;
}

constexpr float kGeluScale = 0.7978845608028654f;
constexpr float kGeluCubic = 0.044715f;

}  // namespace

Dropout MakeDropout(uint64_t seed, uint64_t stream, float p) {
  Dropout d;
  if (!(p > 0.0f)) return d;
  d.enabled = true;
  d.base = SplitMix64(seed ^ SplitMix64(stream ^ 0x243f6a8885a308d3ULL));
  d.threshold = static_cast<uint64_t>(static_cast<double>(p) * 4294967296.0);
  d.keep_scale = 1.0f / (1.0f - p);
  return d;
}

cudaError_t DropoutMask(const Dropout& dropout, size_t n, float* mask, cudaStream_t) {
  for (size_t i = 0; i < n; ++i) mask[i] = Scale(dropout, i);
  return cudaSuccess;
}

cudaError_t ToBf16(const float* x, const Dropout& dropout, size_t n, bf16* out, cudaStream_t) {
  for (size_t i = 0; i < n; ++i) out[i] = B(x[i] * Scale(dropout, i));
  return cudaSuccess;
}

cudaError_t DropoutBf16(const bf16* x, const Dropout& dropout, size_t n, bf16* out, cudaStream_t) {
  for (size_t i = 0; i < n; ++i) out[i] = B(F(x[i]) * Scale(dropout, i));
  return cudaSuccess;
}

cudaError_t EmbeddingForward(const int32_t* tokens, const float* wte, const float* wpe, int Bn,
                             int T, int C, const Dropout& dropout, float* out, cudaStream_t) {
  const size_t n = static_cast<size_t>(Bn) * T * C;
  for (size_t i = 0; i < n; ++i) {
    const size_t bt = i / C;
    const int c = static_cast<int>(i % C), t = static_cast<int>(bt % T);
    const float v =
        wte[static_cast<size_t>(tokens[bt]) * C + c] + wpe[static_cast<size_t>(t) * C + c];
    out[i] = dropout.enabled ? v * Scale(dropout, i) : v;
  }
  return cudaSuccess;
}

cudaError_t EmbeddingBackwardWte(const float* dout, const Dropout& dropout,
                                 const int32_t* bucket_tokens, const int32_t* bucket_starts,
                                 const int32_t* bucket_positions, int num_buckets, int C,
                                 float* dwte, cudaStream_t) {
  for (int j = 0; j < num_buckets; ++j) {
    for (int c = 0; c < C; ++c) {
      float sum = 0.0f;
      for (int k = bucket_starts[j]; k < bucket_starts[j + 1]; ++k) {
        const size_t i = static_cast<size_t>(bucket_positions[k]) * C + c;
        sum += dout[i] * Scale(dropout, i);
      }
      dwte[static_cast<size_t>(bucket_tokens[j]) * C + c] += sum;
    }
  }
  return cudaSuccess;
}

cudaError_t EmbeddingBackwardWpe(const float* dout, const Dropout& dropout, int Bn, int T, int C,
                                 float* dwpe, cudaStream_t) {
  const size_t TC = static_cast<size_t>(T) * C;
  for (size_t tc = 0; tc < TC; ++tc) {
    float sum = 0.0f;
    for (int b = 0; b < Bn; ++b) sum += dout[b * TC + tc] * Scale(dropout, b * TC + tc);
    dwpe[tc] = sum;
  }
  return cudaSuccess;
}

cudaError_t LayerNormForward(const float* inp, const float* weight, const float* bias, int N, int C,
                             bf16* out, float* mean, float* rstd, cudaStream_t) {
  for (int r = 0; r < N; ++r) {
    const float* x = inp + static_cast<size_t>(r) * C;
    float sum = 0.0f;
    for (int c = 0; c < C; ++c) sum += x[c];
    const float m = sum / C;
    float sq = 0.0f;
    for (int c = 0; c < C; ++c) sq += (x[c] - m) * (x[c] - m);
    const float s = 1.0f / std::sqrt(sq / C + 1e-5f);
    for (int c = 0; c < C; ++c) {
      out[static_cast<size_t>(r) * C + c] = B((x[c] - m) * s * weight[c] + bias[c]);
    }
    mean[r] = m;
    rstd[r] = s;
  }
  return cudaSuccess;
}

size_t LayerNormBackwardScratch(int N, int C) { return 2 * static_cast<size_t>(N) * C; }

cudaError_t LayerNormBackward(const bf16* dout, const float* inp, const float* weight,
                              const float* mean, const float* rstd, int N, int C, float* dinp,
                              float* dweight, float* dbias, float* scratch, cudaStream_t) {
  // Poison the scratch: the model must not rely on its contents.
  std::fill(scratch, scratch + LayerNormBackwardScratch(N, C), std::nanf(""));
  std::fill(dweight, dweight + C, 0.0f);
  std::fill(dbias, dbias + C, 0.0f);
  for (int r = 0; r < N; ++r) {
    const bf16* d = dout + static_cast<size_t>(r) * C;
    const float* x = inp + static_cast<size_t>(r) * C;
    float dnorm_mean = 0.0f, dnorm_norm_mean = 0.0f;
    for (int c = 0; c < C; ++c) {
      const float norm = (x[c] - mean[r]) * rstd[r];
      dnorm_mean += weight[c] * F(d[c]);
      dnorm_norm_mean += weight[c] * F(d[c]) * norm;
      dweight[c] += F(d[c]) * norm;
      dbias[c] += F(d[c]);
    }
    dnorm_mean /= C;
    dnorm_norm_mean /= C;
    for (int c = 0; c < C; ++c) {
      const float norm = (x[c] - mean[r]) * rstd[r];
      dinp[static_cast<size_t>(r) * C + c] +=
          rstd[r] * (weight[c] * F(d[c]) - dnorm_mean - norm * dnorm_norm_mean);
    }
  }
  return cudaSuccess;
}

cudaError_t ResidualForward(const float* a, const bf16* b, const Dropout& dropout, size_t n,
                            float* out, cudaStream_t) {
  for (size_t i = 0; i < n; ++i) out[i] = a[i] + F(b[i]) * Scale(dropout, i);
  return cudaSuccess;
}

cudaError_t AddBias(const bf16* bias, int N, int OC, bf16* out, cudaStream_t) {
  for (size_t i = 0; i < static_cast<size_t>(N) * OC; ++i) out[i] = B(F(out[i]) + F(bias[i % OC]));
  return cudaSuccess;
}

size_t BiasBackwardScratch(int N, int OC) { return static_cast<size_t>(N) * OC; }

cudaError_t BiasBackward(const bf16* dout, int N, int OC, float* dbias, float* scratch,
                         cudaStream_t) {
  std::fill(scratch, scratch + BiasBackwardScratch(N, OC), std::nanf(""));
  for (int c = 0; c < OC; ++c) {
    float sum = 0.0f;
    for (int r = 0; r < N; ++r) sum += F(dout[static_cast<size_t>(r) * OC + c]);
    dbias[c] = sum;
  }
  return cudaSuccess;
}

cudaError_t GeluForward(const bf16* inp, size_t n, bf16* out, cudaStream_t) {
  for (size_t i = 0; i < n; ++i) {
    const float x = F(inp[i]);
    out[i] = B(0.5f * x * (1.0f + std::tanh(kGeluScale * (x + kGeluCubic * x * x * x))));
  }
  return cudaSuccess;
}

cudaError_t GeluBackward(const bf16* dout, const bf16* inp, size_t n, bf16* dinp, cudaStream_t) {
  for (size_t i = 0; i < n; ++i) {
    const float x = F(inp[i]);
    const float t = std::tanh(kGeluScale * (x + kGeluCubic * x * x * x));
    const float local = 0.5f * (1.0f + t) +
                        0.5f * x * (1.0f - t * t) * kGeluScale * (1.0f + 3.0f * kGeluCubic * x * x);
    dinp[i] = B(F(dout[i]) * local);
  }
  return cudaSuccess;
}

cudaError_t SplitHeads(const bf16* in, int Bn, int T, int NH, int hs, int row_stride, bf16* out,
                       cudaStream_t) {
  for (int b = 0; b < Bn; ++b) {
    for (int h = 0; h < NH; ++h) {
      for (int t = 0; t < T; ++t) {
        for (int d = 0; d < hs; ++d) {
          out[((static_cast<size_t>(b) * NH + h) * T + t) * hs + d] =
              in[(static_cast<size_t>(b) * T + t) * row_stride + h * hs + d];
        }
      }
    }
  }
  return cudaSuccess;
}

cudaError_t MergeHeads(const bf16* in, int Bn, int T, int NH, int hs, int row_stride, bf16* out,
                       cudaStream_t) {
  for (int b = 0; b < Bn; ++b) {
    for (int h = 0; h < NH; ++h) {
      for (int t = 0; t < T; ++t) {
        for (int d = 0; d < hs; ++d) {
          out[(static_cast<size_t>(b) * T + t) * row_stride + h * hs + d] =
              in[((static_cast<size_t>(b) * NH + h) * T + t) * hs + d];
        }
      }
    }
  }
  return cudaSuccess;
}

cudaError_t CausalSoftmaxForward(const float* preatt, int BH, int T, const Dropout& dropout,
                                 bf16* att, bf16* att_dropped, cudaStream_t) {
  for (size_t row = 0; row < static_cast<size_t>(BH) * T; ++row) {
    const int t = static_cast<int>(row % T);
    const float* x = preatt + row * T;
    float max = -INFINITY, sum = 0.0f;
    for (int t2 = 0; t2 <= t; ++t2) max = std::max(max, x[t2]);
    for (int t2 = 0; t2 <= t; ++t2) sum += std::exp(x[t2] - max);
    for (int t2 = 0; t2 < T; ++t2) {
      const bf16 a = B(t2 <= t ? std::exp(x[t2] - max) / sum : 0.0f);
      att[row * T + t2] = a;
      if (dropout.enabled) att_dropped[row * T + t2] = B(F(a) * Scale(dropout, row * T + t2));
    }
  }
  return cudaSuccess;
}

cudaError_t CausalSoftmaxBackward(const float* datt, const bf16* att, int BH, int T, float scale,
                                  const Dropout& dropout, bf16* dpreatt, cudaStream_t) {
  for (size_t row = 0; row < static_cast<size_t>(BH) * T; ++row) {
    const int t = static_cast<int>(row % T);
    const size_t o = row * T;
    float dot = 0.0f;
    for (int t2 = 0; t2 <= t; ++t2) dot += F(att[o + t2]) * datt[o + t2] * Scale(dropout, o + t2);
    for (int t2 = 0; t2 < T; ++t2) {
      dpreatt[o + t2] = B(
          t2 <= t ? scale * F(att[o + t2]) * (datt[o + t2] * Scale(dropout, o + t2) - dot) : 0.0f);
    }
  }
  return cudaSuccess;
}

cudaError_t SoftmaxCrossEntropy(const float* logits, const int32_t* targets, int N, int V,
                                float dscale, float* losses, bf16* dlogits, cudaStream_t) {
  for (int r = 0; r < N; ++r) {
    const float* x = logits + static_cast<size_t>(r) * V;
    float max = -INFINITY, sum = 0.0f;
    for (int v = 0; v < V; ++v) max = std::max(max, x[v]);
    for (int v = 0; v < V; ++v) sum += std::exp(x[v] - max);
    losses[r] = std::log(sum) + max - x[targets[r]];
    if (dlogits == nullptr) continue;
    for (int v = 0; v < V; ++v) {
      const float p = std::exp(x[v] - max) / sum;
      dlogits[static_cast<size_t>(r) * V + v] = B(dscale * (p - (v == targets[r] ? 1.0f : 0.0f)));
    }
  }
  return cudaSuccess;
}

}  // namespace cuda
}  // namespace psrv
