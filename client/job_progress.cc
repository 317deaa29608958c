// Progress display for `psctl job watch` and `psctl local`.
#include "client/job_progress.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "absl/strings/str_cat.h"

namespace psrv {

absl::Duration JobElapsed(const JobStatus& status, absl::Time now) {
  if (status.start_time_ms() == 0) return absl::ZeroDuration();
  const absl::Time start = absl::FromUnixMillis(status.start_time_ms());
  const absl::Time end =
      status.end_time_ms() != 0 ? absl::FromUnixMillis(status.end_time_ms()) : now;
  return end > start ? end - start : absl::ZeroDuration();
}

bool HasLoss(const JobStatus& status) {
  return status.loss_history_size() > 0 || status.step() > 0;
}

bool HasValLoss(const JobStatus& status) {
  return status.val_loss() > 0 && std::isfinite(status.val_loss());
}

std::optional<ValidationPoint> BestValidation(const JobStatus& status) {
  std::optional<ValidationPoint> best;
  for (const ValidationPoint& point : status.val_history()) {
    if (!std::isfinite(point.loss())) continue;
    if (!best.has_value() || point.loss() < best->loss()) best = point;
  }
  return best;
}

JobProgressPrinter::JobProgressPrinter(std::ostream* out, Options options)
    : out_(out), options_(std::move(options)) {}

ProgressInfo JobProgressPrinter::Progress(const JobStatus& status) {
  ProgressInfo info;
  info.step = status.step();
  info.steps = status.spec().training().steps();
  if (HasLoss(status)) info.loss = status.loss();
  if (HasValLoss(status)) info.val_loss = status.val_loss();
  info.tokens_per_sec = status.tokens_per_sec();

  const absl::Time now = options_.clock();
  if (status.state() == RUNNING && !first_step_.has_value()) {
    first_step_ = status.step();
    first_step_time_ = now;
  }
  if (info.steps > 0 && info.step >= info.steps) {
    info.eta = absl::ZeroDuration();
  } else if (info.steps > 0) {
    const uint64_t left = info.steps - info.step;
    const absl::Duration observed = now - first_step_time_;
    if (first_step_.has_value() && info.step > *first_step_ && observed >= absl::Seconds(1)) {
      const double steps_per_sec =
          static_cast<double>(info.step - *first_step_) / absl::ToDoubleSeconds(observed);
      info.eta = absl::Seconds(left / steps_per_sec);
    } else if (info.tokens_per_sec > 0) {
      // Each worker step trains on batch_size tokens; tokens/s is summed over the workers.
      const double tokens_per_step =
          static_cast<double>(std::max<uint32_t>(1, status.spec().training().batch_size())) *
          std::max<uint32_t>(1, status.spec().num_workers());
      info.eta = absl::Seconds(left * tokens_per_step / info.tokens_per_sec);
    }
  }
  return info;
}

void JobProgressPrinter::EndLine() {
  if (line_open_) {
    *out_ << "\n";
    out_->flush();
    line_open_ = false;
  }
}

void JobProgressPrinter::Update(const JobStatus& status) {
  const bool ended =
      status.state() == SUCCEEDED || status.state() == FAILED || status.state() == CANCELLED;
  // Finish() reports how the job ended; here only the last bar is drawn.
  if (status.state() != last_state_ && !ended) {
    EndLine();
    std::string line = absl::StrCat("job ", status.job_id());
    if (!status.spec().name().empty()) absl::StrAppend(&line, " (", status.spec().name(), ")");
    absl::StrAppend(&line, ": ", JobState_Name(status.state()));
    if (status.state() == PENDING) {
      absl::StrAppend(&line, ", waiting for ", status.spec().num_servers(), " server(s) and ",
                      status.spec().num_workers(), " idle worker(s)");
    }
    if (!status.message().empty()) absl::StrAppend(&line, ": ", status.message());
    *out_ << line << "\n";
    out_->flush();
    last_state_ = status.state();
  }
  if (status.state() != RUNNING && status.state() != SUCCEEDED) return;

  const ProgressInfo info = Progress(status);
  const std::string bar = ProgressLine(info, options_.bar_width);
  if (options_.tty) {
    *out_ << "\r" << bar << "\033[K";
    out_->flush();
    line_open_ = true;
    return;
  }
  const int decile =
      info.steps > 0 ? static_cast<int>(std::min<uint64_t>(10, info.step * 10 / info.steps)) : 0;
  const absl::Time now = options_.clock();
  const bool quiet_too_long = now - last_printed_time_ >= options_.quiet_interval;
  if ((decile > last_decile_ || quiet_too_long) && info.step != last_printed_step_) {
    *out_ << bar << "\n";
    out_->flush();
    last_decile_ = std::max(last_decile_, decile);
    last_printed_step_ = info.step;
    last_printed_time_ = now;
  }
}

void JobProgressPrinter::Finish(const JobStatus& status) {
  EndLine();
  const absl::Time now = options_.clock();
  *out_ << "job " << status.job_id() << " " << JobState_Name(status.state()) << ": step "
        << status.step() << "/" << status.spec().training().steps() << ", loss "
        << FormatLoss(status.loss(), HasLoss(status)) << ", elapsed "
        << FormatClock(JobElapsed(status, now)) << "\n";
  const std::optional<ValidationPoint> best = BestValidation(status);
  if (best.has_value()) {
    *out_ << "final training loss " << FormatLoss(status.loss(), HasLoss(status))
          << ", best validation loss " << FormatLoss(best->loss()) << " at step " << best->step();
    const ValidationPoint& last = status.val_history(status.val_history_size() - 1);
    if (last.step() != best->step()) {
      *out_ << " (last " << FormatLoss(last.loss()) << " at step " << last.step() << ")";
    }
    *out_ << "\n";
  } else if (HasValLoss(status)) {
    *out_ << "final training loss " << FormatLoss(status.loss(), HasLoss(status))
          << ", validation loss " << FormatLoss(status.val_loss()) << "\n";
  }
  if (!status.message().empty()) *out_ << "message: " << status.message() << "\n";
  if (!status.sample().empty()) {
    std::string sample = PrintableText(status.sample());
    if (sample.back() != '\n') sample += '\n';
    *out_ << "\nSample of generated text:\n" << sample;
  }
  out_->flush();
}

}  // namespace psrv
