// Push: the third step of a training iteration. Each shard receives its slice of the worker's flat
// gradient buffer, all shards in parallel; the slices are sent from the buffer itself.
#include <memory>
#include <vector>

#include <grpcpp/client_context.h>

#include "absl/strings/str_cat.h"
#include "common/bf16.h"
#include "common/key_range.h"
#include "common/grpc_status.h"
#include "common/wire.h"
#include "proto/parameter_server.pb.h"
#include "worker/call_batch.h"
#include "worker/parameter_client.h"

namespace psrv {

absl::Status ParameterClient::Push(uint64_t step, const float* grads, absl::Duration timeout) {
  struct Call {
    grpc::ClientContext context;
    grpc::ByteBuffer request;
    grpc::ByteBuffer response;
  };
  // BF16: the whole gradient is narrowed once into the staging buffer, and slices of it are sent.
  const bool bf16 = wire_dtype_ == BF16;
  if (bf16) FloatsToBf16(grads, num_parameters_, wire_buffer_.data());
  if (step != pushing_step_ || pushed_.size() != targets_.size()) {
    pushing_step_ = step;
    pushed_.assign(targets_.size(), 0);
  }
  std::vector<size_t> todo;
  for (size_t i = 0; i < targets_.size(); ++i) {
    if (!pushed_[i]) todo.push_back(i);
  }
  std::vector<std::unique_ptr<Call>> calls;
  // Two events per call: the RPC's completion and gRPC releasing the aliased gradient slice
  // (the buffer must not change before both, unless the call failed: see CallBatch::Wait).
  const int n = static_cast<int>(todo.size());
  auto shared_batch = std::make_shared<CallBatch>(n, n);
  CallBatch& batch = *shared_batch;
  const auto deadline = absl::ToChronoTime(absl::Now() + timeout);
  for (const size_t i : todo) {
    const Target& target = targets_[i];
    auto call = std::make_unique<Call>();
    call->context.set_deadline(deadline);
    PushRequest header;
    header.set_job_id(job_id_);
    header.set_table(target.table);
    *header.mutable_range() = target.range;
    header.set_dtype(wire_dtype_);
    header.set_step(step);
    header.set_worker_rank(worker_rank_);
    if (pulled_) header.set_base_version(pulled_versions_[i]);
    const void* payload = bf16 ? static_cast<const void*>(wire_buffer_.data() + target.flat_offset)
                               : static_cast<const void*>(grads + target.flat_offset);
    SerializeWithPayload(header, payload, RangeSize(target.range) * (bf16 ? 2 : sizeof(float)),
                         &CallBatch::ReleaseCallback, new std::shared_ptr<CallBatch>(shared_batch),
                         &call->request);
    Call* raw = call.get();
    const std::string what = absl::StrCat("push ", target.table, " to ", target.address);
    target.stub->UnaryCall(&raw->context, "/psrv.ParameterServer/Push", grpc::StubOptions(),
                           &raw->request, &raw->response,
                           [what, &batch, accepted = &pushed_[i],
                            address = target.address](grpc::Status status) {
                             // ALREADY_EXISTS: a resend of a chunk the shard already has
                             // (aggregated or applied), e.g. after a fail-over.
                             if (status.error_code() == grpc::StatusCode::ALREADY_EXISTS) {
                               status = grpc::Status::OK;
                             }
                             if (status.ok()) *accepted = 1;
                             // A push that timed out: the server may be hung; report it too.
                             if (status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) {
                               batch.MarkUnreachable(address);
                             }
                             batch.Done(FromGrpcStatus(status, what), address);
                           });
    // UnaryCall has serialized (referenced) the request; drop our reference so the slice's release
    // event fires once gRPC is done with it.
    raw->request.Clear();
    calls.push_back(std::move(call));
  }
  absl::Status status = batch.Wait();
  unreachable_ = batch.unreachable();
  return status;
}

}  // namespace psrv
