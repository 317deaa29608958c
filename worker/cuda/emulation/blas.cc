// Blas (worker/cuda/blas.h) on the CPU for the *_simt_test targets: every product runs as
// cuBLAS's column-major GEMM in plain loops (bf16 operands, double accumulation, bf16 or fp32
// result, bias on every column, the GELU epilogue). Tests only.
#include "worker/cuda/blas.h"

#include <cuda_bf16.h>

#include <cmath>
#include <cstdint>

#include "common/status_macros.h"
#include "worker/cuda/emulation/simt.h"
#include "worker/cuda/kernels.h"

namespace psrv {
namespace cuda {

struct Blas::LtPlan {};

void Blas::LtPlanDeleter::operator()(LtPlan* plan) const { delete plan; }

absl::StatusOr<std::unique_ptr<Blas>> Blas::Create(cudaStream_t stream,
                                                   const BlasOptions& options) {
  return std::unique_ptr<Blas>(new Blas(stream, options));
}

Blas::~Blas() = default;

namespace {

bool Aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// cuBLASLt's GELU epilogue: the tanh approximation, in fp32 (gelu.cu's formula).
float Gelu(float x) {
  constexpr float kGeluScale = 0.7978845608028654f;  // sqrt(2/pi)
  constexpr float kGeluCubic = 0.044715f;
  const float t = tanhf(kGeluScale * (x + kGeluCubic * x * x * x));
  return 0.5f * x * (1.0f + t);
}

void RunGemm(const GemmArgs& g, bool gelu);  // below

}  // namespace

absl::Status Blas::Gemm(const GemmArgs& g) {
  // The real Blas's contract and dispatch (blas.cc); the cuBLASLt path is assumed to accept
  // exactly the products whose operands are 16-byte aligned with leading dimensions a multiple of
  // 8 elements (what its heuristic needs for bf16 tensor cores). Both paths compute the same here.
  // The GELU epilogue: through cuBLASLt, gelu of the fp32 result (D) beside that result rounded
  // (aux); otherwise, as blas.cc's GemmEx path, the product into aux, then the GELU kernel.
  RETURN_IF_ERROR(CheckGemmEpilogue(g));
  if (g.m == 0 || g.n == 0 || g.batch_count == 0) return absl::OkStatus();
  const bool gelu = g.epilogue == GemmEpilogue::kGeluAux;
  const bool lt = options_.use_cublaslt && g.batch_count == 1 && g.k > 0 && Aligned16(g.a) &&
                  Aligned16(g.b) && Aligned16(g.d) && g.lda % 8 == 0 && g.ldb % 8 == 0 &&
                  g.ldd % 8 == 0 && (!gelu || Aligned16(g.aux));
  if (lt) {
    ++lt_calls_;
  } else {
    ++gemm_ex_calls_;
  }
  static const char kGemmTag = 0;
  if (!gelu || lt) {
    simt::Enqueue(stream_, &kGemmTag, [g, gelu] { RunGemm(g, gelu); });
    return absl::OkStatus();
  }
  GemmArgs product = g;
  product.epilogue = GemmEpilogue::kNone;
  product.d = g.aux;
  simt::Enqueue(stream_, &kGemmTag, [product] { RunGemm(product, /*gelu=*/false); });
  if (GeluForward(static_cast<const bf16*>(g.aux), static_cast<size_t>(g.m) * g.n,
                  static_cast<bf16*>(g.d), stream_) != cudaSuccess) {
    return absl::InternalError("GeluForward after the product failed");
  }
  return absl::OkStatus();
}

namespace {

// One product in loops; `gelu`: with cuBLASLt's GELU epilogue (on the fp32 value).
void RunGemm(const GemmArgs& g, bool gelu) {
  for (int batch = 0; batch < g.batch_count; ++batch) {
    const __nv_bfloat16* a = static_cast<const __nv_bfloat16*>(g.a) + batch * g.stride_a;
    const __nv_bfloat16* b = static_cast<const __nv_bfloat16*>(g.b) + batch * g.stride_b;
    for (int i = 0; i < g.m; ++i) {
      for (int j = 0; j < g.n; ++j) {
        double sum = 0.0;
        for (int p = 0; p < g.k; ++p) {
          const float op_a = __bfloat162float(g.trans_a ? a[p + static_cast<int64_t>(i) * g.lda]
                                                        : a[i + static_cast<int64_t>(p) * g.lda]);
          const float op_b = __bfloat162float(g.trans_b ? b[j + static_cast<int64_t>(p) * g.ldb]
                                                        : b[p + static_cast<int64_t>(j) * g.ldb]);
          sum += static_cast<double>(op_a) * op_b;
        }
        const int64_t index = batch * g.stride_d + i + static_cast<int64_t>(j) * g.ldd;
        if (g.d_type == GemmType::kF32) {
          float* d = static_cast<float*>(g.d) + index;
          *d = static_cast<float>(g.alpha * sum + (g.beta != 0.0f ? g.beta * *d : 0.0));
        } else {
          __nv_bfloat16* d = static_cast<__nv_bfloat16*>(g.d) + index;
          double value = g.alpha * sum + (g.beta != 0.0f ? g.beta * __bfloat162float(*d) : 0.0);
          if (g.bias != nullptr) {
            value += __bfloat162float(static_cast<const __nv_bfloat16*>(g.bias)[i]);
          }
          const float result = static_cast<float>(value);
          if (gelu) {
            const __nv_bfloat16 rounded = __float2bfloat16_rn(result);
            static_cast<__nv_bfloat16*>(g.aux)[index] = rounded;
            *d = __float2bfloat16_rn(Gelu(result));
          } else {
            *d = __float2bfloat16_rn(result);
          }
        }
      }
    }
  }
}

}  // namespace

}  // namespace cuda
}  // namespace psrv
