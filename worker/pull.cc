// Pull: the first step of a training iteration. Every shard's current values land in the worker's
// flat parameter buffer, all shards in parallel.
#include <memory>
#include <vector>

#include <grpcpp/client_context.h>

#include "absl/strings/str_cat.h"
#include "common/key_range.h"
#include "common/grpc_status.h"
#include "common/wire.h"
#include "proto/parameter_server.pb.h"
#include "worker/call_batch.h"
#include "worker/parameter_client.h"

namespace psrv {

absl::Status ParameterClient::Pull(uint64_t step, float* params, absl::Duration timeout) {
  struct Call {
    grpc::ClientContext context;
    grpc::ByteBuffer request;
    grpc::ByteBuffer response;
  };
  std::vector<std::unique_ptr<Call>> calls;
  CallBatch batch(static_cast<int>(targets_.size()));
  const auto deadline = absl::ToChronoTime(absl::Now() + timeout);
  pulled_versions_.resize(targets_.size());
  for (size_t i = 0; i < targets_.size(); ++i) {
    const Target& target = targets_[i];
    uint64_t* version = &pulled_versions_[i];
    auto call = std::make_unique<Call>();
    call->context.set_deadline(deadline);
    PullRequest header;
    header.set_job_id(job_id_);
    header.set_table(target.table);
    *header.mutable_range() = target.range;
    header.set_dtype(wire_dtype_);
    header.set_step(step);
    header.set_worker_rank(worker_rank_);
    std::string bytes = header.SerializeAsString();
    grpc::Slice slice(bytes);
    call->request = grpc::ByteBuffer(&slice, 1);
    Call* raw = call.get();
    // The reply goes straight from gRPC's buffers into params: copied (FP32) or widened (BF16).
    const bool bf16 = wire_dtype_ == BF16;
    float* to = params + target.flat_offset;
    const size_t expected = RangeSize(target.range) * (bf16 ? 2 : sizeof(float));
    const std::string what = absl::StrCat("pull ", target.table, " from ", target.address);
    target.stub->UnaryCall(
        &raw->context, "/psrv.ParameterServer/Pull", grpc::StubOptions(), &raw->request,
        &raw->response,
        [raw, to, bf16, expected, what, version, &batch, address = target.address](
            grpc::Status status) {
          absl::Status result = FromGrpcStatus(status, what);
          if (result.ok()) {
            PullResponse reply;
            result = ParseWithPayloadPieces(&raw->response, &reply, ExpectBytes(expected, what),
                                            FloatsInto(to, bf16));
            if (result.ok()) *version = reply.version();
          }
          // A pull that timed out may be a slow step, or a hung server: the coordinator checks.
          if (status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) {
            batch.MarkUnreachable(address);
          }
          batch.Done(result, address);
        });
    calls.push_back(std::move(call));
  }
  absl::Status status = batch.Wait();
  unreachable_ = batch.unreachable();
  pulled_ = status.ok();
  return status;
}

}  // namespace psrv
