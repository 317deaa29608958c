// Reusable byte buffers for tensor payloads, so that no RPC allocates a payload-sized buffer once the
// pool is warm (allocating and page-faulting big buffers per call costs 3-4x on the wire).
#ifndef PSRV_COMMON_BUFFER_POOL_H_
#define PSRV_COMMON_BUFFER_POOL_H_

#include <cstddef>
#include <memory>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"

namespace psrv {

// A buffer on loan from a BufferPool; goes back to the pool when the PooledBuffer is destroyed.
class PooledBuffer {
 public:
  PooledBuffer() = default;
  PooledBuffer(PooledBuffer&&) = default;
  PooledBuffer& operator=(PooledBuffer&&) = default;
  ~PooledBuffer();

  char* data() { return storage_ ? storage_->data() : nullptr; }
  const char* data() const { return storage_ ? storage_->data() : nullptr; }
  size_t size() const { return size_; }

  // Hands ownership to a C callback (e.g. a grpc::Slice destructor): `Release` returns the opaque
  // pointer, and `ReturnReleased(ptr)` later gives the buffer back to its pool.
  void* Release();
  static void ReturnReleased(void* released);

 private:
  friend class BufferPool;
  class BufferPool* pool_ = nullptr;
  std::unique_ptr<std::vector<char>> storage_;
  size_t size_ = 0;
};

// Thread-safe. Buffers are kept per exact size, up to `max_free_per_size` of each and
// `max_free_bytes` in all; a buffer returned beyond either limit is freed.
class BufferPool {
 public:
  static constexpr size_t kDefaultMaxFreeBytes = size_t{1} << 30;
  // A SYNC step holds all of its pushes until the step applies, and a model's layers make many
  // of one size (the 10.7M-parameter GPT: 12 chunks of each per-layer weight): a pool that kept
  // fewer than a step holds would free and allocate (and zero) the rest every step.
  static constexpr size_t kDefaultMaxFreePerSize = 64;

  explicit BufferPool(size_t max_free_per_size = kDefaultMaxFreePerSize,
                      size_t max_free_bytes = kDefaultMaxFreeBytes)
      : max_free_per_size_(max_free_per_size), max_free_bytes_(max_free_bytes) {}

  // The process-wide pool (never destroyed, so gRPC threads may return buffers at exit).
  static BufferPool* Global();

  PooledBuffer Acquire(size_t size);

  // Bytes of the buffers kept for reuse (at most max_free_bytes).
  size_t free_bytes();

 private:
  friend class PooledBuffer;
  void Return(std::unique_ptr<std::vector<char>> storage);

  const size_t max_free_per_size_;
  const size_t max_free_bytes_;
  absl::Mutex mu_;
  absl::flat_hash_map<size_t, std::vector<std::unique_ptr<std::vector<char>>>> free_
      ABSL_GUARDED_BY(mu_);
  size_t free_bytes_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace psrv

#endif  // PSRV_COMMON_BUFFER_POOL_H_
