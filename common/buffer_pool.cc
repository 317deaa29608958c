#include "common/buffer_pool.h"

#include <utility>

namespace psrv {
namespace {

// What PooledBuffer::Release hands out: the storage and the pool it returns to.
struct ReleasedBuffer {
  BufferPool* pool;
  std::unique_ptr<std::vector<char>> storage;
};

}  // namespace

PooledBuffer::~PooledBuffer() {
  if (pool_ != nullptr && storage_ != nullptr) pool_->Return(std::move(storage_));
}

void* PooledBuffer::Release() {
  auto* released = new ReleasedBuffer{pool_, std::move(storage_)};
  pool_ = nullptr;
  size_ = 0;
  return released;
}

void PooledBuffer::ReturnReleased(void* released) {
  std::unique_ptr<ReleasedBuffer> buffer(static_cast<ReleasedBuffer*>(released));
  if (buffer->pool != nullptr) buffer->pool->Return(std::move(buffer->storage));
}

BufferPool* BufferPool::Global() {
  static BufferPool* pool = new BufferPool();
  return pool;
}

PooledBuffer BufferPool::Acquire(size_t size) {
  PooledBuffer buffer;
  buffer.pool_ = this;
  buffer.size_ = size;
  {
    absl::MutexLock lock(&mu_);
    auto it = free_.find(size);
    if (it != free_.end() && !it->second.empty()) {
      buffer.storage_ = std::move(it->second.back());
      it->second.pop_back();
      free_bytes_ -= size;
      return buffer;
    }
  }
  buffer.storage_ = std::make_unique<std::vector<char>>(size);
  return buffer;
}

void BufferPool::Return(std::unique_ptr<std::vector<char>> storage) {
  const size_t size = storage->size();
  {
    absl::MutexLock lock(&mu_);
    auto& list = free_[size];
    if (list.size() < max_free_per_size_ && size <= max_free_bytes_ - free_bytes_) {
      list.push_back(std::move(storage));
      free_bytes_ += size;
      return;
    }
  }
  storage.reset();  // Freed outside the lock.
}

size_t BufferPool::free_bytes() {
  absl::MutexLock lock(&mu_);
  return free_bytes_;
}

}  // namespace psrv
