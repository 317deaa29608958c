// ThreadPool: fixed chunks claimed dynamically, polite spinning, then sleeping.
#include "common/thread_pool.h"

#include <sched.h>

#include <algorithm>

namespace psrv {
namespace {

inline void CpuRelax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

// Pauses the i-th time round a wait loop: a few cheap spins, then yield the core.
inline void Backoff(int i) {
  if (i < 64) {
    CpuRelax();
  } else {
    sched_yield();
  }
}

}  // namespace

ThreadPool::ThreadPool(int threads, int spin_yields)
    : threads_(threads > 0 ? threads : std::max(1u, std::thread::hardware_concurrency())),
      spin_yields_(std::max(0, spin_yields)) {
  workers_.reserve(threads_ - 1);
  for (int i = 1; i < threads_; ++i) workers_.emplace_back([this] { WorkerLoop(); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_.store(true);
    generation_.fetch_add(1);
  }
  wake_.notify_all();
  for (std::thread& worker : workers_) worker.join();
}

void ThreadPool::RunChunks(Job& job) {
  int64_t finished = 0;
  while (true) {
    const int64_t chunk = job.next.fetch_add(1);
    if (chunk >= job.chunks) break;
    const int64_t begin = chunk * job.grain;
    (*job.fn)(begin, std::min(job.n, begin + job.grain));
    ++finished;
  }
  if (finished > 0) job.done.fetch_add(finished);
}

void ThreadPool::ParallelFor(int64_t n, int64_t grain,
                             absl::FunctionRef<void(int64_t, int64_t)> fn) {
  if (n <= 0) return;
  grain = std::max<int64_t>(grain, 1);
  const int64_t chunks = (n + grain - 1) / grain;
  if (threads_ == 1 || chunks == 1) {
    for (int64_t begin = 0; begin < n; begin += grain) fn(begin, std::min(n, begin + grain));
    return;
  }
  const uint64_t generation = generation_.load() + 1;
  Job& job = jobs_[generation % 2];
  job.fn = &fn;
  job.n = n;
  job.grain = grain;
  job.chunks = chunks;
  job.next.store(0);
  job.done.store(0);
  {
    std::lock_guard<std::mutex> lock(mu_);
    generation_.store(generation);
  }
  wake_.notify_all();
  RunChunks(job);
  // The chunks still running elsewhere are short: wait without sleeping, but yield the core.
  for (int i = 0; job.done.load() != chunks || active_.load() != 0; ++i) Backoff(i);
}

void ThreadPool::WorkerLoop() {
  uint64_t seen = 0;
  while (true) {
    for (int i = 0; generation_.load() == seen && i < spin_yields_; ++i) Backoff(i);
    if (generation_.load() == seen) {
      std::unique_lock<std::mutex> lock(mu_);
      wake_.wait(lock, [&] { return generation_.load() != seen; });
    }
    // Check in before reading the job: its slot cannot be refilled while active_ > 0. The
    // generation read after checking in names a slot that is complete and not being rewritten.
    active_.fetch_add(1);
    const uint64_t generation = generation_.load();
    if (stop_.load()) {
      active_.fetch_sub(1);
      return;
    }
    if (generation != seen) RunChunks(jobs_[generation % 2]);
    seen = generation;
    active_.fetch_sub(1);
  }
}

}  // namespace psrv
