// The model's row-major matrix products as cuBLAS calls (column-major): a pure mapping, tested on
// the CPU against a column-major reference (gemm_args_test.cc), run on the GPU by Blas (blas.h).
//
// A row-major (R, K) matrix with leading dimension K is, in the same memory, a column-major (K, R)
// one: its transpose. So out (M, N) = f(A, B) row-major is computed as out^T (N, M) column-major
// with the operands swapped.
#ifndef PSRV_WORKER_CUDA_GEMM_ARGS_H_
#define PSRV_WORKER_CUDA_GEMM_ARGS_H_

#include <cstdint>

namespace psrv {
namespace cuda {

enum class GemmType { kBf16, kF32 };

// What runs on the product before it is stored (cuBLASLt's epilogue; GemmEx + kernels otherwise).
enum class GemmEpilogue {
  kNone,     // D = product [+ bias]
  kGeluAux,  // aux = product [+ bias], D = gelu(product [+ bias]) (tanh approximation): the
             // Linear and the GELU after it, with the GELU's input kept for the backward
};

// One cuBLAS product in cuBLAS's column-major terms:
//   D (m, n) = alpha * op(A) (m, k) @ op(B) (k, n) + beta * D  [+ bias (m) on every column]
// batch_count times, operand i at base + i * stride (elements). A and B are always bf16 on the GPU
// (the CPU test reads them as fp32).
struct GemmArgs {
  bool trans_a = false;
  bool trans_b = false;
  int m = 0, n = 0, k = 0;
  const void* a = nullptr;
  int lda = 0;
  const void* b = nullptr;
  int ldb = 0;
  void* d = nullptr;
  int ldd = 0;
  GemmType d_type = GemmType::kBf16;
  float alpha = 1.0f;
  float beta = 0.0f;
  // (m), same type as D; null for none. Only with beta == 0 and batch_count == 1.
  const void* bias = nullptr;
  // kGeluAux: only with beta == 0, batch_count == 1 and a dense bf16 D (ldd == m); aux is a
  // second (m, n) bf16 result with D's leading dimension.
  GemmEpilogue epilogue = GemmEpilogue::kNone;
  void* aux = nullptr;
  int batch_count = 1;
  int64_t stride_a = 0, stride_b = 0, stride_d = 0;
};

// Several products of the same shapes, operand i of each at base + i * stride (elements), with the
// row-major names of the helpers below.
struct RowMajorBatch {
  int count = 1;
  int64_t stride_a = 0, stride_b = 0, stride_out = 0;
};

// out (M, N) = A (M, K) @ B (N, K)^T: PyTorch's Linear, out = x @ W^T with W (out, in).
GemmArgs RowMajorABt(int M, int N, int K, const void* A, const void* B, void* out, GemmType type,
                     RowMajorBatch batch = {});
// out (M, N) = A (M, K) @ B (K, N): a Linear's d(input) = d(out) @ W.
GemmArgs RowMajorAB(int M, int N, int K, const void* A, const void* B, void* out, GemmType type,
                    RowMajorBatch batch = {});
// out (M, N) = A (K, M)^T @ B (K, N): a Linear's d(W) = d(out)^T @ x.
GemmArgs RowMajorAtB(int M, int N, int K, const void* A, const void* B, void* out, GemmType type,
                     RowMajorBatch batch = {});

// Every row-major product out (M, N) = op(A) @ op(B) is run as the column-major product
// out^T (N, M) = op'(B) @ op'(A): cuBLAS's A is our B and its B our A, each transposed or not with
// its leading dimension as the helpers below say.
inline GemmArgs SwappedOperands(int M, int N, int K, const void* A, const void* B, void* out,
                                GemmType type, RowMajorBatch batch, bool trans_b_first,
                                int ld_b_first, bool trans_a_second, int ld_a_second) {
  GemmArgs g;
  g.trans_a = trans_b_first;
  g.trans_b = trans_a_second;
  g.m = N, g.n = M, g.k = K;
  g.a = B, g.lda = ld_b_first;
  g.b = A, g.ldb = ld_a_second;
  g.d = out, g.ldd = N;
  g.d_type = type;
  g.batch_count = batch.count;
  g.stride_a = batch.stride_b, g.stride_b = batch.stride_a, g.stride_d = batch.stride_out;
  return g;
}

inline GemmArgs RowMajorABt(int M, int N, int K, const void* A, const void* B, void* out,
                            GemmType type, RowMajorBatch batch) {
  // out^T (N, M) = B (N, K) @ A^T (K, M); B's memory is B^T column-major, A's is A^T.
  return SwappedOperands(M, N, K, A, B, out, type, batch, /*trans_b_first=*/true, K,
                         /*trans_a_second=*/false, K);
}

inline GemmArgs RowMajorAB(int M, int N, int K, const void* A, const void* B, void* out,
                           GemmType type, RowMajorBatch batch) {
  // out^T (N, M) = B^T (N, K) @ A^T (K, M); both memories are the transposes, as is.
  return SwappedOperands(M, N, K, A, B, out, type, batch, /*trans_b_first=*/false, N,
                         /*trans_a_second=*/false, K);
}

inline GemmArgs RowMajorAtB(int M, int N, int K, const void* A, const void* B, void* out,
                            GemmType type, RowMajorBatch batch) {
  // out^T (N, M) = B^T (N, K) @ A (K, M); A's memory (K, M) row-major is A^T column-major.
  return SwappedOperands(M, N, K, A, B, out, type, batch, /*trans_b_first=*/false, N,
                         /*trans_a_second=*/true, M);
}

}  // namespace cuda
}  // namespace psrv

#endif  // PSRV_WORKER_CUDA_GEMM_ARGS_H_
