// One worker's run of a job (trainer.h): set-up, then pull -> compute -> push per step.
#include "worker/trainer.h"

#include <algorithm>
#include <cmath>
#include <memory>
#include <random>
#include <vector>

#include <glog/logging.h>
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "common/job_spec.h"
#include "common/model_layout.h"
#include "common/status_macros.h"
#include "worker/compute.h"
#include "worker/data/corpus.h"
#include "worker/model/language_model.h"
#include "worker/model/sampling.h"
#include "worker/model/synthetic_model.h"
#include "worker/model/tokenizer.h"
#include "worker/progress_reporter.h"
#include "worker/resilient_client.h"
#include "worker/server_transport.h"
#include "worker/stage_trainer.h"
#include "worker/step_pipeline.h"
#include "worker/training_metrics.h"

namespace psrv {
namespace {

// One worker's run of one job: the model, its data and its link to the servers, then the loop
// pull -> compute -> push, one step at a time (RunStep), with progress reports and, at the end,
// the final validation loss and a sample of text (Finish).
class TrainingRun {
 public:
  TrainingRun(const WorkAssignment& assignment, ProgressReporter* reporter,
              const std::atomic<bool>* cancel, const TrainerOptions& options,
              TrainingMetrics* metrics)
      : assignment_(assignment),
        spec_(assignment.spec()),
        training_(spec_.training()),
        evaluator_(assignment.rank() == 0),
        reporter_(reporter),
        cancel_(cancel),
        options_(options),
        metrics_(metrics) {}

  // The model goes first: a GPU model holds the pipeline's buffers pinned.
  ~TrainingRun() {
    computer_.reset();
    model_.reset();
  }

  absl::Status SetUp() {
    RETURN_IF_ERROR(CreateModel());
    RETURN_IF_ERROR(LoadData());
    return ConnectServers();
  }

  absl::Status Run() {
    // A job restarted from a checkpoint at step s resumes at s + 1 (batches depend only on the
    // step).
    const uint64_t first_step = std::max<uint64_t>(1, assignment_.start_step());
    if (first_step > training_.steps()) {
      reporter_->Report(training_.steps(), 0, 0, 0, /*done=*/true);
      return absl::OkStatus();
    }
    if (first_step > 1) LOG(INFO) << "resuming at step " << first_step;
    const uint64_t report_every = std::max<uint32_t>(1, training_.report_every());
    const uint64_t eval_every = training_.eval_every();
    window_start_ = absl::Now();
    pipeline_->Start(first_step);
    for (uint64_t step = first_step; step <= training_.steps(); ++step) {
      if (cancel_->load()) return absl::CancelledError("job cancelled");
      pipeline_->BeginStep(step);
      if (backup_workers_) {
        // Backup workers: a step the servers applied without this worker is skipped.
        ASSIGN_OR_RETURN(const uint64_t at, pipeline_->CatchUp());
        if (at > step) {
          metrics_->RecordSkippedSteps(at - step);
          step = at;
          if (step > training_.steps()) return Finish(training_.steps(), /*pulled=*/true);
        }
      }
      // Validation on the parameters this step starts from (after step - 1 updates).
      float val_loss = 0;
      if (evaluator_ && eval_every > 0 && step > first_step && (step - 1) % eval_every == 0) {
        ASSIGN_OR_RETURN(val_loss, ValidationLoss());
      }
      ASSIGN_OR_RETURN(const float loss, RunStep(step));
      window_loss_ += loss;
      ++window_steps_;
      const bool last = step == training_.steps();
      if (last) return Finish(step);
      if (step % report_every == 0 || val_loss > 0) {
        if (reporter_->Report(step, CloseWindow(), window_tokens_per_sec_, val_loss,
                              /*done=*/false)) {
          return absl::CancelledError("job cancelled");
        }
      }
    }
    return absl::OkStatus();
  }

 private:
  absl::Status CreateModel() {
    ASSIGN_OR_RETURN(tokenizer_, CreateTokenizer(spec_.model()));
    DeviceChoice choice;
    if (options_.synthetic_compute >= absl::ZeroDuration()) {
      ASSIGN_OR_RETURN(model_, SyntheticModel::Create(spec_.model(), tokenizer_->vocab_size(),
                                                      options_.synthetic_compute));
      choice.description = absl::StrCat("none: synthetic compute, ",
                                        absl::FormatDuration(options_.synthetic_compute),
                                        " per step (benchmark; trains nothing)");
    } else {
      ASSIGN_OR_RETURN(model_, CreateLanguageModelOnDevice(spec_.model(), tokenizer_->vocab_size(),
                                                           options_.device, &choice,
                                                           options_.cuda));
    }
    // A CPU model keeps every core busy; synthetic compute leaves the CPU free, as a GPU does.
    const bool computes_on_cpu =
        options_.synthetic_compute < absl::ZeroDuration() && choice.device == Device::kCpu;
    overlap_ = options_.overlap == TrainerOptions::Overlap::kOn ||
               (options_.overlap == TrainerOptions::Overlap::kAuto && !computes_on_cpu);
    LOG(INFO) << "job " << assignment_.job_id() << ": model on " << choice.description
              << "; communication " << (overlap_ ? "overlapped with" : "not overlapped with")
              << " compute";
    vocabulary_ = ByteToTokenTable(*tokenizer_);
    return CheckWorkerMemory(model_->num_parameters(),
                             model_->ActivationBytes(static_cast<int>(training_.batch_size())),
                             options_.max_memory_bytes);
  }

  // This worker's part of the training data; the validation split on the evaluator (rank 0).
  absl::Status LoadData() {
    ASSIGN_OR_RETURN(corpus_, LoadCorpus(spec_, static_cast<int>(assignment_.rank()),
                                         static_cast<int>(spec_.num_workers()), Split::kTrain));
    RETURN_IF_ERROR(corpus_.CheckWindow(model_->window()));
    RETURN_IF_ERROR(corpus_.CheckVocabulary(vocabulary_));
    if (evaluator_) {
      ASSIGN_OR_RETURN(validation_, LoadCorpus(spec_, 0, 1, Split::kValidation));
      RETURN_IF_ERROR(validation_.CheckWindow(model_->window()));
      RETURN_IF_ERROR(validation_.CheckVocabulary(vocabulary_));
    }
    return absl::OkStatus();
  }

  // The servers: retries, fail-over and resends live in the client; the overlap in the pipeline.
  absl::Status ConnectServers() {
    ResilientClient::Options client_options;
    client_options.wire_dtype = training_.wire_dtype() == BF16 ? BF16 : FP32;
    client_options.consistency = training_.consistency();
    if (training_.compression().kind() == TOP_K) {
      client_options.top_k_fraction = training_.compression().fraction();
    }
    client_options.row_sparse_pushes = options_.row_sparse_pushes;
    if (options_.row_sparse_pulls && !TiesEmbeddings(spec_.model()) && !backup_workers_) {
      // Each step pulls only the input embedding's rows of its batch's tokens (the forward reads
      // no others), except where rank 0 needs every row: the steps it validates on, and the
      // final parameters (validation and the sample). Backup workers relabel steps (CatchUp), so
      // their pulls stay whole.
      client_options.pull_rows = [this](uint64_t step, std::vector<uint32_t>* rows) {
        if (step > training_.steps()) return false;
        const uint64_t eval_every = training_.eval_every();
        if (evaluator_ && eval_every > 0 && (step - 1) % eval_every == 0) return false;
        *rows = computer_->InputTokens(step);
        return true;
      };
    }
    ResilientClient::Coordinator coordinator;
    ProgressReporter* const reporter = reporter_;
    coordinator.report_unreachable = [reporter](const std::string& address) {
      reporter->ReportUnreachable(address);
    };
    coordinator.shard_map = [reporter] { return reporter->CurrentShardMap(); };
    ASSIGN_OR_RETURN(client_, ResilientClient::Create(assignment_.shard_map(), assignment_.rank(),
                                                      client_options, coordinator,
                                                      CreateGrpcServerTransport, cancel_));
    if (client_->num_parameters() != model_->num_parameters()) {
      return absl::FailedPreconditionError(
          absl::StrCat("shard map has ", client_->num_parameters(), " parameters, the model ",
                       model_->num_parameters()));
    }
    StepPipeline::Options pipeline_options;
    pipeline_options.overlap = overlap_;
    pipeline_options.grad_clip = training_.grad_clip();
    pipeline_options.consistency = training_.consistency();
    pipeline_ = std::make_unique<StepPipeline>(client_.get(), pipeline_options);
    model_->set_parameter_stream(pipeline_.get());
    // Each worker draws its own minibatches and dropout masks: its own seed stream. (The pipeline
    // clips, so that pushes can start before the norm is known.)
    computer_ = std::make_unique<GradientComputer>(
        model_.get(), &corpus_, &vocabulary_, static_cast<int>(training_.batch_size()),
        training_.seed() * 1000003 + assignment_.rank(),
        static_cast<int>(training_.grad_accumulation_steps()));
    return absl::OkStatus();
  }

  // One step: its loss.
  absl::StatusOr<float> RunStep(uint64_t step) {
    const absl::Time step_start = absl::Now();
    // PULL: step s's parameters were requested during step s-1. In sequence (no overlap) they are
    // all awaited here; else forward awaits each group as it reaches it.
    if (!overlap_) RETURN_IF_ERROR(pipeline_->AwaitAllParameters());
    const absl::Time compute_start = absl::Now();
    pipeline_->ResetWaited();

    // COMPUTE: forward and backward; backward hands gradients to the pipeline as they are final.
    const float loss = computer_->Compute(step, pipeline_->params(), pipeline_->grads());
    RETURN_IF_ERROR(pipeline_->status());
    const absl::Time computed = absl::Now();
    if (!std::isfinite(loss)) {
      // A device error (CUDA) shows as a NaN loss: report the error itself.
      RETURN_IF_ERROR(DeviceModelStatus(*model_));
      return absl::InternalError(absl::StrCat("loss became ", loss, " at step ", step,
                                              " (learning rate too high?)"));
    }
    Straggle(computed - compute_start);

    // PUSH: what backward did not send yet, the clipping factor, and the next step's pulls.
    RETURN_IF_ERROR(pipeline_->FinishStep());
    const absl::Time pushed = absl::Now();
    // Time waiting for parameters inside compute counts as pull.
    const absl::Duration waited = pipeline_->waited();
    metrics_->RecordPhase(TrainingMetrics::kPull, compute_start - step_start + waited);
    metrics_->RecordPhase(TrainingMetrics::kCompute, computed - compute_start - waited);
    metrics_->RecordPhase(TrainingMetrics::kPush, pushed - computed);
    // Pushed: what the client sent (compressed pushes send less than they pull).
    const uint64_t pushed_bytes = client_->pushed_bytes() - pushed_bytes_before_;
    pushed_bytes_before_ = client_->pushed_bytes();
    // Pulled: what the client asked for since the last step (row-sparse pulls ask for less).
    const uint64_t pulled_bytes = client_->pulled_bytes() - pulled_bytes_before_;
    pulled_bytes_before_ = client_->pulled_bytes();
    metrics_->RecordStep(step, pushed - step_start, computer_->tokens_per_step(), pulled_bytes,
                         pushed_bytes, pipeline_->grad_norm());
    return loss;
  }

  // ps_worker --slowdown: sleeps (factor - 1) times `compute` on the steps the draw picks.
  void Straggle(absl::Duration compute) {
    const TrainerOptions::Slowdown& slowdown = options_.slowdown;
    if (slowdown.factor <= 1) return;
    if (slowdown.probability < 1 &&
        std::uniform_real_distribution<double>(0, 1)(straggle_random_) >= slowdown.probability) {
      return;
    }
    absl::SleepFor(compute * (slowdown.factor - 1));
  }

  // The mean loss of the steps since the last report (and their throughput, step time); starts
  // the next window.
  float CloseWindow() {
    const double seconds = absl::ToDoubleSeconds(absl::Now() - window_start_);
    window_tokens_per_sec_ =
        seconds > 0 ? static_cast<float>(window_steps_ * computer_->tokens_per_step() / seconds)
                    : 0;
    const float mean_loss = static_cast<float>(window_loss_ / window_steps_);
    reporter_->set_step_seconds(static_cast<float>(seconds / window_steps_));
    metrics_->RecordWindow(mean_loss, window_tokens_per_sec_);
    window_loss_ = 0;
    window_steps_ = 0;
    window_start_ = absl::Now();
    return mean_loss;
  }

  // The final parameters (SYNC: after every worker's last step): validation and a sample. Every
  // worker waits for its last push to be applied before it reports done: if a server fails over
  // meanwhile, it still has the gradient to send again.
  // `pulled`: the parameters in hand are the final ones already (backup workers: the servers
  // finished the job while this worker was behind).
  absl::Status Finish(uint64_t step, bool pulled = false) {
    const float mean_loss = window_steps_ > 0 ? CloseWindow() : 0.0f;
    std::string sample;
    float final_val_loss = 0;
    if (!pulled && (training_.consistency() == SYNC || evaluator_)) {
      RETURN_IF_ERROR(pipeline_->FinishRun());
    }
    if (evaluator_) {
      ASSIGN_OR_RETURN(final_val_loss, ValidationLoss());
      if (training_.sample_length() > 0) {
        absl::StatusOr<std::vector<int32_t>> prompt = tokenizer_->Encode("\n");
        std::vector<int32_t> tokens =
            Sample(*model_, pipeline_->params(), prompt.ok() ? *prompt : std::vector<int32_t>{},
                   static_cast<int>(training_.sample_length()), /*temperature=*/0.8f,
                   /*top_k=*/0, training_.seed());
        sample = tokenizer_->Decode(tokens);
      }
    }
    reporter_->Report(step, mean_loss, window_tokens_per_sec_, final_val_loss, /*done=*/true, "",
                      sample);
    return absl::OkStatus();
  }

  absl::StatusOr<float> ValidationLoss() {
    RETURN_IF_ERROR(pipeline_->AwaitAllParameters());
    const absl::Time start = absl::Now();
    const float loss = psrv::ValidationLoss(model_.get(), pipeline_->params(), validation_,
                                            vocabulary_, static_cast<int>(training_.batch_size()),
                                            static_cast<int>(training_.eval_batches()));
    metrics_->RecordPhase(TrainingMetrics::kEval, absl::Now() - start);
    metrics_->RecordValidation(loss);
    return loss;
  }

  const WorkAssignment& assignment_;
  const JobSpec& spec_;
  const TrainingSpec& training_;
  const bool evaluator_;  // Rank 0: validation loss and the sample.
  ProgressReporter* const reporter_;
  const std::atomic<bool>* const cancel_;
  const TrainerOptions& options_;
  TrainingMetrics* const metrics_;

  std::unique_ptr<Tokenizer> tokenizer_;
  ByteToToken vocabulary_;
  Corpus corpus_ = Corpus::FromText("");
  Corpus validation_ = Corpus::FromText("");
  bool overlap_ = false;
  std::unique_ptr<ResilientClient> client_;
  std::unique_ptr<StepPipeline> pipeline_;  // Uses client_.
  std::unique_ptr<LanguageModel> model_;    // Uses pipeline_ (its stream and buffers).
  std::unique_ptr<GradientComputer> computer_;
  uint64_t pushed_bytes_before_ = 0;  // client_->pushed_bytes() after the previous step.
  uint64_t pulled_bytes_before_ = 0;  // client_->pulled_bytes() after the previous step.
  // SYNC with backup workers (TrainingSpec.aggregate_first below num_workers).
  const bool backup_workers_ = training_.consistency() == SYNC &&
                               training_.aggregate_first() > 0 &&
                               training_.aggregate_first() < spec_.num_workers();
  // ps_worker --slowdown's draws: each rank its own stream.
  std::mt19937_64 straggle_random_{training_.seed() * 1000003 + assignment_.rank()};

  // The steps since the last report.
  double window_loss_ = 0;
  uint64_t window_steps_ = 0;
  absl::Time window_start_;
  float window_tokens_per_sec_ = 0;
};

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

absl::Status ParseSlowdown(absl::string_view text, TrainerOptions* options) {
  const std::vector<absl::string_view> parts = absl::StrSplit(text, '@');
  double factor = 0, probability = 1;
  if (parts.size() <= 2 && absl::SimpleAtod(parts[0], &factor) && factor >= 1 &&
      factor <= 1000 && (parts.size() == 1 || (absl::SimpleAtod(parts[1], &probability) &&
                                                probability >= 0 && probability <= 1))) {
    options->slowdown = {factor, probability};
    return absl::OkStatus();
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "want FACTOR or FACTOR@PROBABILITY with FACTOR in [1, 1000] and PROBABILITY in [0, 1] "
      "(e.g. 4@0.1), got \"", text, "\""));
}

absl::Status CheckWorkerMemory(uint64_t parameters, uint64_t activation_bytes, uint64_t limit) {
  const uint64_t buffers = 5 * parameters * sizeof(float);
  const uint64_t needed = buffers + activation_bytes;
  if (limit == 0 || needed <= limit) return absl::OkStatus();
  return absl::ResourceExhaustedError(absl::StrCat(
      "this worker's part of the model needs about ", needed, " bytes (", parameters,
      " parameters: ", buffers, " bytes of parameter and gradient buffers; ", activation_bytes,
      " bytes of activations) but ps_worker --max_memory_bytes is ", limit,
      "; split the model's layers over several workers (parallelism.pipeline, psctl --pipeline) "
      "or use a smaller batch"));
}

absl::Status RunJob(const WorkAssignment& assignment, Coordinator::Stub* coordinator,
                    const std::string& node_id, const std::atomic<bool>* cancel,
                    const TrainerOptions& options) {
  ProgressReporter reporter(coordinator, assignment, node_id, cancel, options.reports);
  TrainingMetrics training_metrics(options.metrics, assignment.job_id(), assignment.rank());
  absl::Status status;
  if (PipelineStages(assignment.spec()) > 1) {
    StageRunOptions stage_options;
    stage_options.inbox = options.stage_inbox;
    stage_options.receive_timeout = StageReceiveTimeout(assignment.spec());
    stage_options.max_memory_bytes = options.max_memory_bytes;
    stage_options.device = options.device;
    stage_options.cuda = options.cuda;
    status = RunStage(assignment, &reporter, cancel, stage_options, &training_metrics);
    if (options.stage_inbox != nullptr) {
      options.stage_inbox->DropRuns(assignment.job_id(), assignment.attempt(),
                                    assignment.start_step(), /*inclusive=*/true);
    }
  } else {
    TrainingRun run(assignment, &reporter, cancel, options, &training_metrics);
    status = run.SetUp();
    if (status.ok()) status = run.Run();
  }
  if (!status.ok() && status.code() != absl::StatusCode::kCancelled) {
    reporter.Report(0, 0, 0, 0, /*done=*/false, status.ToString());
  }
  return status;
}

}  // namespace psrv
