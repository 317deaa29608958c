#include "common/buffer_pool.h"

#include <algorithm>
#include <vector>

#include "gtest/gtest.h"

namespace psrv {
namespace {

TEST(BufferPoolTest, ReusesAReturnedBuffer) {
  BufferPool pool;
  char* first;
  {
    PooledBuffer buffer = pool.Acquire(1000);
    first = buffer.data();
  }
  EXPECT_EQ(pool.free_bytes(), 1000u);
  PooledBuffer again = pool.Acquire(1000);
  EXPECT_EQ(again.data(), first);
  EXPECT_EQ(pool.free_bytes(), 0u);
}

// Many large buffers of varying sizes: the pool keeps at most max_free_bytes of them (before the
// limit, it kept up to 8 of every size, here 64 x 8 MiB and more).
TEST(BufferPoolTest, KeepsAtMostMaxFreeBytes) {
  const size_t limit = 64 << 20;
  BufferPool pool(/*max_free_per_size=*/8, /*max_free_bytes=*/limit);
  std::vector<PooledBuffer> loans;
  for (size_t i = 0; i < 64; ++i) loans.push_back(pool.Acquire((4 << 20) + i * 4096));
  for (size_t i = 0; i < 64; ++i) loans.push_back(pool.Acquire((4 << 20) + i * 4096));
  loans.clear();
  EXPECT_LE(pool.free_bytes(), limit);
  EXPECT_GT(pool.free_bytes(), limit / 2);  // It does keep buffers up to the limit.
}

// A SYNC step holds all its pushes until it applies: for the 10.7M-parameter GPT that is 12
// payloads of each per-layer size per worker. The default pool keeps them all for the next step
// (it kept 8 of a size, and freed, allocated and zeroed the other 4 of each every step).
TEST(BufferPoolTest, KeepsAStepsPayloadsOfOneSizeForTheNext) {
  BufferPool pool;
  std::vector<PooledBuffer> step;
  std::vector<const char*> first;
  for (int i = 0; i < 48; ++i) {
    step.push_back(pool.Acquire(590 << 10));
    first.push_back(step.back().data());
  }
  step.clear();
  EXPECT_EQ(pool.free_bytes(), 48u * (590 << 10));
  std::vector<const char*> second;
  for (int i = 0; i < 48; ++i) {
    step.push_back(pool.Acquire(590 << 10));
    second.push_back(step.back().data());
  }
  std::sort(first.begin(), first.end());
  std::sort(second.begin(), second.end());
  EXPECT_EQ(second, first);  // Every one reused.
  EXPECT_EQ(pool.free_bytes(), 0u);
}

TEST(BufferPoolTest, ReleasedBuffersCountToo) {
  const size_t limit = 10 << 20;
  BufferPool pool(8, limit);
  std::vector<void*> released;
  for (int i = 0; i < 5; ++i) released.push_back(pool.Acquire((3 << 20) + i).Release());
  for (void* r : released) PooledBuffer::ReturnReleased(r);
  EXPECT_LE(pool.free_bytes(), limit);
  EXPECT_EQ(pool.free_bytes(), 3 * (3u << 20) + 0 + 1 + 2);
}

}  // namespace
}  // namespace psrv
