// PSRV_VECTOR_CLONES: a function whose loops run over whole tensors (bf16 conversions, gradient
// norms, the optimizers, aggregation) is built twice, for x86-64 CPUs with AVX2 and for the
// x86-64 baseline (SSE2), and the CPU picks at load time (function multi-versioning; an ifunc).
// The baseline build alone runs these loops 2-3x slower: SSE2 has no 32->16-bit pack and converts
// 2 floats to doubles per instruction. AVX2 without FMA: no multiply-add is contracted, and the
// vectorized lanes are the loops' own, so both versions give the same bits (the bf16 and
// optimizer tests compare them with the scalar formulas; build with -DPSRV_NO_VECTOR_CLONES to
// test the baseline version alone on an AVX2 machine).
#ifndef PSRV_COMMON_VECTOR_CLONES_H_
#define PSRV_COMMON_VECTOR_CLONES_H_

#if defined(__x86_64__) && defined(__ELF__) && !defined(__NVCC__) && !defined(PSRV_CUDA_SIMT) && \
    !defined(PSRV_NO_VECTOR_CLONES)
#define PSRV_VECTOR_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define PSRV_VECTOR_CLONES
#endif

#endif  // PSRV_COMMON_VECTOR_CLONES_H_
