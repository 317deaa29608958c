// Waits for a set of asynchronous events (RPC completions, payload releases) and keeps the first
// error among them.
#ifndef PSRV_WORKER_CALL_BATCH_H_
#define PSRV_WORKER_CALL_BATCH_H_

#include <memory>
#include <set>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace psrv {

// Thread-safe. Held in a shared_ptr when payload releases are counted: gRPC may release a failed
// call's payload only when its connection is torn down, after the batch's owner has moved on.
class CallBatch {
 public:
  // Waits for `calls` RPC completions and `releases` payload releases.
  explicit CallBatch(int calls, int releases = 0) : calls_(calls), releases_(releases) {}

  // An RPC completed with `status`.
  void Done(const absl::Status& status = absl::OkStatus()) {
    absl::MutexLock lock(&mu_);
    if (!status.ok() && first_error_.ok()) first_error_ = status;
    --calls_;
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

  // A C callback for grpc::Slice destructors: `arg` is a `new std::shared_ptr<CallBatch>`, which it
  // deletes.
  static void ReleaseCallback(void* arg) {
    auto* batch = static_cast<std::shared_ptr<CallBatch>*>(arg);
    {
      absl::MutexLock lock(&(*batch)->mu_);
      --(*batch)->releases_;
    }
    delete batch;
  }

  // Blocks until every RPC completed and (if all succeeded) every payload was released; returns
  // the first error. After an error, payloads still held are waited for at most
  // `release_timeout`: a call that failed on a broken connection may keep its payload until the
  // connection is gone, and gRPC does not send it any more.
  absl::Status Wait(absl::Duration release_timeout = absl::Seconds(1)) {
    absl::MutexLock lock(&mu_);
    mu_.Await(absl::Condition(+[](int* pending) { return *pending == 0; }, &calls_));
    auto released = +[](int* pending) { return *pending == 0; };
    if (first_error_.ok()) {
      mu_.Await(absl::Condition(released, &releases_));
    } else {
      mu_.AwaitWithTimeout(absl::Condition(released, &releases_), release_timeout);
    }
    return first_error_;
  }

 private:
  absl::Mutex mu_;
  int calls_ ABSL_GUARDED_BY(mu_);
  int releases_ ABSL_GUARDED_BY(mu_);
  std::set<std::string> unreachable_ ABSL_GUARDED_BY(mu_);
  absl::Status first_error_ ABSL_GUARDED_BY(mu_);
};

}  // namespace psrv

#endif  // PSRV_WORKER_CALL_BATCH_H_
