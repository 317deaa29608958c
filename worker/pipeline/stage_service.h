// Pipeline parallelism, part 4: the stages of a group in different ps_worker processes. Each
// worker of a pipeline job serves StageExchange (proto/pipeline.proto): tensors other stages
// stream to it land in its StageInbox, where its stage reads them (InboxLink); it streams its own
// to its neighbours (GrpcSendLink). Validation before anything is kept; memory bounded. The
// tensors' values travel as the servers' payloads do (common/wire.h): the sender's memory goes to
// gRPC without a copy, and the receiver copies them once, into the tensor it keeps.
#ifndef PSRV_WORKER_PIPELINE_STAGE_SERVICE_H_
#define PSRV_WORKER_PIPELINE_STAGE_SERVICE_H_

#include <atomic>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "proto/pipeline.grpc.pb.h"
#include "worker/pipeline/pipeline_stage.h"

namespace psrv {

// Which stream of tensors: one run of a job (its attempt, and the first step of the group's
// run), one group, the receiving stage, one kind.
struct StageStreamKey {
  std::string job_id;
  uint32_t attempt = 0;
  uint32_t group = 0;
  uint32_t to_stage = 0;
  StageTensor::Kind kind = StageTensor::ACTIVATIONS;
  uint64_t run_start = 0;

  bool operator<(const StageStreamKey& o) const {
    return std::tie(job_id, attempt, run_start, group, to_stage, kind) <
           std::tie(o.job_id, o.attempt, o.run_start, o.group, o.to_stage, o.kind);
  }
};

// The tensors sent to this worker that its stages have not read yet. Thread-safe.
class StageInbox {
 public:
  struct Options {
    // Unread tensors kept at most (a sender running far ahead, or a stage that never reads).
    size_t max_bytes = size_t{1} << 30;
    size_t max_elements = size_t{1} << 31;  // Of one tensor.
  };
  StageInbox() : StageInbox(Options()) {}
  explicit StageInbox(Options options) : options_(options) {}

  // Parses one StageTensor message, validates it and keeps it (widened to fp32): INVALID_ARGUMENT
  // (a malformed message, a bad field, or values whose size does not fit elements and dtype) or
  // RESOURCE_EXHAUSTED, keeping nothing. Nothing is allocated before the header is checked. A
  // tensor already held (a resend) is ignored. `header` receives every field but the values.
  absl::Status Deposit(grpc::ByteBuffer* message, StageTensor* header);
  // The same for a parsed message (tests; it is serialized first).
  absl::Status Deposit(const StageTensor& tensor);
  // Takes micro-batch `micro_batch` of `step` from stream `key`, waiting up to `timeout` for it:
  // DEADLINE_EXCEEDED naming what was awaited.
  absl::StatusOr<std::vector<float>> Take(const StageStreamKey& key, uint64_t step,
                                          uint32_t micro_batch, absl::Duration timeout);
  // Forgets every tensor of `job_id` runs before (`attempt`, `run_start`) (and of that run if
  // `inclusive`).
  void DropRuns(const std::string& job_id, uint32_t attempt, uint64_t run_start, bool inclusive);
  size_t bytes_held() const;

 private:
  using TensorKey = std::tuple<StageStreamKey, uint64_t, uint32_t>;  // (stream, step, micro)
  // Checks `header` and that `payload_bytes` fit it; then reserves the room its fp32 values take.
  absl::Status CheckAndReserve(const StageTensor& header, size_t payload_bytes);
  void Unreserve(size_t bytes);
  const Options options_;
  mutable absl::Mutex mu_;
  std::map<TensorKey, std::vector<float>> tensors_ ABSL_GUARDED_BY(mu_);
  size_t bytes_ ABSL_GUARDED_BY(mu_) = 0;
};

// The gRPC service, over an inbox (not owned). SendTensors reads the stream's messages as they
// came off the wire (a callback reactor over raw ByteBuffers), so the values are copied once.
class StageService final : public StageExchange::WithRawCallbackMethod_SendTensors<
                               StageExchange::Service> {
 public:
  explicit StageService(StageInbox* inbox) : inbox_(inbox) {}
  grpc::ServerReadReactor<grpc::ByteBuffer>* SendTensors(grpc::CallbackServerContext* context,
                                                         grpc::ByteBuffer* response) override;

 private:
  StageInbox* const inbox_;
};

// A stage's incoming link: reads one stream of its inbox, for the step BeginStep named.
class InboxLink : public StageLink {
 public:
  // `cancel` (not owned, may be null): once true, a Receive waiting returns CANCELLED.
  InboxLink(StageInbox* inbox, StageStreamKey key, absl::Duration timeout,
            const std::atomic<bool>* cancel = nullptr)
      : inbox_(inbox), key_(std::move(key)), timeout_(timeout), cancel_(cancel) {}
  void BeginStep(uint64_t step) override { step_ = step; }
  absl::Status Send(int micro_batch, std::vector<float> tensor) override;  // FAILED_PRECONDITION
  absl::StatusOr<std::vector<float>> Receive(int micro_batch) override;

 private:
  StageInbox* const inbox_;
  const StageStreamKey key_;
  const absl::Duration timeout_;
  const std::atomic<bool>* const cancel_;
  uint64_t step_ = 0;
};

// A stage's outgoing link: one client stream to the neighbour's StageExchange service, written by
// a thread of its own (Send queues and returns at once, so compute goes on while it travels).
// `dtype` FP32 or BF16 on the wire: FP32 values are handed to gRPC where they are (the tensor is
// freed once sent), BF16 ones narrowed into a buffer of their own. Once the stream fails, every
// Send answers its error.
class GrpcSendLink : public StageLink {
 public:
  GrpcSendLink(std::shared_ptr<grpc::Channel> channel, StageStreamKey key, DType dtype);
  ~GrpcSendLink() override;  // Finishes the stream (what was queued is sent first).
  void BeginStep(uint64_t step) override;
  absl::Status Send(int micro_batch, std::vector<float> tensor) override;
  absl::StatusOr<std::vector<float>> Receive(int micro_batch) override;  // FAILED_PRECONDITION
  // Waits until everything queued was written (or the stream failed): its status.
  absl::Status Flush();
  // OK, or why the stream failed (without waiting).
  absl::Status status();

 private:
  struct Queued {
    uint64_t step;
    int micro_batch;
    std::vector<float> tensor;
  };
  void Run();

  const std::shared_ptr<grpc::Channel> channel_;
  const StageStreamKey key_;
  const DType dtype_;
  absl::Mutex mu_;
  uint64_t step_ ABSL_GUARDED_BY(mu_) = 0;
  std::deque<Queued> queue_ ABSL_GUARDED_BY(mu_);
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool closing_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status failed_ ABSL_GUARDED_BY(mu_);
  std::thread thread_;
};

}  // namespace psrv

#endif  // PSRV_WORKER_PIPELINE_STAGE_SERVICE_H_
