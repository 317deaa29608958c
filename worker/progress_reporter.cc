#include "worker/progress_reporter.h"

#include <algorithm>
#include <cmath>

#include <glog/logging.h>
#include <grpcpp/client_context.h>

#include "absl/time/clock.h"
#include "common/grpc_status.h"
#include "common/status_macros.h"
#include "common/utf8.h"

namespace psrv {
namespace {

// See ProgressReporter::Report.
constexpr absl::Duration kProgressReportTimeout = absl::Seconds(2);
constexpr absl::Duration kFinalReportTimeout = absl::Seconds(5);
constexpr absl::Duration kFinalReportMaxBackoff = absl::Seconds(1);

}  // namespace

ProgressReporter::~ProgressReporter() { AwaitReply(); }

void ProgressReporter::AwaitReply() {
  absl::MutexLock lock(&mu_);
  mu_.Await(absl::Condition(+[](bool* busy) { return !*busy; }, &busy_));
}

void ProgressReporter::Send(const ReportProgressRequest& request) {
  absl::MutexLock lock(&mu_);
  if (!busy_) {
    StartLocked(request);
  } else if (request.val_loss() != 0.0f) {
    // A validation loss would be missing from the job's history: it goes once the reply came.
    pending_ = std::make_unique<ReportProgressRequest>(request);
  } else {
    LOG_EVERY_N(WARNING, 20) << "progress report of step " << request.step()
                             << " skipped (training goes on): the one before it still awaits "
                                "the coordinator's reply ("
                             << ++skipped_ << " skipped)";
  }
}

void ProgressReporter::StartLocked(const ReportProgressRequest& request) {
  busy_ = true;
  // The previous call's callback may be the one starting this: it is freed at the next start.
  ended_ = std::move(in_flight_);
  in_flight_ = std::make_unique<InFlight>();
  InFlight* call = in_flight_.get();
  call->request = request;
  call->context.set_deadline(absl::ToChronoTime(absl::Now() + kProgressReportTimeout));
  stub_->async()->ReportProgress(
      &call->context, &call->request, &call->response, [this, call](grpc::Status status) {
        if (status.ok() && call->response.cancel()) cancel_asked_ = true;
        if (!status.ok()) {
          LOG_EVERY_N(WARNING, 20) << "progress report of step " << call->request.step()
                                   << " not delivered (training goes on): "
                                   << status.error_message();
        }
        absl::MutexLock lock(&mu_);
        if (pending_ != nullptr) {
          const std::unique_ptr<ReportProgressRequest> next = std::move(pending_);
          StartLocked(*next);
        } else {
          busy_ = false;
        }
      });
}

void ProgressReporter::ReportUnreachable(const std::string& address) {
  if (stub_ == nullptr) return;
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + kProgressReportTimeout));
  ReportUnreachableRequest request;
  request.set_node_id(node_id_);
  request.set_address(address);
  ReportUnreachableResponse response;
  grpc::Status status = stub_->ReportUnreachable(&context, request, &response);
  if (!status.ok()) {
    LOG_EVERY_N(WARNING, 10) << "reporting " << address << ": " << status.error_message();
  }
}

absl::StatusOr<ShardMap> ProgressReporter::CurrentShardMap() {
  if (stub_ == nullptr) return absl::UnavailableError("no coordinator");
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + kProgressReportTimeout));
  GetShardMapRequest request;
  request.set_job_id(assignment_.job_id());
  ShardMap map;
  RETURN_IF_ERROR(FromGrpcStatus(stub_->GetShardMap(&context, request, &map), "GetShardMap"));
  return map;
}

bool ProgressReporter::Report(uint64_t step, float loss, float tokens_per_sec, float val_loss,
                              bool done, const std::string& error, const std::string& sample) {
  if (stub_ == nullptr) return false;
  ReportProgressRequest request;
  request.set_job_id(assignment_.job_id());
  request.set_node_id(node_id_);
  request.set_rank(assignment_.rank());
  request.set_attempt(assignment_.attempt());
  request.set_step(step);
  request.set_loss(std::isfinite(loss) ? loss : 0.0f);
  request.set_tokens_per_sec(tokens_per_sec);
  request.set_val_loss(std::isfinite(val_loss) ? val_loss : 0.0f);
  request.set_step_seconds(step_seconds_);
  request.set_done(done);
  request.set_error(ToValidUtf8(error));
  request.set_sample(ToValidUtf8(sample));
  const bool last = done || !error.empty();
  request.set_leaving(last && options_.last_run);
  if (!last) {
    Send(request);
    return cancel_asked_;
  }
  AwaitReply();  // The job's end goes after its last ordinary report.
  const absl::Time give_up = absl::Now() + options_.final_report_patience;
  absl::Duration backoff = absl::Milliseconds(100);
  for (int attempt = 1;; ++attempt) {
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + kFinalReportTimeout));
    context.set_wait_for_ready(true);  // Through a coordinator's restart (see Membership).
    ReportProgressResponse response;
    grpc::Status status = stub_->ReportProgress(&context, request, &response);
    if (status.ok()) {
      if (attempt > 1) LOG(INFO) << "final report of step " << step << " delivered";
      return response.cancel();
    }
    const bool unreachable = status.error_code() == grpc::StatusCode::UNAVAILABLE ||
                             status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED;
    if (unreachable && absl::Now() + backoff > give_up && !cancel_->load() &&
        options_.undelivered_final_report) {
      LOG(WARNING) << "final report of job " << assignment_.job_id() << " (step " << step
                   << "): coordinator unreachable after " << attempt
                   << " attempt(s); it goes with the heartbeats until it is delivered";
      options_.undelivered_final_report(request);
      return false;
    }
    if (!unreachable || absl::Now() + backoff > give_up || cancel_->load()) {
      LOG(ERROR) << "final report of job " << assignment_.job_id() << " (step " << step
                 << ") failed after " << attempt << " attempt(s): " << status.error_message();
      return false;
    }
    LOG_EVERY_N(WARNING, 10) << "final report: coordinator unreachable ("
                             << status.error_message() << "); retrying for up to "
                             << absl::FormatDuration(options_.final_report_patience);
    absl::SleepFor(backoff);
    backoff = std::min(2 * backoff, kFinalReportMaxBackoff);
  }
}

}  // namespace psrv
