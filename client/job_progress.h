// Draws a job's progress while psctl watches it: state changes as lines, a progress bar redrawn in
// place on a terminal (one line per ~10% otherwise), and a final summary with the losses and the
// generated sample.
#ifndef PSRV_CLIENT_JOB_PROGRESS_H_
#define PSRV_CLIENT_JOB_PROGRESS_H_

#include <cstdint>
#include <functional>
#include <optional>
#include <ostream>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/format.h"
#include "proto/job.pb.h"

namespace psrv {

// Not thread-safe; feed it the statuses of one job in order.
class JobProgressPrinter {
 public:
  struct Options {
    // Redraw one line with '\r'; else print a line per ~10% of the steps (and at least every
    // `quiet_interval` while steps advance, so long jobs show signs of life in a log).
    bool tty = false;
    absl::Duration quiet_interval = absl::Seconds(30);
    int bar_width = 30;
    std::function<absl::Time()> clock = [] { return absl::Now(); };
  };

  JobProgressPrinter(std::ostream* out, Options options);

  // Prints what changed since the previous status.
  void Update(const JobStatus& status);

  // Ends an in-place progress line so that other output (an error) starts on a fresh line.
  void EndLine();

  // Final state, step, loss, elapsed time, the final training and best validation losses, the
  // failure message and the sample text.
  void Finish(const JobStatus& status);

  // What the bar shows for `status`; the ETA comes from the step rate seen so far.
  ProgressInfo Progress(const JobStatus& status);

 private:
  std::ostream* out_;
  Options options_;
  JobState last_state_ = JOB_STATE_UNSPECIFIED;
  bool line_open_ = false;  // A '\r'-redrawn line is on screen without its newline.
  int last_decile_ = -1;    // Non-TTY: the last tenth of the steps printed.
  uint64_t last_printed_step_ = UINT64_MAX;
  absl::Time last_printed_time_ = absl::InfinitePast();
  // The first step seen while RUNNING and when, for the step rate.
  std::optional<uint64_t> first_step_;
  absl::Time first_step_time_;
};

// Wall time of a job: end - start when it ended, else now - start; zero before it started.
absl::Duration JobElapsed(const JobStatus& status, absl::Time now);

// True once a worker has reported a loss.
bool HasLoss(const JobStatus& status);

// True once a validation loss was measured (val_loss > 0).
bool HasValLoss(const JobStatus& status);

// The lowest validation loss of val_history (the earliest if several tie); none if it is empty.
std::optional<ValidationPoint> BestValidation(const JobStatus& status);

}  // namespace psrv

#endif  // PSRV_CLIENT_JOB_PROGRESS_H_
