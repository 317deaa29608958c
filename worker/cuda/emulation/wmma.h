// nvcuda::wmma (CUDA's warp matrix functions, <mma.h>) for kernels run by the SIMT simulator
// (emulation/simt.h): what a tensor-core kernel needs from the API, with its documented contract
// checked, so that a kernel's tiling, padding and warp synchronisation are tested on the CPU.
//
// A GPU spreads a fragment over the warp's registers in an unspecified layout; here every lane
// holds the whole tile, row-major. Kernels must therefore never index a fragment's elements (this
// type has no `x[]` / `num_elements`, so such code does not compile here). What is checked, as a
// launch error (cudaErrorLaunchFailure, the reason on stderr):
// - the pointer of load_matrix_sync / store_matrix_sync is 256-bit (32-byte) aligned;
// - ldm is a multiple of 16 bytes (8 bf16 elements, 4 floats).
// Every call is warp-collective: a lane waits until the whole warp arrived (as the CUDA
// programming guide says of the *_sync functions). store_matrix_sync writes each element from one
// lane only (element e from lane e % 32), so a lane that reads elements stored by other lanes
// without a __syncwarp() first reads stale values, as it could on a GPU.
// Products are fp32 sums of exact bf16 x bf16 products in k order; a tensor core's rounding of
// its internal sums may differ in the last bits.
#ifndef PSRV_WORKER_CUDA_EMULATION_WMMA_H_
#define PSRV_WORKER_CUDA_EMULATION_WMMA_H_

#include <cuda_bf16.h>

#include <cstdint>
#include <string>
#include <type_traits>

#include "worker/cuda/emulation/simt.h"

namespace nvcuda {
namespace wmma {

struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };

template <typename Use, int M, int N, int K, typename T, typename Layout = void>
struct fragment {
  static constexpr int kRows = std::is_same<Use, matrix_b>::value ? K : M;
  static constexpr int kCols = std::is_same<Use, matrix_a>::value ? K : N;
  T tile[kRows * kCols];  // row-major; the emulation's own, not CUDA's API
};

namespace emulation {

inline float ToFloat(float x) { return x; }
inline float ToFloat(__nv_bfloat16 x) { return __bfloat162float(x); }
inline void Convert(float x, float* out) { *out = x; }
inline void Convert(float x, __nv_bfloat16* out) { *out = __float2bfloat16_rn(x); }

template <typename T>
void Arrive(const T* p, unsigned ldm, const char* function) {
  ::psrv::simt::SyncWarp();
  if (reinterpret_cast<uintptr_t>(p) % 32 != 0) {
    ::psrv::simt::KernelFault(std::string(function) +
                              ": the pointer is not 256-bit aligned (CUDA requires it)");
  }
  if ((ldm * sizeof(T)) % 16 != 0) {
    ::psrv::simt::KernelFault(std::string(function) + ": ldm " + std::to_string(ldm) +
                              " is not a multiple of 16 bytes (CUDA requires it)");
  }
}

}  // namespace emulation

// matrix_a / matrix_b: the layout is the fragment's.
template <typename Use, int M, int N, int K, typename T, typename Layout>
void load_matrix_sync(fragment<Use, M, N, K, T, Layout>& f, const T* p, unsigned ldm) {
  static_assert(!std::is_same<Use, accumulator>::value, "an accumulator's load takes a layout_t");
  using F = fragment<Use, M, N, K, T, Layout>;
  emulation::Arrive(p, ldm, "wmma::load_matrix_sync");
  constexpr bool kRowMajor = std::is_same<Layout, row_major>::value;
  for (int r = 0; r < F::kRows; ++r) {
    for (int c = 0; c < F::kCols; ++c) {
      f.tile[r * F::kCols + c] = kRowMajor ? p[static_cast<size_t>(r) * ldm + c]
                                           : p[static_cast<size_t>(c) * ldm + r];
    }
  }
}

template <int M, int N, int K, typename T>
void load_matrix_sync(fragment<accumulator, M, N, K, T>& f, const T* p, unsigned ldm,
                      layout_t layout) {
  emulation::Arrive(p, ldm, "wmma::load_matrix_sync");
  for (int r = 0; r < M; ++r) {
    for (int c = 0; c < N; ++c) {
      f.tile[r * N + c] = layout == mem_row_major ? p[static_cast<size_t>(r) * ldm + c]
                                                  : p[static_cast<size_t>(c) * ldm + r];
    }
  }
}

template <int M, int N, int K, typename T>
void store_matrix_sync(T* p, const fragment<accumulator, M, N, K, T>& f, unsigned ldm,
                       layout_t layout) {
  emulation::Arrive(p, ldm, "wmma::store_matrix_sync");
  for (int e = ::psrv::simt::LaneId(); e < M * N; e += 32) {
    const int r = e / N, c = e % N;
    p[layout == mem_row_major ? static_cast<size_t>(r) * ldm + c
                              : static_cast<size_t>(c) * ldm + r] = f.tile[e];
  }
}

template <typename Use, int M, int N, int K, typename T, typename Layout, typename V>
void fill_fragment(fragment<Use, M, N, K, T, Layout>& f, const V& value) {
  for (T& x : f.tile) emulation::Convert(static_cast<float>(value), &x);
}

// d = a b + c (d may be c).
template <int M, int N, int K, typename T, typename LayoutA, typename LayoutB>
void mma_sync(fragment<accumulator, M, N, K, float>& d,
              const fragment<matrix_a, M, N, K, T, LayoutA>& a,
              const fragment<matrix_b, M, N, K, T, LayoutB>& b,
              const fragment<accumulator, M, N, K, float>& c) {
  ::psrv::simt::SyncWarp();
  float out[M * N];
  for (int m = 0; m < M; ++m) {
    for (int n = 0; n < N; ++n) {
      float sum = c.tile[m * N + n];
      for (int k = 0; k < K; ++k) {
        sum += emulation::ToFloat(a.tile[m * K + k]) * emulation::ToFloat(b.tile[k * N + n]);
      }
      out[m * N + n] = sum;
    }
  }
  for (int e = 0; e < M * N; ++e) d.tile[e] = out[e];
}

}  // namespace wmma
}  // namespace nvcuda

#endif  // PSRV_WORKER_CUDA_EMULATION_WMMA_H_
