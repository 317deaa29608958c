// A thread of its own that runs closures one after another, in the order given: work that must not
// run on gRPC's callback threads (disk writes), and must not hold up whoever hands it over.
#ifndef PSRV_COMMON_WORK_QUEUE_H_
#define PSRV_COMMON_WORK_QUEUE_H_

#include <deque>
#include <functional>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace psrv {

// Thread-safe. The destructor runs what is still queued, then joins the thread.
class WorkQueue {
 public:
  WorkQueue() : thread_([this] { Loop(); }) {}
  ~WorkQueue() {
    {
      absl::MutexLock lock(&mu_);
      stop_ = true;
    }
    thread_.join();
  }
  WorkQueue(const WorkQueue&) = delete;
  WorkQueue& operator=(const WorkQueue&) = delete;

  void Run(std::function<void()> work) {
    absl::MutexLock lock(&mu_);
    queue_.push_back(std::move(work));
    ++pending_;
  }

  // Blocks until everything handed over so far has run.
  void Drain() {
    absl::MutexLock lock(&mu_);
    mu_.Await(absl::Condition(+[](int* pending) { return *pending == 0; }, &pending_));
  }

 private:
  void Loop() {
    while (true) {
      std::function<void()> work;
      {
        absl::MutexLock lock(&mu_);
        mu_.Await(absl::Condition(
            +[](WorkQueue* q) ABSL_EXCLUSIVE_LOCKS_REQUIRED(q->mu_) {
              return q->stop_ || !q->queue_.empty();
            },
            this));
        if (queue_.empty()) return;  // Stopping, and nothing left.
        work = std::move(queue_.front());
        queue_.pop_front();
      }
      work();
      absl::MutexLock lock(&mu_);
      --pending_;
    }
  }

  absl::Mutex mu_;
  std::deque<std::function<void()>> queue_ ABSL_GUARDED_BY(mu_);
  int pending_ ABSL_GUARDED_BY(mu_) = 0;  // Handed over and not finished.
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;  // Last: starts once the rest is built.
};

}  // namespace psrv

#endif  // PSRV_COMMON_WORK_QUEUE_H_
