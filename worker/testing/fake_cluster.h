// In-process parameter servers for the worker's tests: the real ShardStore behind a fake
// ServerTransport (no gRPC, no processes), with a switch that makes a server answer UNAVAILABLE.
#ifndef PSRV_WORKER_TESTING_FAKE_CLUSTER_H_
#define PSRV_WORKER_TESTING_FAKE_CLUSTER_H_

#include <algorithm>
#include <atomic>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/buffer_pool.h"
#include "server/shard_store.h"
#include "worker/server_transport.h"

namespace psrv {

// A server in memory. `down`: every call answers UNAVAILABLE (a crashed server).
struct FakeServer {
  explicit FakeServer(ShardStore::Options options = {}) : store(std::move(options)) {}
  ShardStore store;
  std::atomic<bool> down{false};
  std::atomic<int> calls{0};
  // Calls started while their transport was corked (ServerTransport::Cork). The fake sends
  // corked calls at once all the same.
  std::atomic<int> corked_calls{0};
  // If set (before any call), sees every push as it arrives, its payload already copied.
  std::function<void(const PushRequest&)> on_push;
  // Pull replies reach the client in pieces of this many bytes (gRPC's receive buffers cut a
  // payload anywhere): odd, so that BF16 values are split between pieces.
  size_t pull_piece_bytes = 4093;
};

// The servers by address, and the transports the client makes to them. Add servers before making
// transports; thereafter thread-safe (each transport is). The cluster must outlive the transports.
class FakeCluster {
 public:
  FakeServer* Add(const std::string& address, ShardStore::Options options = {}) {
    servers_[address] = std::make_unique<FakeServer>(std::move(options));
    return servers_[address].get();
  }
  FakeServer* at(const std::string& address) { return servers_.at(address).get(); }

  ServerTransportFactory Factory() {
    return [this](const std::string& address, int) -> std::unique_ptr<ServerTransport> {
      return std::make_unique<Transport>(servers_.at(address).get());
    };
  }

 private:
  // Answers each call at most once: from the store, or CANCELLED by CancelAll first.
  class Transport : public ServerTransport {
   public:
    explicit Transport(FakeServer* server) : server_(server) {}

    // The payload is handed over in pieces of FakeServer::pull_piece_bytes.
    void Pull(const PullRequest& request, int, absl::Time, size_t bytes, PayloadPiece receive,
              PullDone done) override {
      ++server_->calls;
      if (corked_ > 0) ++server_->corked_calls;
      if (server_->down) return done(absl::UnavailableError("server down"), 0);
      auto once = Track([done](absl::Status s) { done(s, 0); });
      server_->store.Pull(request, [this, once, receive, bytes, done](
                                       absl::Status status, uint64_t version, PullPayload values) {
        if (!Claim(once)) return;
        if (status.ok() && values.size() != bytes) status = absl::DataLossError("size");
        if (status.ok()) {
          const size_t piece = std::max<size_t>(1, server_->pull_piece_bytes);
          for (size_t offset = 0; offset < bytes; offset += piece) {
            receive(values.data() + offset, std::min(piece, bytes - offset), offset);
          }
        }
        done(status, version);
      });
    }

    void Push(const PushRequest& request, int, absl::Time, const void* payload, size_t bytes,
              Done done, std::function<void()> released) override {
      ++server_->calls;
      if (corked_ > 0) ++server_->corked_calls;
      PooledBuffer copy = BufferPool::Global()->Acquire(bytes);
      std::memcpy(copy.data(), payload, bytes);
      released();
      if (server_->on_push) server_->on_push(request);
      if (server_->down) return done(absl::UnavailableError("server down"));
      auto once = Track(done);
      server_->store.Push(request, std::move(copy), [this, once, done](absl::StatusOr<uint64_t> v) {
        if (Claim(once)) done(v.status());
      });
    }

    void CommitStep(const CommitStepRequest& request, absl::Time, Done done) override {
      ++server_->calls;
      if (corked_ > 0) ++server_->corked_calls;
      if (server_->down) return done(absl::UnavailableError("server down"));
      done(server_->store.CommitStep(request));
    }

    void Cork() override { ++corked_; }
    void Uncork() override { --corked_; }

    void CancelAll() override {
      std::vector<std::shared_ptr<Pending>> pending;
      {
        absl::MutexLock lock(&mu_);
        pending.assign(pending_.begin(), pending_.end());
      }
      for (const auto& p : pending) {
        if (Claim(p)) p->cancel(absl::CancelledError("cancelled"));
      }
    }

   private:
    struct Pending {
      std::function<void(absl::Status)> cancel;
      bool answered = false;
    };
    std::shared_ptr<Pending> Track(std::function<void(absl::Status)> cancel) {
      auto p = std::make_shared<Pending>();
      p->cancel = std::move(cancel);
      absl::MutexLock lock(&mu_);
      pending_.insert(p);
      return p;
    }
    bool Claim(const std::shared_ptr<Pending>& p) {
      absl::MutexLock lock(&mu_);
      if (p->answered) return false;
      p->answered = true;
      pending_.erase(p);
      return true;
    }

    FakeServer* const server_;
    std::atomic<int> corked_{0};
    absl::Mutex mu_;
    std::set<std::shared_ptr<Pending>> pending_ ABSL_GUARDED_BY(mu_);
  };

  std::map<std::string, std::unique_ptr<FakeServer>> servers_;
};

}  // namespace psrv

#endif  // PSRV_WORKER_TESTING_FAKE_CLUSTER_H_
