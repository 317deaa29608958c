// A small fixed pool of threads for data-parallel loops: the GPT kernels (worker), the optimizer
// update of big shards (server).
#ifndef PSRV_COMMON_THREAD_POOL_H_
#define PSRV_COMMON_THREAD_POOL_H_

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <thread>
#include <vector>

#include "absl/functional/function_ref.h"

namespace psrv {

// Runs loops cut into fixed chunks over `threads()` threads: the caller plus threads() - 1 workers
// that it owns. Chunks go to whichever thread asks next, so a worker that the OS has not scheduled
// (the machine is busy with other processes) delays nothing: the caller runs the chunks itself.
// Idle workers spin politely (sched_yield) for a short while after each loop, then sleep on a
// condition variable; unlike OpenMP's default busy-wait they never keep a core from OpenBLAS's
// threads or from other processes (OpenMP kernels ran up to 10x slower on a shared 2-core VM).
//
// ParallelFor may be called by one thread at a time (thread-compatible).
class ThreadPool {
 public:
  // `threads` in total, the caller included; <= 0 means std::thread::hardware_concurrency().
  // `spin_yields`: how many times an idle worker checks for the next loop (sched_yield between
  // checks) before it sleeps; 0: sleeps at once (a pool whose loops come rarely, e.g. once per
  // training step, where spinning only takes CPU from other processes).
  explicit ThreadPool(int threads, int spin_yields = kDefaultSpinYields);
  // Loops that follow one another within microseconds (a model's kernels during a step): waking a
  // sleeping thread costs tens of microseconds; a sched_yield call ~0.3-1 us.
  static constexpr int kDefaultSpinYields = 2000;
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int threads() const { return threads_; }

  // Calls fn(begin, end) once for each chunk [i*grain, min(n, (i+1)*grain)) of [0, n), on any of
  // the threads and in any order, and returns when all have run. The chunks depend only on n and
  // grain (>= 1), never on the thread count.
  void ParallelFor(int64_t n, int64_t grain, absl::FunctionRef<void(int64_t, int64_t)> fn);

 private:
  // One loop. Two slots, used by alternate generations: a worker arriving late at a finished loop
  // reads the old slot while the caller fills the other one.
  struct Job {
    const absl::FunctionRef<void(int64_t, int64_t)>* fn = nullptr;
    int64_t n = 0;
    int64_t grain = 1;
    int64_t chunks = 0;
    std::atomic<int64_t> next{0};  // Next chunk to claim.
    std::atomic<int64_t> done{0};  // Chunks finished.
  };

  void RunChunks(Job& job);
  void WorkerLoop();

  const int threads_;
  const int spin_yields_;
  std::vector<std::thread> workers_;
  Job jobs_[2];
  // Workers between noticing a generation and finishing its chunks: ParallelFor returns only when
  // it is 0, so a slot is never refilled while a worker reads it.
  std::atomic<int> active_{0};

  std::mutex mu_;
  std::condition_variable wake_;
  // Loops started; written under mu_ (so that sleeping workers are woken), read without it.
  std::atomic<uint64_t> generation_{0};
  std::atomic<bool> stop_{false};  // Set by the destructor, before a last generation.
};

// ParallelFor on `pool`, or on the calling thread (chunk after chunk) when pool is null.
inline void ParallelFor(ThreadPool* pool, int64_t n, int64_t grain,
                        absl::FunctionRef<void(int64_t, int64_t)> fn) {
  if (pool != nullptr) {
    pool->ParallelFor(n, grain, fn);
    return;
  }
  if (grain < 1) grain = 1;
  for (int64_t begin = 0; begin < n; begin += grain) fn(begin, std::min(n, begin + grain));
}

}  // namespace psrv

#endif  // PSRV_COMMON_THREAD_POOL_H_
