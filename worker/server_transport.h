// The RPCs a worker makes to one parameter server, asynchronous: pulls and pushes of tensor
// payloads (without copies: common/wire.h) and step commits. CreateGrpcServerTransport is the real
// one; ResilientClient's tests put in-process fakes in its place.
#ifndef PSRV_WORKER_SERVER_TRANSPORT_H_
#define PSRV_WORKER_SERVER_TRANSPORT_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "common/wire.h"
#include "proto/parameter_server.pb.h"

namespace psrv {

// Thread-safe. Callbacks run on the transport's threads (or, for a call that fails at once, maybe
// on the calling thread: callers must not hold a lock the callbacks take while starting a call).
// Destroy a transport only once every callback of its calls has run.
class ServerTransport {
 public:
  virtual ~ServerTransport() = default;

  using PullDone = std::function<void(absl::Status status, uint64_t version)>;
  using Done = std::function<void(absl::Status status)>;

  // Pulls request.range() of request.table() over connection `connection`: the reply's payload,
  // exactly `bytes` bytes (else DATA_LOSS, and `receive` is not called), is handed to `receive`
  // in pieces, in order, as the transport holds it (PayloadPiece, common/wire.h: no copy first;
  // any alignment) before `done` runs.
  virtual void Pull(const PullRequest& request, int connection, absl::Time deadline, size_t bytes,
                    PayloadPiece receive, PullDone done) = 0;

  // Pushes `bytes` of `payload`, which must stay unchanged until `released` runs: after `done`, or
  // (a call that failed on a broken connection) possibly much later, when the connection is gone.
  virtual void Push(const PushRequest& request, int connection, absl::Time deadline,
                    const void* payload, size_t bytes, Done done,
                    std::function<void()> released) = 0;

  virtual void CommitStep(const CommitStepRequest& request, absl::Time deadline, Done done) = 0;

  // Between Cork and the matching Uncork (they nest), a transport may hold small dense pulls and
  // pushes and send each connection's as one PullBatch / PushBatch call at Uncork: each RPC costs
  // tens of microseconds of CPU on both sides whatever its size, and a step of a model with many
  // small shards makes dozens. Each call keeps its own callbacks and result, as if sent alone.
  // Nothing between Cork and Uncork may wait for a call started in between. The defaults send
  // every call at once.
  virtual void Cork() {}
  virtual void Uncork() {}

  // Cancels every call in flight: their callbacks come soon, with CANCELLED or their result.
  virtual void CancelAll() = 0;
};

// Makes the transport to the server at `address`, with `connections` TCP connections.
using ServerTransportFactory =
    std::function<std::unique_ptr<ServerTransport>(const std::string& address, int connections)>;

// gRPC: one channel (its own TCP connection, or Unix socket for "unix:" addresses) per connection,
// generic stubs, tensor payloads aliased (push) or handed over from gRPC's receive buffers (pull).
// Corked, it batches dense pulls and pushes of at most kMaxBatchedBytes each (at least two to a
// connection; a single one goes as it is).
inline constexpr size_t kMaxBatchedBytes = 256 << 10;
std::unique_ptr<ServerTransport> CreateGrpcServerTransport(const std::string& address,
                                                           int connections);

}  // namespace psrv

#endif  // PSRV_WORKER_SERVER_TRANSPORT_H_
