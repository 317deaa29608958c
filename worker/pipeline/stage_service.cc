#include "worker/pipeline/stage_service.h"

#include <glog/logging.h>
#include <grpcpp/support/sync_stream.h>

#include <algorithm>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/bf16.h"
#include "common/grpc_status.h"
#include "common/names.h"
#include "common/status_macros.h"
#include "common/wire.h"

namespace psrv {
namespace {

std::string Describe(const StageStreamKey& key) {
  return absl::StrCat("job ", key.job_id, " run ", key.attempt, "/", key.run_start, " group ",
                      key.group, " stage ",
                      key.to_stage, " ", StageTensor::Kind_Name(key.kind));
}

}  // namespace

absl::Status StageInbox::CheckAndReserve(const StageTensor& tensor, size_t payload_bytes) {
  RETURN_IF_ERROR(CheckName("job_id", tensor.job_id()));
  if (tensor.kind() != StageTensor::ACTIVATIONS && tensor.kind() != StageTensor::GRADIENTS) {
    return absl::InvalidArgumentError(
        absl::StrCat("kind must be ACTIVATIONS or GRADIENTS; got ", tensor.kind()));
  }
  if (tensor.dtype() != FP32 && tensor.dtype() != BF16) {
    return absl::InvalidArgumentError(
        absl::StrCat("dtype must be FP32 or BF16; got ", DType_Name(tensor.dtype())));
  }
  if (tensor.elements() < 1 || tensor.elements() > options_.max_elements) {
    return absl::InvalidArgumentError(absl::StrCat(
        "elements must be in [1, ", options_.max_elements, "]; got ", tensor.elements()));
  }
  const size_t width = tensor.dtype() == FP32 ? sizeof(float) : sizeof(uint16_t);
  if (payload_bytes != tensor.elements() * width) {
    return absl::InvalidArgumentError(absl::StrCat(
        "values has ", payload_bytes, " bytes; ", tensor.elements(), " ",
        DType_Name(tensor.dtype()), " elements take ", tensor.elements() * width));
  }
  const size_t bytes = tensor.elements() * sizeof(float);
  absl::MutexLock lock(&mu_);
  if (bytes_ + bytes > options_.max_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "this worker holds ", bytes_, " bytes of unread stage tensors; ", bytes,
        " more would pass its limit of ", options_.max_bytes));
  }
  bytes_ += bytes;  // Reserved before the (unlocked) copy.
  return absl::OkStatus();
}

void StageInbox::Unreserve(size_t bytes) {
  absl::MutexLock lock(&mu_);
  bytes_ -= bytes;
}

absl::Status StageInbox::Deposit(grpc::ByteBuffer* message, StageTensor* tensor) {
  std::vector<float> values;
  std::vector<uint16_t> narrow;  // BF16 values as they came.
  size_t reserved = 0;
  absl::Status parsed =
      ParseWithPayload(message, tensor, [&](size_t size) -> absl::StatusOr<char*> {
        RETURN_IF_ERROR(CheckAndReserve(*tensor, size));
        reserved = tensor->elements() * sizeof(float);
        values.resize(tensor->elements());
        if (tensor->dtype() == FP32) return reinterpret_cast<char*>(values.data());
        narrow.resize(tensor->elements());
        return reinterpret_cast<char*>(narrow.data());
      });
  if (!parsed.ok()) {
    if (reserved > 0) Unreserve(reserved);
    return parsed;
  }
  if (tensor->dtype() == BF16) Bf16ToFloats(narrow.data(), narrow.size(), values.data());
  TensorKey at{StageStreamKey{tensor->job_id(), tensor->attempt(), tensor->group(),
                              tensor->to_stage(), tensor->kind(), tensor->run_start()},
               tensor->step(), tensor->micro_batch()};
  absl::MutexLock lock(&mu_);
  if (!tensors_.emplace(std::move(at), std::move(values)).second) {
    bytes_ -= reserved;  // A resend: the tensor held stays.
  }
  return absl::OkStatus();
}

absl::Status StageInbox::Deposit(const StageTensor& tensor) {
  grpc::Slice slice(tensor.SerializeAsString());
  grpc::ByteBuffer message(&slice, 1);
  StageTensor header;
  return Deposit(&message, &header);
}

absl::StatusOr<std::vector<float>> StageInbox::Take(const StageStreamKey& key, uint64_t step,
                                                    uint32_t micro_batch,
                                                    absl::Duration timeout) {
  const TensorKey at{key, step, micro_batch};
  absl::MutexLock lock(&mu_);
  auto arrived = [this, &at]() ABSL_SHARED_LOCKS_REQUIRED(mu_) { return tensors_.count(at) > 0; };
  if (!mu_.AwaitWithTimeout(absl::Condition(&arrived), timeout)) {
    return absl::DeadlineExceededError(absl::StrCat(
        "no tensor of micro-batch ", micro_batch, " of step ", step, " for ", Describe(key),
        " came within ", absl::FormatDuration(timeout), " (is the neighbouring stage alive?)"));
  }
  auto it = tensors_.find(at);
  std::vector<float> values = std::move(it->second);
  bytes_ -= values.size() * sizeof(float);
  tensors_.erase(it);
  return values;
}

void StageInbox::DropRuns(const std::string& job_id, uint32_t attempt, uint64_t run_start,
                          bool inclusive) {
  absl::MutexLock lock(&mu_);
  const auto run = std::make_pair(attempt, run_start);
  for (auto it = tensors_.begin(); it != tensors_.end();) {
    const StageStreamKey& key = std::get<0>(it->first);
    const auto its_run = std::make_pair(key.attempt, key.run_start);
    if (key.job_id == job_id && (its_run < run || (inclusive && its_run == run))) {
      bytes_ -= it->second.size() * sizeof(float);
      it = tensors_.erase(it);
    } else {
      ++it;
    }
  }
}

size_t StageInbox::bytes_held() const {
  absl::MutexLock lock(&mu_);
  return bytes_;
}

namespace {

// One SendTensors stream: each message read is deposited before the next is asked for; the first
// bad one ends the stream with its status.
class TensorReader : public grpc::ServerReadReactor<grpc::ByteBuffer> {
 public:
  TensorReader(StageInbox* inbox, grpc::ByteBuffer* response)
      : inbox_(inbox), response_(response) {
    StartRead(&message_);
  }

  void OnReadDone(bool ok) override {
    if (!ok) {  // The sender is done (or gone): say how many were taken.
      SendTensorsResponse reply;
      reply.set_received(received_);
      grpc::Slice slice(reply.SerializeAsString());
      *response_ = grpc::ByteBuffer(&slice, 1);
      Finish(grpc::Status::OK);
      return;
    }
    StageTensor header;
    absl::Status kept = inbox_->Deposit(&message_, &header);
    message_.Clear();
    if (!kept.ok()) {
      Finish(ToGrpcStatus(absl::Status(
          kept.code(), absl::StrCat("tensor ", received_ + 1, " of the stream (step ",
                                    header.step(), ", micro-batch ", header.micro_batch(),
                                    "): ", kept.message()))));
      return;
    }
    ++received_;
    StartRead(&message_);
  }

  void OnDone() override { delete this; }

 private:
  StageInbox* const inbox_;
  grpc::ByteBuffer* const response_;
  grpc::ByteBuffer message_;
  uint64_t received_ = 0;
};

}  // namespace

grpc::ServerReadReactor<grpc::ByteBuffer>* StageService::SendTensors(
    grpc::CallbackServerContext*, grpc::ByteBuffer* response) {
  return new TensorReader(inbox_, response);
}

absl::Status InboxLink::Send(int, std::vector<float>) {
  return absl::FailedPreconditionError("an incoming stage link cannot send");
}

absl::StatusOr<std::vector<float>> InboxLink::Receive(int micro_batch) {
  const absl::Time deadline = absl::Now() + timeout_;
  while (true) {
    const absl::Duration left = deadline - absl::Now();
    absl::StatusOr<std::vector<float>> got =
        inbox_->Take(key_, step_, static_cast<uint32_t>(micro_batch),
                     cancel_ == nullptr ? left : std::min(left, absl::Milliseconds(250)));
    if (got.ok() || !absl::IsDeadlineExceeded(got.status()) || absl::Now() >= deadline) {
      return got;
    }
    if (cancel_->load()) return absl::CancelledError("the run was cancelled");
  }
}

GrpcSendLink::GrpcSendLink(std::shared_ptr<grpc::Channel> channel, StageStreamKey key,
                           DType dtype)
    : channel_(std::move(channel)),
      key_(std::move(key)),
      dtype_(dtype),
      thread_([this] { Run(); }) {}

GrpcSendLink::~GrpcSendLink() {
  {
    absl::MutexLock lock(&mu_);
    closing_ = true;
  }
  thread_.join();
}

void GrpcSendLink::BeginStep(uint64_t step) {
  absl::MutexLock lock(&mu_);
  step_ = step;
}

absl::Status GrpcSendLink::Send(int micro_batch, std::vector<float> tensor) {
  absl::MutexLock lock(&mu_);
  if (!failed_.ok()) return failed_;
  queue_.push_back(Queued{step_, micro_batch, std::move(tensor)});
  return absl::OkStatus();
}

absl::StatusOr<std::vector<float>> GrpcSendLink::Receive(int) {
  return absl::FailedPreconditionError("an outgoing stage link cannot receive");
}

absl::Status GrpcSendLink::Flush() {
  absl::MutexLock lock(&mu_);
  auto done = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) {
    return (queue_.empty() && !writing_) || !failed_.ok();
  };
  mu_.Await(absl::Condition(&done));
  return failed_;
}

absl::Status GrpcSendLink::status() {
  absl::MutexLock lock(&mu_);
  return failed_;
}

namespace {

// The tensor memory a message aliases, freed once gRPC has sent it.
template <typename T>
void DeleteVector(void* vector) {
  delete static_cast<std::vector<T>*>(vector);
}

}  // namespace

void GrpcSendLink::Run() {
  // The stream's messages are written as raw ByteBuffers (the tensor aliased, common/wire.h) on
  // StageExchange.SendTensors; the bytes are those of a StageTensor.
  static const grpc::internal::RpcMethod kSendTensors("/psrv.StageExchange/SendTensors",
                                                      grpc::internal::RpcMethod::CLIENT_STREAMING);
  grpc::ClientContext context;
  grpc::ByteBuffer response;
  std::unique_ptr<grpc::ClientWriter<grpc::ByteBuffer>> writer;
  StageTensor header;
  header.set_job_id(key_.job_id);
  header.set_attempt(key_.attempt);
  header.set_run_start(key_.run_start);
  header.set_group(key_.group);
  header.set_to_stage(key_.to_stage);
  header.set_kind(key_.kind);
  header.set_dtype(dtype_);
  while (true) {
    Queued next;
    {
      absl::MutexLock lock(&mu_);
      auto ready = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) {
        return !queue_.empty() || closing_;
      };
      mu_.Await(absl::Condition(&ready));
      if (queue_.empty()) break;  // Closing, with everything sent.
      next = std::move(queue_.front());
      queue_.pop_front();
      writing_ = true;
    }
    if (writer == nullptr) {
      writer.reset(grpc::internal::ClientWriterFactory<grpc::ByteBuffer>::Create(
          channel_.get(), kSendTensors, &context, &response));
    }
    header.set_step(next.step);
    header.set_micro_batch(next.micro_batch);
    header.set_elements(next.tensor.size());
    grpc::ByteBuffer message;
    if (dtype_ == BF16) {
      auto* narrow = new std::vector<uint16_t>(next.tensor.size());
      FloatsToBf16(next.tensor.data(), next.tensor.size(), narrow->data());
      SerializeWithPayload(header, narrow->data(), narrow->size() * sizeof(uint16_t),
                           &DeleteVector<uint16_t>, narrow, &message);
    } else {
      auto* values = new std::vector<float>(std::move(next.tensor));
      SerializeWithPayload(header, values->data(), values->size() * sizeof(float),
                           &DeleteVector<float>, values, &message);
    }
    const bool written = writer->Write(message);
    absl::Status failed;
    if (!written) {  // The stream is broken: its status says why.
      failed = FromGrpcStatus(writer->Finish(),
                              absl::StrCat("StageExchange.SendTensors to ", Describe(key_)));
      if (failed.ok()) failed = absl::UnavailableError("the stage stream closed");
      LOG(WARNING) << failed;
    }
    absl::MutexLock lock(&mu_);
    writing_ = false;
    if (!written) {
      failed_ = failed;
      return;
    }
  }
  if (writer != nullptr) {
    writer->WritesDone();
    const grpc::Status status = writer->Finish();
    if (!status.ok()) LOG(WARNING) << "stage stream to " << Describe(key_) << ": "
                                   << status.error_message();
  }
}

}  // namespace psrv
