// The Replicator over gRPC: a primary's Replicate and InstallShard calls to one backup server, the
// payloads sent from the shard's buffers without copies (common/wire.h), each call bounded by a
// deadline so that a dead backup costs seconds, not a stalled job.
#ifndef PSRV_SERVER_REPLICATION_CLIENT_H_
#define PSRV_SERVER_REPLICATION_CLIENT_H_

#include <memory>
#include <string>

#include <grpcpp/generic/generic_stub.h>

#include "absl/time/time.h"
#include "server/replicator.h"

namespace psrv {

// Thread-safe; never blocks (answers arrive on gRPC's callback threads).
class GrpcReplicator final : public Replicator {
 public:
  struct Options {
    absl::Duration replicate_timeout = absl::Seconds(2);  // One update.
    absl::Duration install_timeout = absl::Seconds(60);   // A whole shard.
  };

  GrpcReplicator(std::string address, Options options);

  const std::string& address() const override { return address_; }
  void Replicate(const ReplicateRequest& request, std::shared_ptr<PooledBuffer> gradient,
                 Done done) override;
  void Install(const InstallShardRequest& request, std::string state, Done done) override;

 private:
  // Calls `method` with `header` and `size` bytes at `data` as the payload; `owner` keeps them
  // alive and is deleted once gRPC no longer reads them.
  template <typename Owner>
  void Call(const char* method, const google::protobuf::MessageLite& header,
            std::unique_ptr<Owner> owner, const void* data, size_t size, absl::Duration timeout,
            Done done);

  const std::string address_;
  const Options options_;
  grpc::GenericStub stub_;
};

}  // namespace psrv

#endif  // PSRV_SERVER_REPLICATION_CLIENT_H_
