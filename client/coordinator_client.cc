// gRPC calls behind psctl. WatchJob uses the async API on one completion queue so that the calling
// thread can both read the stream and poll for Ctrl-C or dead local processes, without threads.
#include "client/coordinator_client.h"

#include <chrono>
#include <optional>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/channel.h"

namespace psrv {
namespace {

std::chrono::system_clock::time_point Deadline(absl::Duration timeout) {
  return absl::ToChronoTime(absl::Now() + timeout);
}

std::string CodeName(grpc::StatusCode code) {
  return absl::StatusCodeToString(static_cast<absl::StatusCode>(code));
}

}  // namespace

absl::Status RpcError(const std::string& what, const grpc::Status& status,
                      const std::string& hint) {
  std::string message =
      absl::StrCat(what, ": ", CodeName(status.error_code()), ": ", status.error_message());
  if (!hint.empty()) absl::StrAppend(&message, "\n  ", hint);
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()), message);
}

std::shared_ptr<grpc::Channel> MakeChannel(const std::string& address) {
  return CreateChannel(address);
}

CoordinatorClient::CoordinatorClient(CoordinatorClientOptions options)
    : options_(std::move(options)), stub_(Coordinator::NewStub(MakeChannel(options_.address))) {}

void CoordinatorClient::PrepareContext(grpc::ClientContext* context) const {
  context->set_deadline(Deadline(options_.timeout));
}

absl::Status CoordinatorClient::Error(const std::string& what, const grpc::Status& status) const {
  std::string hint;
  if (status.error_code() == grpc::StatusCode::UNAVAILABLE) {
    hint = absl::StrCat("cannot reach the coordinator at ", options_.address,
                        ": is ps_coordinator running? (--coordinator / PSCTL_COORDINATOR)");
  } else if (status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) {
    hint = absl::StrCat("the coordinator at ", options_.address, " did not answer within ",
                        absl::FormatDuration(options_.timeout), " (--timeout)");
  }
  return RpcError(what, status, hint);
}

absl::StatusOr<std::string> CoordinatorClient::SubmitJob(const JobSpec& spec) {
  grpc::ClientContext context;
  PrepareContext(&context);
  SubmitJobRequest request;
  *request.mutable_spec() = spec;
  SubmitJobResponse response;
  grpc::Status status = stub_->SubmitJob(&context, request, &response);
  if (!status.ok()) return Error("submit job", status);
  return response.job_id();
}

absl::StatusOr<JobStatus> CoordinatorClient::GetJob(const std::string& job_id) {
  grpc::ClientContext context;
  PrepareContext(&context);
  GetJobRequest request;
  request.set_job_id(job_id);
  JobStatus response;
  grpc::Status status = stub_->GetJob(&context, request, &response);
  if (!status.ok()) return Error(absl::StrCat("get job ", job_id), status);
  return response;
}

absl::StatusOr<std::vector<JobStatus>> CoordinatorClient::ListJobs() {
  grpc::ClientContext context;
  PrepareContext(&context);
  ListJobsResponse response;
  grpc::Status status = stub_->ListJobs(&context, ListJobsRequest(), &response);
  if (!status.ok()) return Error("list jobs", status);
  return std::vector<JobStatus>(response.jobs().begin(), response.jobs().end());
}

absl::StatusOr<JobStatus> CoordinatorClient::CancelJob(const std::string& job_id) {
  grpc::ClientContext context;
  PrepareContext(&context);
  CancelJobRequest request;
  request.set_job_id(job_id);
  JobStatus response;
  grpc::Status status = stub_->CancelJob(&context, request, &response);
  if (!status.ok()) return Error(absl::StrCat("cancel job ", job_id), status);
  return response;
}

absl::StatusOr<CheckpointManifest> CoordinatorClient::CheckpointJob(const std::string& job_id,
                                                                    const std::string& directory) {
  grpc::ClientContext context;
  context.set_deadline(Deadline(std::max(options_.timeout, absl::Minutes(2))));
  CheckpointJobRequest request;
  request.set_job_id(job_id);
  request.set_directory(directory);
  CheckpointManifest response;
  grpc::Status status = stub_->CheckpointJob(&context, request, &response);
  if (!status.ok()) return Error(absl::StrCat("checkpoint job ", job_id), status);
  return response;
}

absl::StatusOr<std::vector<NodeInfo>> CoordinatorClient::ListNodes() {
  grpc::ClientContext context;
  PrepareContext(&context);
  ListNodesResponse response;
  grpc::Status status = stub_->ListNodes(&context, ListNodesRequest(), &response);
  if (!status.ok()) return Error("list nodes", status);
  return std::vector<NodeInfo>(response.nodes().begin(), response.nodes().end());
}

absl::StatusOr<JobStatus> CoordinatorClient::WatchJob(
    const std::string& job_id, const std::function<void(const JobStatus&)>& on_status,
    const std::function<absl::Status()>& poll, absl::Duration poll_interval) {
  enum Tag : intptr_t { kStart = 1, kRead = 2, kFinish = 3 };
  grpc::ClientContext context;
  grpc::CompletionQueue cq;
  WatchJobRequest request;
  request.set_job_id(job_id);
  std::unique_ptr<grpc::ClientAsyncReader<JobStatus>> reader =
      stub_->PrepareAsyncWatchJob(&context, request, &cq);
  reader->StartCall(reinterpret_cast<void*>(kStart));

  JobStatus incoming;
  std::optional<JobStatus> last;
  grpc::Status final_status;
  absl::Status aborted;
  bool finished = false;
  absl::Time next_poll = absl::Now() + poll_interval;
  while (!finished) {
    void* tag = nullptr;
    bool ok = false;
    const auto result = cq.AsyncNext(&tag, &ok, absl::ToChronoTime(next_poll));
    if (result == grpc::CompletionQueue::SHUTDOWN) break;
    if (result == grpc::CompletionQueue::GOT_EVENT) {
      switch (static_cast<Tag>(reinterpret_cast<intptr_t>(tag))) {
        case kStart:
        case kRead:
          if (tag == reinterpret_cast<void*>(kRead) && ok) {
            last = incoming;
            if (on_status) on_status(*last);
            // The job is over: stop here rather than trust the server to close the stream.
            if (IsTerminal(last->state())) context.TryCancel();
          }
          if (ok) {
            reader->Read(&incoming, reinterpret_cast<void*>(kRead));
          } else {
            reader->Finish(&final_status, reinterpret_cast<void*>(kFinish));
          }
          break;
        case kFinish:
          finished = true;
          break;
      }
    }
    if (absl::Now() >= next_poll) {
      if (poll && aborted.ok()) {
        aborted = poll();
        if (!aborted.ok()) context.TryCancel();
      }
      next_poll = absl::Now() + poll_interval;
    }
  }
  cq.Shutdown();
  void* tag;
  bool ok;
  while (cq.Next(&tag, &ok)) {
  }

  if (!aborted.ok()) return aborted;
  if (last.has_value() && IsTerminal(last->state())) return *last;
  if (!final_status.ok()) return Error(absl::StrCat("watch job ", job_id), final_status);
  if (last.has_value()) {
    return absl::UnavailableError(absl::StrCat("watch job ", job_id,
                                               ": the coordinator closed the stream while the job "
                                               "was still ",
                                               JobState_Name(last->state())));
  }
  return absl::UnavailableError(
      absl::StrCat("watch job ", job_id, ": the coordinator sent no status"));
}

absl::StatusOr<ServerStatus> GetServerStatus(const std::string& address, const std::string& job_id,
                                             absl::Duration timeout) {
  std::unique_ptr<Admin::Stub> stub = Admin::NewStub(MakeChannel(address));
  grpc::ClientContext context;
  context.set_deadline(Deadline(timeout));
  GetStatusRequest request;
  request.set_job_id(job_id);
  ServerStatus response;
  grpc::Status status = stub->GetStatus(&context, request, &response);
  if (!status.ok()) {
    std::string hint;
    if (status.error_code() == grpc::StatusCode::UNAVAILABLE) {
      hint = absl::StrCat("is the ps_server at ", address, " running?");
    }
    return RpcError(absl::StrCat("get status of server ", address), status, hint);
  }
  return response;
}

}  // namespace psrv
