#include "worker/pipeline/in_process_pipeline.h"

#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/status_macros.h"

namespace psrv {

absl::Status Mailbox::Send(int micro_batch, std::vector<float> tensor) {
  absl::MutexLock lock(&mu_);
  if (!tensors_.emplace(micro_batch, std::move(tensor)).second) {
    return absl::AlreadyExistsError(
        absl::StrCat("micro-batch ", micro_batch, " was sent twice"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<float>> Mailbox::Receive(int micro_batch) {
  absl::MutexLock lock(&mu_);
  auto arrived = [this, micro_batch]() ABSL_SHARED_LOCKS_REQUIRED(mu_) {
    return tensors_.count(micro_batch) > 0 || !closed_.ok();
  };
  mu_.Await(absl::Condition(&arrived));
  auto it = tensors_.find(micro_batch);
  if (it == tensors_.end()) return closed_;
  std::vector<float> tensor = std::move(it->second);
  tensors_.erase(it);
  return tensor;
}

void Mailbox::Close(const absl::Status& why) {
  absl::MutexLock lock(&mu_);
  closed_ = why;
}

absl::StatusOr<std::unique_ptr<InProcessPipeline>> InProcessPipeline::Create(
    const GptConfig& config, std::vector<StagePlan> plans, PipelineSchedule schedule,
    int micro_batches, int batch, const StageModelFactory& factory) {
  if (micro_batches < 1 || batch < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "micro_batches and batch must be >= 1; got ", micro_batches, " and ", batch));
  }
  std::unique_ptr<InProcessPipeline> pipeline(new InProcessPipeline());
  const int P = static_cast<int>(plans.size());
  pipeline->plans_ = std::move(plans);
  pipeline->batch_ = batch;
  for (int s = 0; s + 1 < P; ++s) {
    pipeline->forward_.push_back(std::make_unique<Mailbox>());
    pipeline->backward_.push_back(std::make_unique<Mailbox>());
  }
  for (int s = 0; s < P; ++s) {
    const int slots = MaxInFlight(StageOps(schedule, P, s, micro_batches));
    const GptPart& part = pipeline->plans_[s].part;
    ASSIGN_OR_RETURN(std::unique_ptr<StageModel> model,
                     factory ? factory(part, slots) : CreateCpuStageModel(config, part, slots));
    StageLinks links;
    if (s > 0) {
      links.from_previous = pipeline->forward_[s - 1].get();
      links.to_previous = pipeline->backward_[s - 1].get();
    }
    if (s + 1 < P) {
      links.to_next = pipeline->forward_[s].get();
      links.from_next = pipeline->backward_[s].get();
    }
    pipeline->stages_.push_back(std::make_unique<PipelineStage>(
        model.get(), s, P, schedule, micro_batches, batch, links));
    pipeline->models_.push_back(std::move(model));
  }
  return pipeline;
}

absl::StatusOr<PipelineStepResult> InProcessPipeline::Step(const std::vector<const float*>& params,
                                                           const int32_t* rows,
                                                           const uint64_t* seeds) {
  const int P = static_cast<int>(stages_.size());
  if (static_cast<int>(params.size()) != P) {
    return absl::InvalidArgumentError(
        absl::StrCat("parameters for ", params.size(), " stages; the pipeline has ", P));
  }
  PipelineStepResult result;
  result.grads.resize(P);
  std::vector<absl::StatusOr<float>> losses(P, 0.0f);
  const absl::Time start = absl::Now();
  std::vector<std::thread> threads;
  const uint64_t step = ++step_;
  for (int s = 0; s < P; ++s) {
    result.grads[s].resize(models_[s]->num_parameters());
    threads.emplace_back([&, s] {
      losses[s] = stages_[s]->Step(step, params[s], rows, seeds, result.grads[s].data());
      if (losses[s].ok()) return;
      const absl::Status failed(losses[s].status().code(),
                                absl::StrCat("stage ", s, " failed: ", losses[s].status().message()));
      for (auto& mailbox : forward_) mailbox->Close(failed);
      for (auto& mailbox : backward_) mailbox->Close(failed);
    });
  }
  for (std::thread& t : threads) t.join();
  result.wall_seconds = absl::ToDoubleSeconds(absl::Now() - start);
  for (int s = 0; s < P; ++s) {
    if (!losses[s].ok()) return losses[s].status();
    result.times.push_back(stages_[s]->times());
  }
  result.loss = *losses[P - 1];
  return result;
}

size_t InProcessPipeline::PeakActivationBytes(int stage) const {
  return static_cast<size_t>(stages_[stage]->times().peak_in_flight) *
         models_[stage]->ActivationBytes(batch_);
}

void AddPartToWhole(const GptConfig& config, const GptPart& part, const float* part_buffer,
                    float* whole) {
  const GptTableOffsets whole_tables =
      GptLayout<size_t>(0, config.layers, config.width, config.context, config.vocab);
  for (const auto& [range, at] :
       GptPartInWhole(part, config.layers, config.width, config.context, config.vocab)) {
    const bool tied = at == whole_tables.wte;
    for (size_t i = 0; i < range.count; ++i) {
      whole[at + i] = tied ? whole[at + i] + part_buffer[range.offset + i]
                           : part_buffer[range.offset + i];
    }
  }
}

std::vector<float> PartOfWhole(const GptConfig& config, const GptPart& part, const float* whole) {
  std::vector<float> buffer(GptPartSize(part, config.width, config.context, config.vocab));
  for (const auto& [range, at] :
       GptPartInWhole(part, config.layers, config.width, config.context, config.vocab)) {
    std::copy(whole + at, whole + at + range.count, buffer.begin() + range.offset);
  }
  return buffer;
}

}  // namespace psrv
