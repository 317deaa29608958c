#include "worker/pipeline/pipeline_stage.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/status_macros.h"

namespace psrv {

PipelineStage::PipelineStage(StageModel* model, int stage, int stages, PipelineSchedule schedule,
                             int micro_batches, int batch, StageLinks links)
    : model_(model),
      stage_(stage),
      stages_(stages),
      micro_batches_(micro_batches),
      batch_(batch),
      links_(links),
      ops_(StageOps(schedule, stages, stage, micro_batches)) {}

absl::StatusOr<float> PipelineStage::Step(uint64_t step, const float* params,
                                          const int32_t* rows, const uint64_t* seeds,
                                          float* grads) {
  for (StageLink* link :
       {links_.from_previous, links_.to_next, links_.from_next, links_.to_previous}) {
    if (link != nullptr) link->BeginStep(step);
  }
  const bool first = stage_ == 0, last = stage_ == stages_ - 1;
  const GptConfig& config = model_->config();
  const size_t tensor = static_cast<size_t>(batch_) * config.context * config.width;
  const size_t rows_per_micro = static_cast<size_t>(batch_) * (config.context + 1);
  times_ = StageTimes();
  RETURN_IF_ERROR(model_->BeginStep(params, grads));
  std::vector<int> slot_of(micro_batches_, -1);
  std::vector<int> free_slots;
  for (int s = MaxInFlight(ops_) - 1; s >= 0; --s) free_slots.push_back(s);
  std::vector<float> output(last ? 0 : tensor), dinput(first ? 0 : tensor);
  double loss = 0;
  int in_flight = 0;
  // A neighbour's (batch, T, C) tensor of micro-batch m; the time waiting for it counted.
  auto receive = [&](StageLink* link, int m,
                     const char* what) -> absl::StatusOr<std::vector<float>> {
    const absl::Time start = absl::Now();
    absl::StatusOr<std::vector<float>> received = link->Receive(m);
    times_.waiting_seconds += absl::ToDoubleSeconds(absl::Now() - start);
    if (received.ok() && received->size() != tensor) {
      return absl::InvalidArgumentError(absl::StrCat("stage ", stage_, ": micro-batch ", m, "'s ",
                                                     what, " have ", received->size(),
                                                     " values; expected ", tensor));
    }
    return received;
  };
  auto busy = [this](absl::Time since) {
    times_.busy_seconds += absl::ToDoubleSeconds(absl::Now() - since);
  };
  for (const StageOp& op : ops_) {
    const int m = op.micro_batch;
    if (op.kind == StageOp::kForward) {
      std::vector<float> input;
      if (!first) {
        ASSIGN_OR_RETURN(input, receive(links_.from_previous, m, "activations"));
      }
      const absl::Time start = absl::Now();
      slot_of[m] = free_slots.back();
      free_slots.pop_back();
      times_.peak_in_flight = std::max(times_.peak_in_flight, ++in_flight);
      ASSIGN_OR_RETURN(const float micro_loss,
                       model_->Forward(slot_of[m], rows + m * rows_per_micro,
                                       first ? nullptr : input.data(), batch_, seeds[m],
                                       last ? nullptr : output.data(), /*training=*/true));
      loss += micro_loss;
      busy(start);
      if (!last) RETURN_IF_ERROR(links_.to_next->Send(m, output));
    } else {
      std::vector<float> doutput;
      if (!last) {
        ASSIGN_OR_RETURN(doutput, receive(links_.from_next, m, "output gradient"));
      }
      const absl::Time start = absl::Now();
      RETURN_IF_ERROR(model_->Backward(slot_of[m], last ? nullptr : doutput.data(),
                                       first ? nullptr : dinput.data()));
      free_slots.push_back(slot_of[m]);
      --in_flight;
      busy(start);
      if (!first) RETURN_IF_ERROR(links_.to_previous->Send(m, dinput));
    }
  }
  const absl::Time start = absl::Now();
  RETURN_IF_ERROR(model_->EndStep(micro_batches_));
  busy(start);
  // (Only the last stage has a loss; the others a NaN for a bad token id, else 0.)
  return static_cast<float>(last ? loss / micro_batches_ : (std::isnan(loss) ? loss : 0.0));
}

}  // namespace psrv
