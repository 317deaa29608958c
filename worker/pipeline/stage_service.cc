#include "worker/pipeline/stage_service.h"

#include <glog/logging.h>

#include <algorithm>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/bf16.h"
#include "common/grpc_status.h"
#include "common/names.h"
#include "common/status_macros.h"

namespace psrv {
namespace {

std::string Describe(const StageStreamKey& key) {
  return absl::StrCat("job ", key.job_id, " run ", key.attempt, "/", key.run_start, " group ",
                      key.group, " stage ",
                      key.to_stage, " ", StageTensor::Kind_Name(key.kind));
}

}  // namespace

absl::Status StageInbox::Deposit(const StageTensor& tensor) {
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
  if (tensor.values().size() != tensor.elements() * width) {
    return absl::InvalidArgumentError(absl::StrCat(
        "values has ", tensor.values().size(), " bytes; ", tensor.elements(), " ",
        DType_Name(tensor.dtype()), " elements take ", tensor.elements() * width));
  }
  StageStreamKey key{tensor.job_id(), tensor.attempt(), tensor.group(), tensor.to_stage(),
                     tensor.kind(), tensor.run_start()};
  const size_t bytes = tensor.elements() * sizeof(float);
  TensorKey at{std::move(key), tensor.step(), tensor.micro_batch()};
  {
    absl::MutexLock lock(&mu_);
    if (tensors_.count(at) > 0) return absl::OkStatus();  // A resend.
    if (bytes_ + bytes > options_.max_bytes) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "this worker holds ", bytes_, " bytes of unread stage tensors; ", bytes,
          " more would pass its limit of ", options_.max_bytes));
    }
    bytes_ += bytes;  // Reserved before the (unlocked) conversion.
  }
  std::vector<float> values(tensor.elements());
  if (tensor.dtype() == FP32) {
    std::memcpy(values.data(), tensor.values().data(), bytes);
  } else {
    Bf16ToFloats(reinterpret_cast<const uint16_t*>(tensor.values().data()), values.size(),
                 values.data());
  }
  absl::MutexLock lock(&mu_);
  if (!tensors_.emplace(std::move(at), std::move(values)).second) bytes_ -= bytes;
  return absl::OkStatus();
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

grpc::Status StageService::SendTensors(grpc::ServerContext* context,
                                       grpc::ServerReader<StageTensor>* reader,
                                       SendTensorsResponse* response) {
  StageTensor tensor;
  while (reader->Read(&tensor)) {
    absl::Status kept = inbox_->Deposit(tensor);
    if (!kept.ok()) {
      return ToGrpcStatus(absl::Status(
          kept.code(), absl::StrCat("tensor ", response->received() + 1, " of the stream (step ",
                                    tensor.step(), ", micro-batch ", tensor.micro_batch(),
                                    "): ", kept.message())));
    }
    response->set_received(response->received() + 1);
  }
  return grpc::Status::OK;
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
    : stub_(StageExchange::NewStub(std::move(channel))),
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

void GrpcSendLink::Run() {
  grpc::ClientContext context;
  SendTensorsResponse response;
  std::unique_ptr<grpc::ClientWriter<StageTensor>> writer;
  StageTensor tensor;
  tensor.set_job_id(key_.job_id);
  tensor.set_attempt(key_.attempt);
  tensor.set_run_start(key_.run_start);
  tensor.set_group(key_.group);
  tensor.set_to_stage(key_.to_stage);
  tensor.set_kind(key_.kind);
  tensor.set_dtype(dtype_);
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
    if (writer == nullptr) writer = stub_->SendTensors(&context, &response);
    tensor.set_step(next.step);
    tensor.set_micro_batch(next.micro_batch);
    tensor.set_elements(next.tensor.size());
    std::string* values = tensor.mutable_values();
    if (dtype_ == BF16) {
      values->resize(next.tensor.size() * sizeof(uint16_t));
      FloatsToBf16(next.tensor.data(), next.tensor.size(),
                   reinterpret_cast<uint16_t*>(values->data()));
    } else {
      values->assign(reinterpret_cast<const char*>(next.tensor.data()),
                     next.tensor.size() * sizeof(float));
    }
    const bool written = writer->Write(tensor);
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
