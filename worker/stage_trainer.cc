// A pipeline stage's run (stage_trainer.h): set-up, then per step PULL (its part) -> COMPUTE (its
// layers, the group's micro-batches, tensors to and from its neighbours) -> PUSH (its part).
#include "worker/stage_trainer.h"

#include <glog/logging.h>

#include <cmath>
#include <cstring>
#include <map>
#include <memory>
#include <random>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/channel.h"
#include "common/job_spec.h"
#include "common/key_range.h"
#include "common/model_layout.h"
#include "common/status_macros.h"
#include "worker/compute.h"
#include "worker/data/corpus.h"
#include "worker/cuda/device_model.h"
#include "worker/model/model_factory.h"
#include "worker/model/tokenizer.h"
#include "worker/pipeline/pipeline_stage.h"
#include "worker/pipeline/schedule.h"
#include "worker/pipeline/stage_model.h"
#include "worker/pipeline/stage_plan.h"
#include "worker/resilient_client.h"
#include "worker/server_transport.h"
#include "worker/step_pipeline.h"
#include "worker/trainer.h"

namespace psrv {
namespace {

// The keys of each table that `part` holds (TargetOptions::part): the tables stacked per layer
// ("h.*", (L, ...)) the rows of its layers; wte with the embeddings or the head; wpe with the
// embeddings; lnf with the head.
std::map<std::string, KeyRange> PartKeys(const std::vector<TableSpec>& tables,
                                         const GptPart& part, uint64_t layers) {
  std::map<std::string, KeyRange> keys;
  for (const TableSpec& table : tables) {
    const uint64_t n = TableElements(table);
    const std::string& name = table.name();
    if (absl::StartsWith(name, "h.")) {
      const uint64_t row = n / layers;
      keys[name] = MakeRange(part.first_layer * row, (part.first_layer + part.layers) * row);
    } else if ((name == "wte" && (part.embeddings || part.head)) ||
               (name == "wpe" && part.embeddings) ||
               (absl::StartsWith(name, "lnf.") && part.head)) {
      keys[name] = MakeRange(0, n);
    }
  }
  return keys;
}

// Control values between the stages (a double, bit for bit) travel as two fp32 words.
std::vector<float> Pack(double value) {
  std::vector<float> words(2);
  std::memcpy(words.data(), &value, sizeof(value));
  return words;
}
absl::StatusOr<double> Unpack(absl::StatusOr<std::vector<float>> words) {
  if (!words.ok()) return words.status();
  if (words->size() != 2) return absl::InvalidArgumentError("a control value has 2 words");
  double value;
  std::memcpy(&value, words->data(), sizeof(value));
  return value;
}

class StageRun {
 public:
  StageRun(const WorkAssignment& assignment, ProgressReporter* reporter,
           const std::atomic<bool>* cancel, const StageRunOptions& options,
           TrainingMetrics* metrics)
      : assignment_(assignment),
        spec_(assignment.spec()),
        training_(spec_.training()),
        stages_(static_cast<int>(PipelineStages(spec_))),
        index_(static_cast<int>(assignment.rank()) % stages_),
        group_(assignment.rank() / stages_),
        micro_batches_(static_cast<int>(spec_.parallelism().micro_batches())),
        batch_(static_cast<int>(training_.batch_size())),
        reporter_(reporter),
        cancel_(cancel),
        options_(options),
        metrics_(metrics) {}

  absl::Status SetUp() {
    if (options_.inbox == nullptr) {
      return absl::FailedPreconditionError("this worker serves no StageExchange");
    }
    if (assignment_.stage_addresses_size() != stages_) {
      return absl::InvalidArgumentError(absl::StrCat(
          "the assignment names ", assignment_.stage_addresses_size(),
          " stage addresses for a pipeline of ", stages_));
    }
    ASSIGN_OR_RETURN(tokenizer_, CreateTokenizer(spec_.model()));
    vocabulary_ = ByteToTokenTable(*tokenizer_);
    config_ = GptConfigFromSpec(spec_.model(), tokenizer_->vocab_size());
    ASSIGN_OR_RETURN(std::vector<StagePlan> plans, PlanStages(config_, stages_));
    part_ = plans[index_].part;
    const PipelineSchedule schedule = spec_.parallelism().schedule() == GPIPE
                                          ? PipelineSchedule::kGpipe
                                          : PipelineSchedule::kOneFOneB;
    const int slots = MaxInFlight(StageOps(schedule, stages_, index_, micro_batches_));
    ASSIGN_OR_RETURN(model_, CreateStageModelOnDevice(config_, part_, slots, options_.device,
                                                      options_.cuda));
    RETURN_IF_ERROR(CheckWorkerMemory(model_->num_parameters(),
                                      model_->ActivationBytes(batch_) * slots,
                                      options_.max_memory_bytes));
    LOG(INFO) << "job " << assignment_.job_id() << ": stage " << index_ << " of " << stages_
              << " in group " << group_ << ": layers [" << part_.first_layer << ", "
              << part_.first_layer + part_.layers << ")" << (part_.embeddings ? " + embeddings" : "")
              << (part_.head ? " + head" : "") << ", " << model_->num_parameters()
              << " parameters, " << micro_batches_ << " micro-batches, on "
              << model_->device();
    // The group's part of the data, as a single worker of rank `group_` would have it.
    ASSIGN_OR_RETURN(corpus_, LoadCorpus(spec_, static_cast<int>(group_),
                                         static_cast<int>(DataGroups(spec_)), Split::kTrain));
    RETURN_IF_ERROR(corpus_.CheckWindow(config_.context + 1));
    RETURN_IF_ERROR(corpus_.CheckVocabulary(vocabulary_));
    if (group_ == 0) {
      ASSIGN_OR_RETURN(validation_, LoadCorpus(spec_, 0, 1, Split::kValidation));
      RETURN_IF_ERROR(validation_.CheckWindow(config_.context + 1));
    }
    activation_dtype_ = spec_.parallelism().activation_dtype() == BF16 ? BF16 : FP32;
    ConnectStages(schedule);
    return ConnectServers();
  }

  // Whether `failure` came from a neighbouring stage: a broken stream to one, or its tensors
  // that stopped coming.
  bool NeighbourLost(const absl::Status& failure) {
    if (failure.code() == absl::StatusCode::kDeadlineExceeded) return true;
    for (GrpcSendLink* link : {to_next_.get(), to_previous_.get(), to_first_.get(),
                               control_to_next_.get(), control_to_previous_.get()}) {
      if (link != nullptr && !link->status().ok()) return true;
    }
    return false;
  }

  absl::Status Run() {
    const uint64_t first = std::max<uint64_t>(1, assignment_.start_step());
    if (first > training_.steps()) {
      reporter_->Report(training_.steps(), 0, 0, 0, /*done=*/true);
      return absl::OkStatus();
    }
    const uint64_t report_every = std::max<uint32_t>(1, training_.report_every());
    const int window = config_.context + 1;
    rows_.resize(static_cast<size_t>(micro_batches_) * batch_ * window);
    seeds_.resize(micro_batches_);
    const uint64_t seed = training_.seed() * 1000003 + group_;  // As GradientComputer's rank g.
    double window_loss = 0;
    uint64_t window_steps = 0;
    absl::Time window_start = absl::Now();
    pipeline_->Start(first);
    for (uint64_t step = first; step <= training_.steps(); ++step) {
      if (cancel_->load()) return absl::CancelledError("job cancelled");
      const absl::Time start = absl::Now();
      step_ = step;
      pipeline_->BeginStep(step);
      // PULL: this stage's part (sent at the end of the previous step).
      RETURN_IF_ERROR(pipeline_->AwaitAllParameters());
      // Validation (group 0, through its stages) on the parameters this step starts from.
      float val_loss = 0;
      const uint64_t eval_every = training_.eval_every();
      if (group_ == 0 && eval_every > 0 && step > first && (step - 1) % eval_every == 0) {
        ASSIGN_OR_RETURN(val_loss, PipelinedValidationLoss(training_.steps() + step));
        if (part_.head) metrics_->RecordValidation(val_loss);
      }
      const absl::Time pulled = absl::Now();
      // COMPUTE: the group's micro-batches, drawn as GradientComputer draws them for rank g.
      SampleStepRows(corpus_, vocabulary_, seed, step, micro_batches_, batch_, window,
                     rows_.data(), seeds_.data());
      ASSIGN_OR_RETURN(const float loss,
                       stage_step_->Step(step, pipeline_->params(), rows_.data(), seeds_.data(),
                                         pipeline_->grads()));
      if (std::isnan(loss)) {
        return absl::InternalError(absl::StrCat("loss became NaN at step ", step,
                                                " (a token out of range, or diverging)"));
      }
      RETURN_IF_ERROR(ExchangeTiedGradient());
      const absl::Time computed = absl::Now();
      // PUSH: the part's gradient (the group's norm first, if clipping), the next pulls.
      RETURN_IF_ERROR(pipeline_->FinishStep());
      const absl::Time pushed = absl::Now();
      metrics_->RecordPhase(TrainingMetrics::kPull, pulled - start);
      metrics_->RecordPhase(TrainingMetrics::kCompute, computed - pulled);
      metrics_->RecordPhase(TrainingMetrics::kPush, pushed - computed);
      const int tokens = micro_batches_ * batch_ * config_.context;
      metrics_->RecordStep(step, pushed - start, tokens, wire_bytes_, wire_bytes_,
                           pipeline_->grad_norm());
      window_loss += loss;
      ++window_steps;
      const bool last = step == training_.steps();
      if (last || step % report_every == 0 || val_loss > 0) {
        const double seconds = absl::ToDoubleSeconds(absl::Now() - window_start);
        const float tokens_per_sec =
            seconds > 0 ? static_cast<float>(window_steps * tokens / seconds) : 0;
        const float mean_loss = static_cast<float>(window_loss / window_steps);
        reporter_->set_step_seconds(static_cast<float>(seconds / window_steps));
        metrics_->RecordWindow(mean_loss, tokens_per_sec);
        window_loss = 0;
        window_steps = 0;
        window_start = absl::Now();
        if (last) return Finish(step, mean_loss, tokens_per_sec);
        if (reporter_->Report(step, part_.head ? mean_loss : 0, part_.head ? tokens_per_sec : 0,
                              part_.head ? val_loss : 0, /*done=*/false)) {
          return absl::CancelledError("job cancelled");
        }
      }
    }
    return absl::OkStatus();
  }

 private:
  StageStreamKey Key(int to_stage, StageTensor::Kind kind) const {
    return StageStreamKey{assignment_.job_id(), assignment_.attempt(), group_,
                          static_cast<uint32_t>(to_stage), kind, assignment_.start_step()};
  }

  std::unique_ptr<GrpcSendLink> SendLink(int to_stage, StageTensor::Kind kind, DType dtype) {
    return std::make_unique<GrpcSendLink>(CreateChannel(assignment_.stage_addresses(to_stage)),
                                          Key(to_stage, kind), dtype);
  }

  // Links to the neighbours, and the stage's step over them. Activations and their gradients go
  // in parallelism.activation_dtype (FP32 by default: exact, so a pipeline computes what one
  // worker would; BF16: half the bytes, rounded once each way); the control values (the tied
  // wte's gradient, the group's norm) always in FP32, on links of their own if need be.
  void ConnectStages(PipelineSchedule schedule) {
    StageLinks links;
    if (index_ > 0) {
      from_previous_ = std::make_unique<InboxLink>(
          options_.inbox, Key(index_, StageTensor::ACTIVATIONS), options_.receive_timeout, cancel_);
      to_previous_ = SendLink(index_ - 1, StageTensor::GRADIENTS, activation_dtype_);
      if (activation_dtype_ != FP32) {
        control_to_previous_ = SendLink(index_ - 1, StageTensor::GRADIENTS, FP32);
      }
      links.from_previous = from_previous_.get();
      links.to_previous = to_previous_.get();
    }
    if (index_ + 1 < stages_) {
      to_next_ = SendLink(index_ + 1, StageTensor::ACTIVATIONS, activation_dtype_);
      if (activation_dtype_ != FP32) {
        control_to_next_ = SendLink(index_ + 1, StageTensor::ACTIVATIONS, FP32);
      }
      from_next_ = std::make_unique<InboxLink>(
          options_.inbox, Key(index_, StageTensor::GRADIENTS), options_.receive_timeout, cancel_);
      links.to_next = to_next_.get();
      links.from_next = from_next_.get();
    }
    // The last stage's part of the tied wte gradient goes to the first stage (micro-batch index
    // M): past the neighbour when there are more than 2 stages.
    if (part_.head && !part_.embeddings) {
      to_first_ = stages_ == 2 && activation_dtype_ == FP32
                      ? nullptr
                      : SendLink(0, StageTensor::GRADIENTS, FP32);
    }
    stage_step_ = std::make_unique<PipelineStage>(model_.get(), index_, stages_, schedule,
                                                  micro_batches_, batch_, links);
  }

  absl::Status ConnectServers() {
    ResilientClient::Options client_options;
    client_options.wire_dtype = training_.wire_dtype() == BF16 ? BF16 : FP32;
    client_options.consistency = SYNC;
    ASSIGN_OR_RETURN(std::vector<TableSpec> tables, ModelTables(spec_.model(), training_.seed()));
    client_options.targets.part = PartKeys(tables, part_, config_.layers);
    if (part_.head && !part_.embeddings) client_options.targets.pull_only = {"wte"};
    ResilientClient::Coordinator coordinator;
    ProgressReporter* const reporter = reporter_;
    coordinator.report_unreachable = [reporter](const std::string& address) {
      reporter->ReportUnreachable(address);
    };
    coordinator.shard_map = [reporter] { return reporter->CurrentShardMap(); };
    // The servers see the group as one data-parallel worker: rank g.
    ASSIGN_OR_RETURN(client_, ResilientClient::Create(assignment_.shard_map(), group_,
                                                      client_options, coordinator,
                                                      CreateGrpcServerTransport, cancel_));
    if (client_->num_parameters() != model_->num_parameters()) {
      return absl::FailedPreconditionError(
          absl::StrCat("the shard map holds ", client_->num_parameters(),
                       " parameters of this stage's part; its model has ",
                       model_->num_parameters()));
    }
    wire_bytes_ =
        client_->num_parameters() * (client_options.wire_dtype == BF16 ? 2 : sizeof(float));
    StepPipeline::Options pipeline_options;
    pipeline_options.overlap = false;  // The stage's compute waits on its neighbours anyway.
    pipeline_options.grad_clip = training_.grad_clip();
    pipeline_options.consistency = SYNC;
    if (stages_ > 1) {
      pipeline_options.combine_squares = [this](double own) { return GroupSquares(own); };
    }
    pipeline_ = std::make_unique<StepPipeline>(client_.get(), pipeline_options);
    return absl::OkStatus();
  }

  // The tied token embedding: the last stage sends its (head's) part of wte's gradient to the
  // first, which adds it to the embedding's part and pushes the sum (the servers see one push of
  // wte per group).
  absl::Status ExchangeTiedGradient() {
    if (stages_ == 1) return absl::OkStatus();
    const size_t wte = static_cast<size_t>(config_.vocab) * config_.width;  // First in the part.
    float* grads = pipeline_->grads();
    if (part_.head) {
      StageLink* link = to_first_ != nullptr ? to_first_.get() : to_previous_.get();
      link->BeginStep(step_);
      return link->Send(micro_batches_, std::vector<float>(grads, grads + wte));
    }
    if (!part_.embeddings) return absl::OkStatus();
    ASSIGN_OR_RETURN(std::vector<float> head, from_next_->Receive(micro_batches_));
    if (head.size() != wte) {
      return absl::InvalidArgumentError(absl::StrCat("the head's wte gradient has ", head.size(),
                                                     " values; expected ", wte));
    }
    for (size_t i = 0; i < wte; ++i) grads[i] += head[i];
    return absl::OkStatus();
  }

  // The group's sum of squares: added up the chain to stage 0 (each stage adds its own), then
  // handed back down, so that every stage clips with the very same number.
  absl::StatusOr<double> GroupSquares(double own) {
    const int tag = micro_batches_ + 1;
    double partial = own;
    if (from_next_ != nullptr) {
      ASSIGN_OR_RETURN(const double later, Unpack(from_next_->Receive(tag)));
      partial += later;
    }
    double total = partial;
    GrpcSendLink* up = control_to_previous_ != nullptr ? control_to_previous_.get()
                                                       : to_previous_.get();
    GrpcSendLink* down = control_to_next_ != nullptr ? control_to_next_.get() : to_next_.get();
    if (up != nullptr) {
      up->BeginStep(step_);
      RETURN_IF_ERROR(up->Send(tag, Pack(partial)));
      ASSIGN_OR_RETURN(total, Unpack(from_previous_->Receive(tag)));
    }
    if (down != nullptr) {
      down->BeginStep(step_);
      RETURN_IF_ERROR(down->Send(tag, Pack(total)));
    }
    return total;
  }

  // The end: the final parameters (every group's last step applied), the validation loss
  // through group 0's pipeline, and the last report.
  absl::Status Finish(uint64_t step, float mean_loss, float tokens_per_sec) {
    RETURN_IF_ERROR(pipeline_->FinishRun());
    float val_loss = 0;
    if (group_ == 0) {
      const absl::Time start = absl::Now();
      ASSIGN_OR_RETURN(val_loss, PipelinedValidationLoss(2 * training_.steps() + 1));
      metrics_->RecordPhase(TrainingMetrics::kEval, absl::Now() - start);
      if (part_.head) metrics_->RecordValidation(val_loss);
    }
    for (GrpcSendLink* link : {to_next_.get(), to_previous_.get(), to_first_.get(),
                               control_to_next_.get(), control_to_previous_.get()}) {
      if (link != nullptr) RETURN_IF_ERROR(link->Flush());
    }
    reporter_->Report(step, part_.head ? mean_loss : 0, part_.head ? tokens_per_sec : 0,
                      part_.head ? val_loss : 0, /*done=*/true);
    return absl::OkStatus();
  }

  // training.eval_batches batches of the validation split (drawn as ValidationLoss draws them),
  // forward only, through the group's stages: the last stage's mean loss (others: 0). `tag_step`
  // tags its tensors: N + s before step s, 2N + 1 at the end (N steps), never a training step.
  absl::StatusOr<float> PipelinedValidationLoss(uint64_t tag_step) {
    const int window = config_.context + 1;
    const int batches = static_cast<int>(training_.eval_batches());
    std::vector<int32_t> rows(static_cast<size_t>(batch_) * window);
    std::vector<float> output(static_cast<size_t>(batch_) * config_.context * config_.width);
    std::mt19937_64 rng(kValidationSeed);
    for (StageLink* link : {static_cast<StageLink*>(from_previous_.get()),
                            static_cast<StageLink*>(to_next_.get())}) {
      if (link != nullptr) link->BeginStep(tag_step);
    }
    RETURN_IF_ERROR(model_->BeginStep(pipeline_->params(), /*grads=*/nullptr));
    double total = 0;
    for (int b = 0; b < batches; ++b) {
      validation_.SampleTokens(rng, batch_, window, vocabulary_, rows.data());
      std::vector<float> input;
      if (from_previous_ != nullptr) {
        ASSIGN_OR_RETURN(input, from_previous_->Receive(b));
      }
      if (!input.empty() && input.size() != output.size()) {
        return absl::InvalidArgumentError("validation activations of the wrong size");
      }
      ASSIGN_OR_RETURN(const float loss,
                       model_->Forward(0, rows.data(), input.data(), batch_, /*seed=*/0,
                                       part_.head ? nullptr : output.data(), /*training=*/false));
      if (to_next_ != nullptr) RETURN_IF_ERROR(to_next_->Send(b, output));
      total += loss;
    }
    return part_.head ? static_cast<float>(total / batches) : 0.0f;
  }

  const WorkAssignment& assignment_;
  const JobSpec& spec_;
  const TrainingSpec& training_;
  const int stages_;
  const int index_;  // This worker's stage.
  const uint32_t group_;
  const int micro_batches_;
  const int batch_;
  ProgressReporter* const reporter_;
  const std::atomic<bool>* const cancel_;
  const StageRunOptions& options_;
  TrainingMetrics* const metrics_;
  uint64_t step_ = 0;

  std::unique_ptr<Tokenizer> tokenizer_;
  ByteToToken vocabulary_;
  GptConfig config_;
  GptPart part_;
  Corpus corpus_ = Corpus::FromText("");
  Corpus validation_ = Corpus::FromText("");
  std::vector<int32_t> rows_;
  std::vector<uint64_t> seeds_;
  std::unique_ptr<InboxLink> from_previous_, from_next_;
  std::unique_ptr<GrpcSendLink> to_previous_, to_next_, to_first_;
  // With BF16 activations: FP32 links for the control values (else to_previous_, to_next_).
  std::unique_ptr<GrpcSendLink> control_to_previous_, control_to_next_;
  DType activation_dtype_ = FP32;
  std::unique_ptr<ResilientClient> client_;
  std::unique_ptr<StepPipeline> pipeline_;  // Uses client_.
  std::unique_ptr<StageModel> model_;
  std::unique_ptr<PipelineStage> stage_step_;
  uint64_t wire_bytes_ = 0;
};

}  // namespace

absl::Duration StageReceiveTimeout(const JobSpec& spec) {
  const uint32_t step_timeout = spec.training().step_timeout_seconds();
  if (step_timeout == 0) return absl::InfiniteDuration();
  return absl::Seconds(step_timeout) + absl::Minutes(1);
}

absl::Status RunStage(const WorkAssignment& assignment, ProgressReporter* reporter,
                      const std::atomic<bool>* cancel, const StageRunOptions& options,
                      TrainingMetrics* metrics) {
  StageRun run(assignment, reporter, cancel, options, metrics);
  RETURN_IF_ERROR(run.SetUp());
  const absl::Status status = run.Run();
  if (status.ok() || status.code() == absl::StatusCode::kCancelled || !run.NeighbourLost(status)) {
    return status;
  }
  // The neighbour's loss is the coordinator's to handle (failover.cc): it stops this run too.
  LOG(WARNING) << "job " << assignment.job_id() << ": " << status
               << "; waiting up to " << absl::FormatDuration(options.neighbour_grace)
               << " for the coordinator to handle the lost stage";
  const absl::Time until = absl::Now() + options.neighbour_grace;
  while (absl::Now() < until) {
    if (cancel->load()) {
      return absl::CancelledError(
          absl::StrCat("a neighbouring stage was lost (", status.message(),
                       "); the coordinator stopped this run"));
    }
    absl::SleepFor(absl::Milliseconds(50));
  }
  return status;
}

}  // namespace psrv
