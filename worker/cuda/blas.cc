// cuBLASLt and cuBLAS GemmEx behind one call (see blas.h). The cuBLASLt path follows llm.c's
// matmul_cublaslt: bf16 A/B, fp32 compute and scale, bias in the epilogue.
#include "worker/cuda/blas.h"

#include <cstdint>

#include "absl/strings/str_cat.h"
#include "worker/cuda/cuda_status.h"
#include "worker/cuda/kernels.h"

namespace psrv {
namespace cuda {
namespace {

cudaDataType_t CudaType(GemmType type) {
  return type == GemmType::kBf16 ? CUDA_R_16BF : CUDA_R_32F;
}

size_t TypeBytes(GemmType type) { return type == GemmType::kBf16 ? 2 : 4; }

// Largest power of two <= 256 dividing both the address and the byte size of a leading
// dimension: what cuBLASLt's alignment preferences describe (its default assumes 256).
unsigned Alignment(const void* pointer, int64_t ld, size_t element_bytes) {
  const uint64_t address = reinterpret_cast<uintptr_t>(pointer);
  const uint64_t ld_bytes = static_cast<uint64_t>(ld) * element_bytes;
  unsigned alignment = 256;
  while (alignment > 1 && (address % alignment != 0 || ld_bytes % alignment != 0)) alignment /= 2;
  return alignment;
}

}  // namespace

struct Blas::LtPlan {
  bool found = false;
  cublasLtMatmulAlgo_t algo;
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, d = nullptr;
};

void Blas::LtPlanDeleter::operator()(LtPlan* plan) const {
  if (plan->d != nullptr) cublasLtMatrixLayoutDestroy(plan->d);
  if (plan->b != nullptr) cublasLtMatrixLayoutDestroy(plan->b);
  if (plan->a != nullptr) cublasLtMatrixLayoutDestroy(plan->a);
  if (plan->op != nullptr) cublasLtMatmulDescDestroy(plan->op);
  delete plan;
}

absl::StatusOr<std::unique_ptr<Blas>> Blas::Create(cudaStream_t stream,
                                                   const BlasOptions& options) {
  std::unique_ptr<Blas> blas(new Blas(stream, options));
  CUBLAS_RETURN_IF_ERROR(cublasCreate(&blas->handle_));
  CUBLAS_RETURN_IF_ERROR(cublasSetStream(blas->handle_, stream));
  CUBLAS_RETURN_IF_ERROR(cublasLtCreate(&blas->lt_handle_));
  if (options.workspace_bytes > 0) {
    CUDA_RETURN_IF_ERROR(cudaMalloc(&blas->workspace_, options.workspace_bytes));
    // GemmEx's workspace too (the products run one after another on the one stream): nothing
    // allocated behind our back, which a CUDA graph capture would refuse or keep.
    CUBLAS_RETURN_IF_ERROR(
        cublasSetWorkspace(blas->handle_, blas->workspace_, options.workspace_bytes));
  }
  return blas;
}

Blas::~Blas() {
  lt_plans_.clear();
  if (workspace_ != nullptr) cudaFree(workspace_);
  if (lt_handle_ != nullptr) cublasLtDestroy(lt_handle_);
  if (handle_ != nullptr) cublasDestroy(handle_);
}

absl::Status Blas::Gemm(const GemmArgs& g) {
  RETURN_IF_ERROR(CheckGemmEpilogue(g));
  if (g.m == 0 || g.n == 0 || g.batch_count == 0) return absl::OkStatus();
  if (options_.use_cublaslt && g.batch_count == 1 && g.k > 0) {
    bool ran = false;
    RETURN_IF_ERROR(LtGemm(g, &ran));
    if (ran) {
      ++lt_calls_;
      return absl::OkStatus();
    }
  }
  ++gemm_ex_calls_;
  return GemmEx(g);
}

absl::StatusOr<Blas::LtPlan*> Blas::GetLtPlan(const GemmArgs& g) {
  const unsigned align_a = Alignment(g.a, g.lda, 2);
  const unsigned align_b = Alignment(g.b, g.ldb, 2);
  const unsigned align_d = Alignment(g.d, g.ldd, TypeBytes(g.d_type));
  const unsigned align_bias = g.bias != nullptr ? Alignment(g.bias, 0, 1) : 256;
  const bool gelu = g.epilogue == GemmEpilogue::kGeluAux;
  // cuBLASLt wants the GELU's aux leading dimension a multiple of 8 (cublasLt.h).
  const bool aux_ok = !gelu || (Alignment(g.aux, g.ldd, 2) >= 16);
  const LtKey key{g.trans_a,
                  g.trans_b,
                  g.m,
                  g.n,
                  g.k,
                  g.lda,
                  g.ldb,
                  g.ldd,
                  static_cast<int>(g.d_type),
                  g.bias != nullptr,
                  align_a,
                  align_b,
                  align_d,
                  align_bias >= 16,
                  static_cast<int>(g.epilogue),
                  aux_ok};
  auto cached = lt_plans_.find(key);
  if (cached != lt_plans_.end()) return cached->second.get();

  std::unique_ptr<LtPlan, LtPlanDeleter> plan(new LtPlan);
  CUBLAS_RETURN_IF_ERROR(cublasLtMatmulDescCreate(&plan->op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const cublasOperation_t op_a = g.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t op_b = g.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  CUBLAS_RETURN_IF_ERROR(
      cublasLtMatmulDescSetAttribute(plan->op, CUBLASLT_MATMUL_DESC_TRANSA, &op_a, sizeof(op_a)));
  CUBLAS_RETURN_IF_ERROR(
      cublasLtMatmulDescSetAttribute(plan->op, CUBLASLT_MATMUL_DESC_TRANSB, &op_b, sizeof(op_b)));
  if (g.bias != nullptr || gelu) {
    const cublasLtEpilogue_t epilogue =
        gelu ? (g.bias != nullptr ? CUBLASLT_EPILOGUE_GELU_AUX_BIAS : CUBLASLT_EPILOGUE_GELU_AUX)
             : CUBLASLT_EPILOGUE_BIAS;
    CUBLAS_RETURN_IF_ERROR(cublasLtMatmulDescSetAttribute(plan->op, CUBLASLT_MATMUL_DESC_EPILOGUE,
                                                          &epilogue, sizeof(epilogue)));
  }
  // The heuristic sees this call's pointers; each call sets its own (LtGemm).
  RETURN_IF_ERROR(SetEpiloguePointers(plan.get(), g));
  if (gelu) {
    // The aux result is bf16 (D's type, cuBLASLt's default) with D's leading dimension.
    const int64_t aux_ld = g.ldd;
    CUBLAS_RETURN_IF_ERROR(cublasLtMatmulDescSetAttribute(
        plan->op, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, &aux_ld, sizeof(aux_ld)));
  }
  // Stored shapes: op(A) is (m, k), so A is (k, m) when transposed; likewise B.
  CUBLAS_RETURN_IF_ERROR(cublasLtMatrixLayoutCreate(&plan->a, CUDA_R_16BF, g.trans_a ? g.k : g.m,
                                                    g.trans_a ? g.m : g.k, g.lda));
  CUBLAS_RETURN_IF_ERROR(cublasLtMatrixLayoutCreate(&plan->b, CUDA_R_16BF, g.trans_b ? g.n : g.k,
                                                    g.trans_b ? g.k : g.n, g.ldb));
  CUBLAS_RETURN_IF_ERROR(cublasLtMatrixLayoutCreate(&plan->d, CudaType(g.d_type), g.m, g.n, g.ldd));

  // A bias or aux result that is not 16-byte aligned goes to GemmEx + kernels rather than risk
  // the epilogue.
  if ((g.bias == nullptr || align_bias >= 16) && aux_ok) {
    cublasLtMatmulPreference_t preference = nullptr;
    CUBLAS_RETURN_IF_ERROR(cublasLtMatmulPreferenceCreate(&preference));
    const size_t workspace = options_.workspace_bytes;
    const uint32_t alignments[4] = {align_a, align_b, align_d, align_d};
    const cublasLtMatmulPreferenceAttributes_t attributes[4] = {
        CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
        CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES};
    cublasStatus_t status = cublasLtMatmulPreferenceSetAttribute(
        preference, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace, sizeof(workspace));
    for (int i = 0; i < 4 && status == CUBLAS_STATUS_SUCCESS; ++i) {
      status = cublasLtMatmulPreferenceSetAttribute(preference, attributes[i], &alignments[i],
                                                    sizeof(alignments[i]));
    }
    cublasLtMatmulHeuristicResult_t result;
    int count = 0;
    if (status == CUBLAS_STATUS_SUCCESS) {
      status = cublasLtMatmulAlgoGetHeuristic(lt_handle_, plan->op, plan->a, plan->b, plan->d,
                                              plan->d, preference, 1, &result, &count);
    }
    cublasLtMatmulPreferenceDestroy(preference);
    // NOT_SUPPORTED: no algorithm for this product; anything else is a real failure.
    if (status != CUBLAS_STATUS_NOT_SUPPORTED) {
      CUBLAS_RETURN_IF_ERROR(status);
      if (count > 0 && result.state == CUBLAS_STATUS_SUCCESS) {
        plan->found = true;
        plan->algo = result.algo;
      }
    }
  }
  LtPlan* raw = plan.get();
  lt_plans_.emplace(key, std::move(plan));
  return raw;
}

absl::Status Blas::LtGemm(const GemmArgs& g, bool* ran) {
  *ran = false;
  ASSIGN_OR_RETURN(LtPlan * plan, GetLtPlan(g));
  if (!plan->found) return absl::OkStatus();
  RETURN_IF_ERROR(SetEpiloguePointers(plan, g));
  CUBLAS_RETURN_IF_ERROR(cublasLtMatmul(lt_handle_, plan->op, &g.alpha, g.a, plan->a, g.b, plan->b,
                                        &g.beta, g.d, plan->d, g.d, plan->d, &plan->algo,
                                        workspace_, options_.workspace_bytes, stream_));
  *ran = true;
  return absl::OkStatus();
}

absl::Status Blas::SetEpiloguePointers(LtPlan* plan, const GemmArgs& g) {
  if (g.bias != nullptr) {
    const void* bias = g.bias;
    CUBLAS_RETURN_IF_ERROR(cublasLtMatmulDescSetAttribute(
        plan->op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof(bias)));
  }
  if (g.epilogue == GemmEpilogue::kGeluAux) {
    void* aux = g.aux;
    CUBLAS_RETURN_IF_ERROR(cublasLtMatmulDescSetAttribute(
        plan->op, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, &aux, sizeof(aux)));
  }
  return absl::OkStatus();
}

absl::Status Blas::GemmEx(const GemmArgs& g) {
  const cublasOperation_t op_a = g.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t op_b = g.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  const bool gelu = g.epilogue == GemmEpilogue::kGeluAux;
  // With the GELU epilogue the product (+ bias) goes to aux, and D = gelu(aux) after it.
  void* product = gelu ? g.aux : g.d;
  if (g.batch_count == 1) {
    CUBLAS_RETURN_IF_ERROR(cublasGemmEx(handle_, op_a, op_b, g.m, g.n, g.k, &g.alpha, g.a,
                                        CUDA_R_16BF, g.lda, g.b, CUDA_R_16BF, g.ldb, &g.beta,
                                        product, CudaType(g.d_type), g.ldd, CUBLAS_COMPUTE_32F,
                                        CUBLAS_GEMM_DEFAULT));
  } else {
    CUBLAS_RETURN_IF_ERROR(cublasGemmStridedBatchedEx(
        handle_, op_a, op_b, g.m, g.n, g.k, &g.alpha, g.a, CUDA_R_16BF, g.lda, g.stride_a, g.b,
        CUDA_R_16BF, g.ldb, g.stride_b, &g.beta, g.d, CudaType(g.d_type), g.ldd, g.stride_d,
        g.batch_count, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  }
  if (g.bias != nullptr) {
    // D (m, n) column-major is row-major (n, m): the bias runs along its rows.
    CUDA_RETURN_IF_ERROR(AddBias(static_cast<const bf16*>(g.bias), g.n, g.m,
                                 static_cast<bf16*>(product), stream_));
  }
  if (gelu) {
    CUDA_RETURN_IF_ERROR(GeluForward(static_cast<const bf16*>(g.aux),
                                     static_cast<size_t>(g.m) * g.n, static_cast<bf16*>(g.d),
                                     stream_));
  }
  return absl::OkStatus();
}

}  // namespace cuda
}  // namespace psrv
