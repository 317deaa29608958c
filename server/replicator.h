// Where a primary shard sends its updates: the server holding its backup. The transport is an
// interface so that shard tests use fakes; GrpcReplicator (replication_client.h) is the real one.
#ifndef PSRV_SERVER_REPLICATOR_H_
#define PSRV_SERVER_REPLICATOR_H_

#include <functional>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "common/buffer_pool.h"
#include "proto/parameter_server.pb.h"

namespace psrv {

// One backup server, shared by every shard replicated there. Implementations are thread-safe and
// never block: each call answers through `done`, exactly once, possibly before returning and
// possibly on another thread.
class Replicator {
 public:
  using Done = std::function<void(absl::Status)>;

  virtual ~Replicator() = default;

  // host:port of the backup server.
  virtual const std::string& address() const = 0;

  // ParameterServer.Replicate: one applied update, `gradient` ((request.range size) FP32) as its
  // payload. The implementation keeps `gradient` alive for as long as it reads it.
  virtual void Replicate(const ReplicateRequest& request, std::shared_ptr<PooledBuffer> gradient,
                         Done done) = 0;

  // ParameterServer.InstallShard: a full copy of a shard, `state` (checkpoint format) as its
  // payload.
  virtual void Install(const InstallShardRequest& request, std::string state, Done done) = 0;
};

}  // namespace psrv

#endif  // PSRV_SERVER_REPLICATOR_H_
