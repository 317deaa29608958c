// Waits for a set of asynchronous events (RPC completions, payload releases) and keeps the first
// error among them.
#ifndef PSRV_WORKER_CALL_BATCH_H_
#define PSRV_WORKER_CALL_BATCH_H_

#include <set>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"

namespace psrv {

// Thread-safe.
class CallBatch {
 public:
  explicit CallBatch(int events) : pending_(events) {}

  void Done(const absl::Status& status = absl::OkStatus()) {
    absl::MutexLock lock(&mu_);
    if (!status.ok() && first_error_.ok()) first_error_ = status;
    --pending_;
  }

  // An RPC to the server at `address` completed with `status`; UNAVAILABLE ones are remembered.
  void Done(const absl::Status& status, const std::string& address) {
    if (status.code() == absl::StatusCode::kUnavailable) {
      absl::MutexLock lock(&mu_);
      unreachable_.insert(address);
    }
    Done(status);
  }

  void MarkUnreachable(const std::string& address) {
    absl::MutexLock lock(&mu_);
    unreachable_.insert(address);
  }

  // Servers that answered UNAVAILABLE, or were marked (valid after Wait).
  std::set<std::string> unreachable() {
    absl::MutexLock lock(&mu_);
    return unreachable_;
  }

  // A C callback for grpc::Slice destructors: `arg` is the CallBatch.
  static void DoneCallback(void* arg) { static_cast<CallBatch*>(arg)->Done(); }

  // Blocks until every event is done; returns the first error.
  absl::Status Wait() {
    absl::MutexLock lock(&mu_);
    mu_.Await(absl::Condition(+[](int* pending) { return *pending == 0; }, &pending_));
    return first_error_;
  }

 private:
  absl::Mutex mu_;
  int pending_ ABSL_GUARDED_BY(mu_);
  std::set<std::string> unreachable_ ABSL_GUARDED_BY(mu_);
  absl::Status first_error_ ABSL_GUARDED_BY(mu_);
};

}  // namespace psrv

#endif  // PSRV_WORKER_CALL_BATCH_H_
