// Tests of ThreadPool: every chunk runs exactly once, on back-to-back loops and after the workers
// have gone to sleep.
#include "common/thread_pool.h"

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace psrv {
namespace {

// Runs ParallelFor(n, grain) and checks that the chunks are exactly [i*grain, ...) once each.
void CheckCoverage(ThreadPool* pool, int64_t n, int64_t grain) {
  std::vector<std::atomic<int>> hits(n);
  std::atomic<int64_t> calls{0};
  ParallelFor(pool, n, grain, [&](int64_t begin, int64_t end) {
    ASSERT_EQ(begin % grain, 0) << "n " << n << " grain " << grain;
    ASSERT_EQ(end, std::min(n, begin + grain)) << "n " << n << " grain " << grain;
    for (int64_t i = begin; i < end; ++i) hits[i].fetch_add(1);
    calls.fetch_add(1);
  });
  for (int64_t i = 0; i < n; ++i) ASSERT_EQ(hits[i].load(), 1) << "n " << n << " grain " << grain;
  EXPECT_EQ(calls.load(), n == 0 ? 0 : (n + grain - 1) / grain);
}

TEST(ThreadPoolTest, EveryChunkRunsOnce) {
  for (int threads : {1, 2, 3, 8}) {
    ThreadPool pool(threads);
    EXPECT_EQ(pool.threads(), threads);
    for (int64_t n : {0, 1, 2, 7, 64, 1000}) {
      for (int64_t grain : {1, 3, 64, 5000}) CheckCoverage(&pool, n, grain);
    }
  }
  CheckCoverage(nullptr, 100, 7);
}

TEST(ThreadPoolTest, ManyLoopsBackToBack) {
  ThreadPool pool(3);
  std::vector<int64_t> data(256, 0);
  for (int round = 0; round < 20000; ++round) {
    pool.ParallelFor(data.size(), 16, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) ++data[i];
    });
  }
  for (int64_t v : data) ASSERT_EQ(v, 20000);
}

TEST(ThreadPoolTest, WakesSleepingWorkers) {
  ThreadPool pool(2);
  for (int round = 0; round < 3; ++round) {
    // Long enough for the workers to stop spinning and sleep.
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    CheckCoverage(&pool, 1000, 10);
  }
}

TEST(ThreadPoolTest, WorkersThatNeverSpinSleepAndWakeForEveryLoop) {
  // spin_yields 0 (the server's optimizer pool): idle workers go straight to sleep, so every loop
  // wakes them; back-to-back loops must still each run every chunk once, whoever runs it.
  for (int threads : {2, 3}) {
    ThreadPool pool(threads, /*spin_yields=*/0);
    std::vector<int64_t> data(256, 0);
    for (int round = 0; round < 2000; ++round) {
      pool.ParallelFor(data.size(), 16, [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i) ++data[i];
      });
    }
    for (int64_t v : data) ASSERT_EQ(v, 2000);
    CheckCoverage(&pool, 1000, 10);
  }
}

TEST(ThreadPoolTest, DefaultIsOneThreadPerCore) {
  ThreadPool pool(0);
  EXPECT_EQ(pool.threads(), static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));
}

}  // namespace
}  // namespace psrv
