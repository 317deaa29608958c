#include "worker/trainer.h"

#include <algorithm>
#include <functional>
#include <memory>
#include <vector>

#include <glog/logging.h>
#include <grpcpp/client_context.h>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "common/model_layout.h"
#include "common/grpc_status.h"
#include "common/status_macros.h"
#include "common/utf8.h"
#include "worker/compute.h"
#include "worker/data/corpus.h"
#include "worker/model/language_model.h"
#include "worker/model/synthetic_model.h"
#include "worker/model/tokenizer.h"
#include "worker/resilient_client.h"
#include "worker/server_transport.h"
#include "worker/step_pipeline.h"
#include "worker/training_metrics.h"
#include "worker/model/sampling.h"

namespace psrv {
namespace {

// Ordinary progress reports are a single attempt: training goes on while the coordinator is away
// (e.g. restarting), and the next report carries the same totals. The last report of a job (done,
// or an error) is retried while the coordinator is unreachable, for up to this long, so that the
// job's end is not lost.
constexpr absl::Duration kProgressReportTimeout = absl::Seconds(2);
constexpr absl::Duration kFinalReportTimeout = absl::Seconds(5);
constexpr absl::Duration kFinalReportPatience = absl::Minutes(2);
constexpr absl::Duration kFinalReportMaxBackoff = absl::Seconds(1);

class ProgressReporter {
 public:
  ProgressReporter(Coordinator::Stub* stub, const WorkAssignment& assignment, std::string node_id,
                   const std::atomic<bool>* cancel)
      : stub_(stub), assignment_(assignment), node_id_(std::move(node_id)), cancel_(cancel) {}

  // The mean step time sent with the next reports.
  void set_step_seconds(float seconds) { step_seconds_ = seconds; }

  // Tells the coordinator a server did not answer (it checks and, if so, fails it over at once).
  void ReportUnreachable(const std::string& address) {
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

  // The job's shard map as the coordinator has it now.
  absl::StatusOr<ShardMap> CurrentShardMap() {
    if (stub_ == nullptr) return absl::UnavailableError("no coordinator");
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + kProgressReportTimeout));
    GetShardMapRequest request;
    request.set_job_id(assignment_.job_id());
    ShardMap map;
    RETURN_IF_ERROR(FromGrpcStatus(stub_->GetShardMap(&context, request, &map), "GetShardMap"));
    return map;
  }

  // Returns true if the coordinator wants the worker to stop.
  bool Report(uint64_t step, float loss, float tokens_per_sec, float val_loss, bool done,
              const std::string& error = "", const std::string& sample = "") {
    if (stub_ == nullptr) return false;
    ReportProgressRequest request;
    request.set_job_id(assignment_.job_id());
    request.set_node_id(node_id_);
    request.set_rank(assignment_.rank());
    request.set_step(step);
    request.set_loss(std::isfinite(loss) ? loss : 0.0f);
    request.set_tokens_per_sec(tokens_per_sec);
    request.set_val_loss(std::isfinite(val_loss) ? val_loss : 0.0f);
    request.set_step_seconds(step_seconds_);
    request.set_done(done);
    request.set_error(ToValidUtf8(error));
    request.set_sample(ToValidUtf8(sample));
    const bool last = done || !error.empty();
    const absl::Time give_up = absl::Now() + kFinalReportPatience;
    absl::Duration backoff = absl::Milliseconds(100);
    for (int attempt = 1;; ++attempt) {
      grpc::ClientContext context;
      context.set_deadline(absl::ToChronoTime(
          absl::Now() + (last ? kFinalReportTimeout : kProgressReportTimeout)));
      context.set_wait_for_ready(last);  // Through a coordinator's restart (see Membership).
      ReportProgressResponse response;
      grpc::Status status = stub_->ReportProgress(&context, request, &response);
      if (status.ok()) {
        if (attempt > 1) LOG(INFO) << "final report of step " << step << " delivered";
        return response.cancel();
      }
      if (!last) {
        LOG_EVERY_N(WARNING, 20) << "progress report of step " << step
                                 << " skipped (training goes on): " << status.error_message();
        return false;
      }
      const bool unreachable = status.error_code() == grpc::StatusCode::UNAVAILABLE ||
                               status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED;
      if (!unreachable || absl::Now() + backoff > give_up || cancel_->load()) {
        LOG(ERROR) << "final report of job " << assignment_.job_id() << " (step " << step
                   << ") failed after " << attempt << " attempt(s): " << status.error_message();
        return false;
      }
      LOG_EVERY_N(WARNING, 10) << "final report: coordinator unreachable ("
                               << status.error_message() << "); retrying for up to "
                               << absl::FormatDuration(kFinalReportPatience);
      absl::SleepFor(backoff);
      backoff = std::min(2 * backoff, kFinalReportMaxBackoff);
    }
  }

 private:
  Coordinator::Stub* const stub_;
  const WorkAssignment& assignment_;
  const std::string node_id_;
  const std::atomic<bool>* const cancel_;  // Set: stop retrying.
  float step_seconds_ = 0;
};

// The model, the data and the link to the servers of one run; then the loop.
absl::Status Train(const WorkAssignment& assignment, ProgressReporter* reporter,
                   const std::atomic<bool>* cancel, const TrainerOptions& options,
                   TrainingMetrics* metrics) {
  const JobSpec& spec = assignment.spec();
  const TrainingSpec& training = spec.training();
  const bool evaluator = assignment.rank() == 0;
  ASSIGN_OR_RETURN(std::unique_ptr<Tokenizer> tokenizer, CreateTokenizer(spec.model()));
  DeviceChoice choice;
  std::unique_ptr<LanguageModel> model;
  if (options.synthetic_compute >= absl::ZeroDuration()) {
    ASSIGN_OR_RETURN(model, SyntheticModel::Create(spec.model(), tokenizer->vocab_size(),
                                                   options.synthetic_compute));
    choice.description = absl::StrCat("none: synthetic compute, ",
                                      absl::FormatDuration(options.synthetic_compute),
                                      " per step (benchmark; trains nothing)");
  } else {
    ASSIGN_OR_RETURN(model, CreateLanguageModelOnDevice(spec.model(), tokenizer->vocab_size(),
                                                        options.device, &choice, options.cuda));
  }
  // A CPU model keeps every core busy; synthetic compute leaves the CPU free, as a GPU does.
  const bool computes_on_cpu =
      options.synthetic_compute < absl::ZeroDuration() && choice.device == Device::kCpu;
  const bool overlap =
      options.overlap == TrainerOptions::Overlap::kOn ||
      (options.overlap == TrainerOptions::Overlap::kAuto && !computes_on_cpu);
  LOG(INFO) << "job " << assignment.job_id() << ": model on " << choice.description
            << "; communication " << (overlap ? "overlapped with" : "not overlapped with")
            << " compute";
  const ByteToToken vocabulary = ByteToTokenTable(*tokenizer);
  ASSIGN_OR_RETURN(Corpus corpus,
                   Corpus::Load(spec.data().path(), assignment.rank(), spec.num_workers(),
                                Split::kTrain, spec.data().validation_fraction()));
  RETURN_IF_ERROR(corpus.CheckWindow(model->window()));
  RETURN_IF_ERROR(corpus.CheckVocabulary(vocabulary));
  Corpus validation = Corpus::FromText("");
  if (evaluator) {
    ASSIGN_OR_RETURN(validation, Corpus::Load(spec.data().path(), 0, 1, Split::kValidation,
                                              spec.data().validation_fraction()));
    RETURN_IF_ERROR(validation.CheckWindow(model->window()));
    RETURN_IF_ERROR(validation.CheckVocabulary(vocabulary));
  }

  // The servers: retries, fail-over and resends live in the client; the overlap in the pipeline.
  ResilientClient::Options client_options;
  client_options.wire_dtype = training.wire_dtype() == BF16 ? BF16 : FP32;
  client_options.consistency = training.consistency();
  ResilientClient::Coordinator coordinator;
  coordinator.report_unreachable = [reporter](const std::string& address) {
    reporter->ReportUnreachable(address);
  };
  coordinator.shard_map = [reporter] { return reporter->CurrentShardMap(); };
  ASSIGN_OR_RETURN(std::unique_ptr<ResilientClient> client,
                   ResilientClient::Create(assignment.shard_map(), assignment.rank(),
                                           client_options, coordinator,
                                           CreateGrpcServerTransport, cancel));
  if (client->num_parameters() != model->num_parameters()) {
    return absl::FailedPreconditionError(
        absl::StrCat("shard map has ", client->num_parameters(), " parameters, the model ",
                     model->num_parameters()));
  }
  StepPipeline::Options pipeline_options;
  pipeline_options.overlap = overlap;
  pipeline_options.grad_clip = training.grad_clip();
  pipeline_options.consistency = training.consistency();
  StepPipeline pipeline(client.get(), pipeline_options);
  model->set_parameter_stream(&pipeline);
  // The model goes first, on every way out: a GPU model holds the pipeline's buffers pinned.
  absl::Cleanup release_model = [&model] { model.reset(); };
  // Each worker draws its own minibatches and dropout masks: its own seed stream. (The pipeline
  // clips, so that pushes can start before the norm is known.)
  GradientComputer computer(model.get(), &corpus, &vocabulary,
                            static_cast<int>(training.batch_size()),
                            training.seed() * 1000003 + assignment.rank(),
                            static_cast<int>(training.grad_accumulation_steps()));
  auto validation_loss = [&]() -> absl::StatusOr<float> {
    RETURN_IF_ERROR(pipeline.AwaitAllParameters());
    const absl::Time start = absl::Now();
    const float loss = ValidationLoss(model.get(), pipeline.params(), validation, vocabulary,
                                      static_cast<int>(training.batch_size()),
                                      static_cast<int>(training.eval_batches()));
    metrics->RecordPhase(TrainingMetrics::kEval, absl::Now() - start);
    metrics->RecordValidation(loss);
    return loss;
  };
  // Payload bytes of one pull or push of every parameter.
  const uint64_t wire_bytes =
      client->num_parameters() * (client_options.wire_dtype == BF16 ? 2 : sizeof(float));

  // A job restarted from a checkpoint at step s resumes at s + 1 (batches depend only on the step).
  const uint64_t first_step = std::max<uint64_t>(1, assignment.start_step());
  const uint64_t report_every = std::max<uint32_t>(1, training.report_every());
  const uint64_t eval_every = training.eval_every();
  double window_loss = 0;
  uint64_t window_steps = 0;
  absl::Time window_start = absl::Now();
  if (first_step > training.steps()) {
    reporter->Report(training.steps(), 0, 0, 0, /*done=*/true);
    return absl::OkStatus();
  }
  if (first_step > 1) LOG(INFO) << "resuming at step " << first_step;
  pipeline.Start(first_step);
  for (uint64_t step = first_step; step <= training.steps(); ++step) {
    if (cancel->load()) return absl::CancelledError("job cancelled");
    const absl::Time step_start = absl::Now();
    pipeline.BeginStep(step);
    // Validation on the parameters this step starts from (after step - 1 updates).
    float val_loss = 0;
    if (evaluator && eval_every > 0 && step > first_step && (step - 1) % eval_every == 0) {
      ASSIGN_OR_RETURN(val_loss, validation_loss());
    }

    // PULL: step s's parameters were requested during step s-1. In sequence (no overlap) they are
    // all awaited here; else forward awaits each group as it reaches it.
    if (!overlap) RETURN_IF_ERROR(pipeline.AwaitAllParameters());
    const absl::Time compute_start = absl::Now();
    pipeline.ResetWaited();

    // COMPUTE: forward and backward; backward hands gradients to the pipeline as they are final.
    const float loss = computer.Compute(step, pipeline.params(), pipeline.grads());
    RETURN_IF_ERROR(pipeline.status());
    const absl::Time computed = absl::Now();
    if (!std::isfinite(loss)) {
      // A device error (CUDA) shows as a NaN loss: report the error itself.
      RETURN_IF_ERROR(DeviceModelStatus(*model));
      return absl::InternalError(absl::StrCat("loss became ", loss, " at step ", step,
                                              " (learning rate too high?)"));
    }

    // PUSH: what backward did not send yet, the clipping factor, and the next step's pulls.
    RETURN_IF_ERROR(pipeline.FinishStep());
    const absl::Time pushed = absl::Now();
    // Time waiting for parameters inside compute counts as pull.
    const absl::Duration waited = pipeline.waited();
    metrics->RecordPhase(TrainingMetrics::kPull, compute_start - step_start + waited);
    metrics->RecordPhase(TrainingMetrics::kCompute, computed - compute_start - waited);
    metrics->RecordPhase(TrainingMetrics::kPush, pushed - computed);
    metrics->RecordStep(step, pushed - step_start, computer.tokens_per_step(), wire_bytes,
                        wire_bytes, pipeline.grad_norm());
    window_loss += loss;
    ++window_steps;
    const bool last = step == training.steps();
    if (step % report_every == 0 || last || val_loss > 0) {
      const double seconds = absl::ToDoubleSeconds(absl::Now() - window_start);
      const float tokens_per_sec =
          seconds > 0 ? static_cast<float>(window_steps * computer.tokens_per_step() / seconds) : 0;
      const float mean_loss = static_cast<float>(window_loss / window_steps);
      reporter->set_step_seconds(static_cast<float>(seconds / window_steps));
      metrics->RecordWindow(mean_loss, tokens_per_sec);
      if (!last) {
        if (reporter->Report(step, mean_loss, tokens_per_sec, val_loss, /*done=*/false)) {
          return absl::CancelledError("job cancelled");
        }
      } else {
        // The final parameters (SYNC: after every worker's last step): validation and a sample.
        // Every worker waits for its last push to be applied before it reports done: if a
        // server fails over meanwhile, it still has the gradient to send again.
        std::string sample;
        float final_val_loss = 0;
        if (training.consistency() == SYNC || evaluator) RETURN_IF_ERROR(pipeline.FinishRun());
        if (evaluator) {
          ASSIGN_OR_RETURN(final_val_loss, validation_loss());
          if (training.sample_length() > 0) {
            absl::StatusOr<std::vector<int32_t>> prompt = tokenizer->Encode("\n");
            std::vector<int32_t> tokens =
                Sample(*model, pipeline.params(), prompt.ok() ? *prompt : std::vector<int32_t>{},
                       static_cast<int>(training.sample_length()), /*temperature=*/0.8f,
                       /*top_k=*/0, training.seed());
            sample = tokenizer->Decode(tokens);
          }
        }
        reporter->Report(step, mean_loss, tokens_per_sec, final_val_loss, /*done=*/true, "",
                         sample);
      }
      window_loss = 0;
      window_steps = 0;
      window_start = absl::Now();
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ParseOverlap(absl::string_view text, TrainerOptions* options) {
  if (text == "auto") {
    options->overlap = TrainerOptions::Overlap::kAuto;
  } else if (text == "on" || text == "true") {
    options->overlap = TrainerOptions::Overlap::kOn;
  } else if (text == "off" || text == "false") {
    options->overlap = TrainerOptions::Overlap::kOff;
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("want auto, on or off, got \"", text, "\""));
  }
  return absl::OkStatus();
}

absl::Status ParseCompute(absl::string_view text, TrainerOptions* options) {
  if (text == "model") {
    options->synthetic_compute = -absl::InfiniteDuration();
    return absl::OkStatus();
  }
  const absl::string_view original = text;
  double ms = 0;
  if (absl::ConsumePrefix(&text, "synthetic:") && absl::SimpleAtod(text, &ms) && ms >= 0 &&
      ms <= 3.6e6) {
    options->synthetic_compute = absl::Milliseconds(ms);
    return absl::OkStatus();
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "want \"model\" or \"synthetic:MS\" with MS milliseconds in [0, 3600000], got \"", original,
      "\""));
}

absl::Status RunJob(const WorkAssignment& assignment, Coordinator::Stub* coordinator,
                    const std::string& node_id, const std::atomic<bool>* cancel,
                    const TrainerOptions& options) {
  ProgressReporter reporter(coordinator, assignment, node_id, cancel);
  TrainingMetrics training_metrics(options.metrics, assignment.job_id(), assignment.rank());
  absl::Status status = Train(assignment, &reporter, cancel, options, &training_metrics);
  if (!status.ok() && status.code() != absl::StatusCode::kCancelled) {
    reporter.Report(0, 0, 0, 0, /*done=*/false, status.ToString());
  }
  return status;
}

}  // namespace psrv
