#include "worker/trainer.h"

#include <algorithm>
#include <functional>
#include <memory>
#include <vector>

#include <glog/logging.h>
#include <grpcpp/client_context.h>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "common/model_layout.h"
#include "common/status.h"
#include "worker/compute.h"
#include "worker/data/corpus.h"
#include "worker/model/language_model.h"
#include "worker/model/synthetic_model.h"
#include "worker/model/tokenizer.h"
#include "worker/parameter_client.h"
#include "worker/training_metrics.h"

namespace psrv {
namespace {

// SYNC pulls wait for the slowest worker; a pull that times out is retried (pulls are idempotent)
// until the job is cancelled, so a slow step is not an error.
constexpr absl::Duration kPullTimeout = absl::Seconds(10);
// A push is answered at once, or (the one completing a replicated step) once the backup applied
// it, within a few seconds. One that takes longer is sent again (pushes are idempotent: chunks
// already accepted are not resent, a resend is answered ALREADY_EXISTS), which also lets the
// worker notice a cancel or a new shard map: a call to a server killed mid-transfer can otherwise
// hang until its deadline.
constexpr absl::Duration kPushTimeout = absl::Seconds(8);
// A server that stops answering (UNAVAILABLE) is retried this long: meanwhile the coordinator
// notices it is gone and restarts the job from a checkpoint (cancelling this run) or fails it.
constexpr absl::Duration kServerLostTimeout = absl::Minutes(2);

// Runs `call` until it returns anything but UNAVAILABLE, the job is cancelled, or
// kServerLostTimeout passed. Before each retry, `between` (may be null) gets a chance to repair
// things (follow a new shard map).
absl::Status RetryWhileUnavailable(const std::function<absl::Status()>& call,
                                   const std::atomic<bool>* cancel,
                                   const std::function<void()>& between) {
  const absl::Time give_up = absl::Now() + kServerLostTimeout;
  absl::Duration backoff = absl::Milliseconds(20);
  while (true) {
    absl::Status status = call();
    if (status.code() != absl::StatusCode::kUnavailable || absl::Now() > give_up) return status;
    if (cancel->load()) return absl::CancelledError("job cancelled");
    LOG_EVERY_N(WARNING, 20) << status << "; retrying";
    absl::SleepFor(backoff);
    backoff = std::min(2 * backoff, absl::Milliseconds(500));
    if (between) between();
  }
}

// The byte-level model may emit bytes that are not valid UTF-8; protobuf strings must be. Invalid
// bytes become '?'.
std::string ToValidUtf8(const std::string& bytes) {
  std::string out;
  out.reserve(bytes.size());
  size_t i = 0;
  while (i < bytes.size()) {
    const unsigned char c = bytes[i];
    int len = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xe ? 3 : (c >> 3) == 0x1e ? 4 : 0;
    bool valid = len > 0 && i + len <= bytes.size();
    for (int k = 1; valid && k < len; ++k) valid = (static_cast<unsigned char>(bytes[i + k]) >> 6) == 0x2;
    if (valid && len > 1) {
      // Reject overlong encodings, surrogates and code points above U+10FFFF.
      uint32_t cp = c & (0xff >> (len + 1));
      for (int k = 1; k < len; ++k) cp = (cp << 6) | (bytes[i + k] & 0x3f);
      static constexpr uint32_t kMin[5] = {0, 0, 0x80, 0x800, 0x10000};
      valid = cp >= kMin[len] && cp <= 0x10ffff && !(cp >= 0xd800 && cp <= 0xdfff);
    }
    if (valid) {
      out.append(bytes, i, len);
      i += len;
    } else {
      out.push_back('?');
      ++i;
    }
  }
  return out;
}

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
  LOG(INFO) << "job " << assignment.job_id() << ": model on " << choice.description;
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
  ParameterClient::Options client_options;
  client_options.wire_dtype = training.wire_dtype() == BF16 ? BF16 : FP32;
  ASSIGN_OR_RETURN(std::unique_ptr<ParameterClient> client,
                   ParameterClient::Create(assignment.shard_map(), assignment.rank(), client_options));
  if (client->num_parameters() != model->num_parameters()) {
    return absl::FailedPreconditionError(
        absl::StrCat("shard map has ", client->num_parameters(), " parameters, the model ",
                     model->num_parameters()));
  }
  std::vector<float> params(model->num_parameters());  // (num_parameters) pulled each step.
  std::vector<float> grads(model->num_parameters());   // (num_parameters) pushed each step.
  // Each worker draws its own minibatches and dropout masks: its own seed stream.
  GradientComputer computer(model.get(), &corpus, &vocabulary,
                            static_cast<int>(training.batch_size()), training.grad_clip(),
                            training.seed() * 1000003 + assignment.rank(),
                            static_cast<int>(training.grad_accumulation_steps()));
  auto validation_loss = [&]() {
    const absl::Time start = absl::Now();
    const float loss = ValidationLoss(model.get(), params.data(), validation, vocabulary,
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
  // Fail-over: a server that stopped answering may have been replaced by its shards' backups. The
  // coordinator's shard map says so with a higher epoch; the worker then talks to the new map.
  ShardMap shard_map = assignment.shard_map();
  auto follow_shard_map = [&]() -> bool {
    for (const std::string& address : client->unreachable()) reporter->ReportUnreachable(address);
    absl::StatusOr<ShardMap> latest = reporter->CurrentShardMap();
    if (!latest.ok() || latest->epoch() <= shard_map.epoch()) return false;
    absl::StatusOr<std::unique_ptr<ParameterClient>> next =
        ParameterClient::Create(*latest, assignment.rank(), client_options);
    if (!next.ok()) {
      LOG(WARNING) << "shard map epoch " << latest->epoch() << ": " << next.status();
      return false;
    }
    LOG(INFO) << "following shard map epoch " << latest->epoch() << " (was " << shard_map.epoch()
              << ")";
    client = std::move(*next);
    shard_map = *std::move(latest);
    return true;
  };
  // A promoted backup aggregates the step its primary had not finished afresh: every worker sends
  // its last push again (a step already applied is answered ALREADY_EXISTS, counted as accepted).
  uint64_t push_again = 0;  // Step whose gradient (still in `grads`) goes to the new map first.
  uint64_t pulling = 0;  // The step being pulled.
  auto follow_before_pull = [&] {
    // (ASYNC shards apply every push: sending one again would apply it twice.)
    if (follow_shard_map() && pulling > first_step && training.consistency() == SYNC) {
      push_again = pulling - 1;
    }
  };
  auto pull = [&](uint64_t step) -> absl::Status {
    pulling = step;
    while (true) {
      absl::Status status = RetryWhileUnavailable(
          [&]() -> absl::Status {
            if (push_again != 0) {
              RETURN_IF_ERROR(client->Push(push_again, grads.data(), kPushTimeout));
              push_again = 0;
            }
            return client->Pull(step, params.data(), kPullTimeout);
          },
          cancel, follow_before_pull);
      if (status.code() != absl::StatusCode::kDeadlineExceeded) return status;
      if (cancel->load()) return absl::CancelledError("job cancelled");
      // A slow step, or a hung server whose shards were failed over: check the map.
      follow_before_pull();
    }
  };

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
  for (uint64_t step = first_step; step <= training.steps(); ++step) {
    if (cancel->load()) return absl::CancelledError("job cancelled");
    const absl::Time step_start = absl::Now();
    RETURN_IF_ERROR(pull(step));
    const absl::Time pulled = absl::Now();
    metrics->RecordPhase(TrainingMetrics::kPull, pulled - step_start);
    // Validation on the parameters this step starts from (after step - 1 updates).
    float val_loss = 0;
    if (evaluator && eval_every > 0 && step > first_step && (step - 1) % eval_every == 0) {
      val_loss = validation_loss();
    }
    const absl::Time compute_start = absl::Now();
    const float loss = computer.Compute(step, params.data(), grads.data());
    const absl::Time computed = absl::Now();
    metrics->RecordPhase(TrainingMetrics::kCompute, computed - compute_start);
    if (!std::isfinite(loss)) {
      // A device error (CUDA) shows as a NaN loss: report the error itself.
      RETURN_IF_ERROR(DeviceModelStatus(*model));
      return absl::InternalError(absl::StrCat("loss became ", loss, " at step ", step,
                                              " (learning rate too high?)"));
    }
    RETURN_IF_ERROR(RetryWhileUnavailable(
        [&]() -> absl::Status {
          absl::Status pushed = client->Push(step, grads.data(), kPushTimeout);
          if (pushed.code() == absl::StatusCode::kDeadlineExceeded &&
              training.consistency() == SYNC) {  // (ASYNC would apply it twice.)
            return absl::UnavailableError(pushed.message());  // Sent again; see kPushTimeout.
          }
          return pushed;
        },
        cancel, [&] { follow_shard_map(); }));
    const absl::Time pushed = absl::Now();
    metrics->RecordPhase(TrainingMetrics::kPush, pushed - computed);
    metrics->RecordStep(step, pushed - step_start, computer.tokens_per_step(), wire_bytes,
                        wire_bytes, computer.last_grad_norm());
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
        std::string sample;
        float final_val_loss = 0;
        // Every worker waits for its last push to be applied before it reports done: if a
        // server fails over meanwhile, it still has the gradient to send again.
        if (training.consistency() == SYNC || evaluator) RETURN_IF_ERROR(pull(step + 1));
        if (evaluator) {
          final_val_loss = validation_loss();
          if (training.sample_length() > 0) {
            absl::StatusOr<std::vector<int32_t>> prompt = tokenizer->Encode("\n");
            std::vector<int32_t> tokens =
                Sample(*model, params.data(), prompt.ok() ? *prompt : std::vector<int32_t>{},
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
