// Threads for the coordinator's calls to servers: each call runs on a thread of its own, with
// the deadline its hook sets (cluster_options.h), so a server that does not answer holds up its
// own calls only; never the coordinator's lock, nor the calls to other servers.
#ifndef PSRV_COORDINATOR_SERVER_CALLS_H_
#define PSRV_COORDINATOR_SERVER_CALLS_H_

#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace psrv {

// The calls one Tick started, so that it can wait for their replies (up to a deadline).
// Copyable: the copies count the same calls. Thread-safe.
class CallRound {
 public:
  CallRound();
  // Blocks until every call counted in the round has returned, or until `deadline`.
  void WaitUntil(absl::Time deadline) const;

 private:
  friend class ServerCalls;
  struct Pending {
    absl::Mutex mu;
    int calls ABSL_GUARDED_BY(mu) = 0;
  };
  std::shared_ptr<Pending> pending_;  // Shared with the calls' threads, which may outlive it.
};

// Runs calls on detached threads and waits for them all when stopped. Thread-safe.
class ServerCalls {
 public:
  ServerCalls() = default;
  ~ServerCalls() { Stop(); }
  ServerCalls(const ServerCalls&) = delete;
  ServerCalls& operator=(const ServerCalls&) = delete;

  // Runs `call` on a thread of its own, counted in `round` (if not null) until it returns. A
  // call may start more calls in the same round. False (nothing runs) once Stop() has begun.
  bool Start(std::function<void()> call, const CallRound* round = nullptr);

  // Starts no more calls and waits for the running ones.
  void Stop();

 private:
  absl::Mutex mu_;
  int running_ ABSL_GUARDED_BY(mu_) = 0;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
};

// `call(i)` for every i in [0, count) at once (one thread each); returns once all returned, with
// their results in the order of i.
template <typename Call>
auto CallAll(size_t count, const Call& call) -> std::vector<decltype(call(size_t{0}))> {
  std::vector<decltype(call(size_t{0}))> results(count);
  if (count == 1) {
    results[0] = call(0);
    return results;
  }
  std::vector<std::thread> threads;
  threads.reserve(count);
  for (size_t i = 0; i < count; ++i) {
    threads.emplace_back([&, i] { results[i] = call(i); });
  }
  for (std::thread& thread : threads) thread.join();
  return results;
}

// `call(address)` for every address at once, as CallAll.
template <typename Call>
auto CallEach(const std::vector<std::string>& addresses, const Call& call) {
  return CallAll(addresses.size(), [&](size_t i) { return call(addresses[i]); });
}

}  // namespace psrv

#endif  // PSRV_COORDINATOR_SERVER_CALLS_H_
