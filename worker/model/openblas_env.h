// OpenBLAS settings for the CPU models, applied by re-executing the process: OpenBLAS reads its
// environment only when it loads.
#ifndef PSRV_WORKER_MODEL_OPENBLAS_ENV_H_
#define PSRV_WORKER_MODEL_OPENBLAS_ENV_H_

namespace psrv {

// Call first in main(). For each variable that is unset:
//  - OPENBLAS_CORETYPE: OpenBLAS 0.3.21 does not recognise some virtual CPUs and falls back to SSE3
//    kernels (2-4x slower products); chosen here from the CPU's features (SkylakeX with AVX-512,
//    Haswell with AVX2).
//  - OPENBLAS_NUM_THREADS=1: the GPT splits its matrix products over its own thread pool
//    (worker/model/gpt_kernels.cc); OpenBLAS's threads would compete with it.
// sets it and re-executes /proc/self/exe with `argv` once. Returns (doing nothing more) when both
// are already set or the re-exec fails. Sets PSRV_OPENBLAS_SET to the names it set.
void ConfigureOpenBlas(char** argv);

}  // namespace psrv

#endif  // PSRV_WORKER_MODEL_OPENBLAS_ENV_H_
