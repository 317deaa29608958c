// The worker's view of the parameter servers: the flat parameter buffer (tables in shard-map order)
// and a few gRPC connections per server. Pull (pull.cc) fills the buffer from every shard in
// parallel; Push (push.cc) sends each shard its slice of the gradient buffer. Big shards travel as
// several chunks, spread over the connections, all in flight at once (one connection is latency
// bound: bench/README.md). Payloads go straight between the flat buffers and the network
// (common/wire.h): no per-call payload allocation or copy.
#ifndef PSRV_WORKER_PARAMETER_CLIENT_H_
#define PSRV_WORKER_PARAMETER_CLIENT_H_

#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/security/credentials.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "proto/types.pb.h"

namespace psrv {

// Thread-compatible: one Pull or Push at a time.
class ParameterClient {
 public:
  struct Options {
    int connections_per_server = 2;
    size_t max_chunk_bytes = 4 << 20;  // Shards larger than this travel in several chunks.
    size_t min_split_bytes = 256 << 10;  // Shards at least twice this use every connection.
    DType wire_dtype = FP32;  // FP32 or BF16 (half the bytes; servers keep fp32 master weights).
    // Null: the process's (CreateChannel, common/channel.h); else these, e.g. a benchmark's TLS.
    std::shared_ptr<grpc::ChannelCredentials> credentials;
  };

  // Every table of `shard_map` must be covered exactly by its shards.
  static absl::StatusOr<std::unique_ptr<ParameterClient>> Create(const ShardMap& shard_map,
                                                                 uint32_t worker_rank,
                                                                 const Options& options);
  static absl::StatusOr<std::unique_ptr<ParameterClient>> Create(const ShardMap& shard_map,
                                                                 uint32_t worker_rank) {
    return Create(shard_map, worker_rank, Options());
  }

  size_t num_parameters() const { return num_parameters_; }
  // Offset of a table in the flat buffer; -1 if unknown.
  int64_t TableOffset(const std::string& table) const;

  // Fills params (num_parameters floats) with the values every shard has for `step` (SYNC: after
  // step-1 was applied). All shards are pulled in parallel; the first error is returned. Each
  // shard's version is kept for the next Push (PushRequest.base_version: staleness).
  absl::Status Pull(uint64_t step, float* params, absl::Duration timeout);

  // Sends grads (num_parameters floats) for `step`, each shard its range, in parallel. Calling it
  // again for the same step (a retry after an error) sends only the chunks not yet accepted; a
  // chunk the shard already has (ALREADY_EXISTS: aggregated, or the step applied) counts as
  // accepted, so pushing a step again to a new shard map (a fail-over) is safe.
  absl::Status Push(uint64_t step, const float* grads, absl::Duration timeout);

  // Servers that answered the last Pull or Push with UNAVAILABLE, or did not answer before its
  // deadline.
  const std::set<std::string>& unreachable() const { return unreachable_; }

 private:
  // One RPC of a Pull or Push: a chunk of one shard.
  struct Target {
    std::string table;
    KeyRange range;
    uint64_t flat_offset;  // Where range.begin() of the table sits in the flat buffer.
    std::string address;
    grpc::GenericStub* stub;
  };

  ParameterClient() = default;

  std::string job_id_;
  uint32_t worker_rank_ = 0;
  DType wire_dtype_ = FP32;
  std::vector<uint16_t> wire_buffer_;  // (num_parameters) pushes narrowed to bfloat16 (BF16 wire).
  size_t num_parameters_ = 0;
  std::map<std::string, uint64_t> table_offsets_;
  // By server address: one stub (own channel, own TCP connection) per connection.
  std::map<std::string, std::vector<std::unique_ptr<grpc::GenericStub>>> stubs_;
  std::vector<Target> targets_;
  // (targets_) the version each target's shard had at the last successful Pull.
  std::vector<uint64_t> pulled_versions_;
  bool pulled_ = false;  // pulled_versions_ is set.
  std::set<std::string> unreachable_;
  uint64_t pushing_step_ = 0;
  std::vector<char> pushed_;  // (targets_) chunks of pushing_step_ the servers accepted.
};

}  // namespace psrv

#endif  // PSRV_WORKER_PARAMETER_CLIENT_H_
