// glibc's allocator, tuned for processes that move tensor-sized buffers: without this, every
// buffer above 128 KiB (gRPC's receive buffers, replies) is mmap'ed and unmapped per call, and
// its pages fault in again each time (shared/ENVIRONMENT.md: 2-3x slower pulls).
#ifndef PSRV_COMMON_MALLOC_TUNING_H_
#define PSRV_COMMON_MALLOC_TUNING_H_

#include <malloc.h>

#include <cstdlib>

namespace psrv {

// Call first in main(). Keeps buffers up to 32 MiB on the heap (M_MMAP_THRESHOLD) and freed
// memory up to 1 GiB in the process (M_TRIM_THRESHOLD), unless MALLOC_MMAP_THRESHOLD_ or
// MALLOC_TRIM_THRESHOLD_ say otherwise.
inline void TuneMallocForTensors() {
  if (std::getenv("MALLOC_MMAP_THRESHOLD_") == nullptr) mallopt(M_MMAP_THRESHOLD, 32 << 20);
  if (std::getenv("MALLOC_TRIM_THRESHOLD_") == nullptr) mallopt(M_TRIM_THRESHOLD, 1 << 30);
}

}  // namespace psrv

#endif  // PSRV_COMMON_MALLOC_TUNING_H_
