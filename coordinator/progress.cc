#include "coordinator/progress.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "common/job_spec.h"

namespace psrv {
namespace {

constexpr size_t kMaxHistory = 4096;  // Points of a job's loss and validation curves.

// The job's step (that of the slowest rank), mean loss and total throughput. In a pipeline job
// only the last stage of each group has a loss, and a group's tokens are counted once (there).
// False while no rank with a loss has reported a step.
bool Aggregate(JobStatus* status) {
  uint64_t min_step = UINT64_MAX;
  double loss_sum = 0, tokens = 0;
  int reporting = 0;
  const uint32_t stages = PipelineStages(status->spec());
  for (const WorkerProgress& w : status->workers()) {
    if (w.vacant()) continue;
    min_step = std::min<uint64_t>(min_step, w.step());
    if (w.rank() % stages != stages - 1) continue;
    if (w.step() > 0) loss_sum += w.loss(), ++reporting;
    tokens += w.tokens_per_sec();
  }
  status->set_step(min_step == UINT64_MAX ? 0 : min_step);
  if (reporting > 0) status->set_loss(static_cast<float>(loss_sum / reporting));
  status->set_tokens_per_sec(static_cast<float>(tokens));
  return reporting > 0;
}

// Past kMaxHistory points, keeps every other one: long jobs keep their whole curve at half the
// resolution, and a job's record stays bounded.
template <typename Point>
void Thin(google::protobuf::RepeatedPtrField<Point>* history) {
  if (history->size() <= static_cast<int>(kMaxHistory)) return;
  google::protobuf::RepeatedPtrField<Point> thinned;
  for (int i = 0; i < history->size(); i += 2) *thinned.Add() = history->Get(i);
  history->Swap(&thinned);
}

// A point of the loss curve per new job step.
void ExtendLossHistory(JobStatus* status) {
  auto* history = status->mutable_loss_history();
  if (history->empty() || history->rbegin()->step() < status->step()) {
    LossPoint* point = history->Add();
    point->set_step(status->step());
    point->set_loss(status->loss());
    point->set_tokens_per_sec(status->tokens_per_sec());
  }
  Thin(history);
}

}  // namespace

bool AllRanksFinished(const Job& job) {
  bool any_done = false;
  for (size_t rank = 0; rank < job.done.size(); ++rank) {
    if (!job.done[rank] && !job.workers[rank].empty()) return false;
    any_done |= job.done[rank];
  }
  return any_done;
}

absl::StatusOr<ReportProgressResponse> JobProgress::ReportProgress(
    const ReportProgressRequest& request) {
  absl::MutexLock lock(&cluster_.mu);
  ClusterState& state = cluster_.state;
  absl::StatusOr<Job*> found = state.FindJob(request.job_id());
  if (!found.ok()) return found.status();
  Job& job = **found;
  const uint32_t workers = job.status.spec().num_workers();
  if (request.rank() >= workers) {
    return absl::InvalidArgumentError(
        absl::StrCat("rank ", request.rank(), " is out of range: the job has ", workers,
                     " workers"));
  }
  if (!std::isfinite(request.loss()) || !std::isfinite(request.tokens_per_sec()) ||
      !std::isfinite(request.val_loss()) || !std::isfinite(request.step_seconds())) {
    return absl::InvalidArgumentError(
        "loss, val_loss, tokens_per_sec and step_seconds must be finite");
  }
  auto node = state.nodes.find(request.node_id());
  if (node != state.nodes.end()) {
    node->second.hung = false;  // It computes again.
    node->second.leaving |= request.leaving();
  }
  ReportProgressResponse response;
  if (job.status.state() != RUNNING) {
    response.set_cancel(job.status.state() != SUCCEEDED);
    return response;
  }
  if (job.workers[request.rank()] != request.node_id() ||
      request.attempt() != job.status.restarts()) {
    // A run the coordinator took away (the job restarted, or the rank went to another worker):
    // its reports, errors included, are no longer the job's, even when the same worker runs the
    // same rank of the job's next attempt.
    response.set_cancel(true);
    return response;
  }
  Record(request, &job);
  if (!request.error().empty()) {
    FreeWorker(job.workers[request.rank()], request.job_id());
    state.EndJob(&job, FAILED,
                 absl::StrCat("worker rank ", request.rank(), ": ", request.error()));
    response.set_cancel(true);
    return response;
  }
  if (request.done()) {
    job.done[request.rank()] = true;
    FreeWorker(job.workers[request.rank()], request.job_id());
    if (AllRanksFinished(job)) {
      state.EndJob(&job, SUCCEEDED, job.status.message());
      return response;
    }
  }
  // Ordinary reports are saved by Tick(); a rank's end at once (its worker will not report again).
  state.Touch(&job, request.done() ? Save::kNow : Save::kLater);
  return response;
}

void JobProgress::Record(const ReportProgressRequest& request, Job* job) {
  JobStatus& status = job->status;
  while (status.workers_size() < static_cast<int>(status.spec().num_workers())) {
    status.add_workers()->set_rank(status.workers_size());
  }
  WorkerProgress* progress = status.mutable_workers(request.rank());
  progress->set_worker_id(request.node_id());
  progress->set_step(request.step());
  progress->set_loss(request.loss());
  progress->set_tokens_per_sec(request.tokens_per_sec());
  progress->set_step_seconds(request.step_seconds());
  progress->set_done(request.done());
  if (!request.sample().empty()) status.set_sample(request.sample());
  if (request.val_loss() > 0) {
    status.set_val_loss(request.val_loss());
    ValidationPoint* point = status.add_val_history();
    point->set_step(request.step());
    point->set_loss(request.val_loss());
    Thin(status.mutable_val_history());
  }
  if (Aggregate(&status) && request.step() > 0) ExtendLossHistory(&status);
}

void JobProgress::FreeWorker(const std::string& node_id, const std::string& job_id) {
  auto node = cluster_.state.nodes.find(node_id);
  if (node != cluster_.state.nodes.end() && node->second.job_id == job_id) {
    node->second.job_id.clear();
    cluster_.state.SaveNode(node_id, Save::kLater);  // With the job.
  }
}

}  // namespace psrv
