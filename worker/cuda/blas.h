// Matrix products on the GPU: bf16 operands, fp32 accumulation, bf16 or fp32 results, through
// cuBLASLt (with the bias, and the GELU after a Linear, fused in its epilogue) or cuBLAS's GemmEx
// (then kernels for them).
#ifndef PSRV_WORKER_CUDA_BLAS_H_
#define PSRV_WORKER_CUDA_BLAS_H_

#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <map>
#include <memory>
#include <tuple>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "worker/cuda/gemm_args.h"

namespace psrv {
namespace cuda {

struct BlasOptions {
  // cuBLASLt for unbatched products (bias fused into the epilogue); otherwise, and when cuBLASLt
  // offers no algorithm for a shape or alignment, cublasGemmEx (+ a bias kernel).
  bool use_cublaslt = true;
  // cuBLASLt workspace (32 MiB, as llm.c uses on Hopper).
  size_t workspace_bytes = 32u << 20;
};

// OK, or INVALID_ARGUMENT for a bias or epilogue the product cannot take (GemmArgs). Both Blas
// implementations (this one and the simulator's) check with it.
inline absl::Status CheckGemmEpilogue(const GemmArgs& g) {
  const bool dense_bf16 = g.beta == 0.0f && g.batch_count == 1 && g.d_type == GemmType::kBf16 &&
                          g.ldd == g.m;
  if (g.bias != nullptr && !dense_bf16) {
    return absl::InvalidArgumentError(
        "Blas::Gemm: a bias needs beta == 0, one product and a dense bf16 result");
  }
  if (g.epilogue == GemmEpilogue::kGeluAux && (!dense_bf16 || g.aux == nullptr)) {
    return absl::InvalidArgumentError(
        "Blas::Gemm: the GELU epilogue needs beta == 0, one product, a dense bf16 result and an "
        "aux result");
  }
  return absl::OkStatus();
}

// Owns a cuBLAS handle, a cuBLASLt handle and the workspace, bound to one stream. The algorithm
// cuBLASLt's heuristic picks is cached per shape. Thread-compatible.
class Blas {
 public:
  static absl::StatusOr<std::unique_ptr<Blas>> Create(cudaStream_t stream,
                                                      const BlasOptions& options);
  ~Blas();
  Blas(const Blas&) = delete;
  Blas& operator=(const Blas&) = delete;

  // Enqueues one product (gemm_args.h) on the stream. A and B bf16; D bf16 or fp32.
  // INVALID_ARGUMENT for a bias or epilogue the product cannot take (see GemmArgs).
  absl::Status Gemm(const GemmArgs& args);

  // Products that ran through cuBLASLt / through GemmEx so far (tests, benchmarks).
  int64_t lt_calls() const { return lt_calls_; }
  int64_t gemm_ex_calls() const { return gemm_ex_calls_; }
  size_t workspace_bytes() const { return options_.workspace_bytes; }
  cudaStream_t stream() const { return stream_; }

 private:
  Blas(cudaStream_t stream, const BlasOptions& options) : stream_(stream), options_(options) {}

  // OK with *ran = false when cuBLASLt has no algorithm for the product.
  absl::Status LtGemm(const GemmArgs& args, bool* ran);
  absl::Status GemmEx(const GemmArgs& args);

  // What a cuBLASLt plan depends on: shapes, types, leading dimensions, bias, alignments,
  // epilogue and whether its aux result is 16-byte aligned.
  using LtKey = std::tuple<bool, bool, int, int, int, int, int, int, int, bool, unsigned, unsigned,
                           unsigned, bool, int, bool>;
  // The descriptors and the algorithm cuBLASLt's heuristic chose for one LtKey (found == false:
  // none, the product goes to GemmEx). Built once per key: creating descriptors and running the
  // heuristic costs more host time than launching the product.
  struct LtPlan;
  struct LtPlanDeleter {
    void operator()(LtPlan* plan) const;
  };
  absl::StatusOr<LtPlan*> GetLtPlan(const GemmArgs& args);
  // This call's bias and aux pointers into the plan's descriptor.
  absl::Status SetEpiloguePointers(LtPlan* plan, const GemmArgs& args);

  cudaStream_t stream_;
  BlasOptions options_;
  cublasHandle_t handle_ = nullptr;
  cublasLtHandle_t lt_handle_ = nullptr;
  void* workspace_ = nullptr;
  std::map<LtKey, std::unique_ptr<LtPlan, LtPlanDeleter>> lt_plans_;
  int64_t lt_calls_ = 0;
  int64_t gemm_ex_calls_ = 0;
};

}  // namespace cuda
}  // namespace psrv

#endif  // PSRV_WORKER_CUDA_BLAS_H_
