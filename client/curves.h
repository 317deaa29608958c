// A job's training curves as files to look at: <dir>/<job>.csv (step, training loss, validation
// loss, tokens/s) and <dir>/<job>.png, two panels drawn by gnuplot (`psctl job curves`, and
// `psctl local` at the end of its job).
#ifndef PSRV_CLIENT_CURVES_H_
#define PSRV_CLIENT_CURVES_H_

#include <string>

#include "absl/status/statusor.h"
#include "proto/job.pb.h"

namespace psrv {

// "step,train_loss,val_loss,tokens_per_sec" then one row per step that has a training loss
// (JobStatus.loss_history) or a validation loss (val_history), by step; a value it lacks is empty.
std::string CurvesCsv(const JobStatus& job);

// The gnuplot script that draws `csv_path` into `png_path`: the losses (and, when the job reported
// any, its throughput below them).
std::string GnuplotScript(const JobStatus& job, const std::string& csv_path,
                          const std::string& png_path);

// The gnuplot executable on PATH; "" if there is none.
std::string FindGnuplot();

struct CurveFiles {
  std::string csv;
  std::string png;   // "" when no plot was drawn.
  std::string note;  // Why not, e.g. "gnuplot is not installed (apt-get install gnuplot-nox)".
};

// Writes the CSV and, with `gnuplot` (a path; "" to skip), the PNG into `dir` (created if needed).
// INVALID_ARGUMENT if the job has no curve yet; INTERNAL if a file cannot be written. A failing
// gnuplot is not an error: the CSV is there and `note` says what went wrong.
absl::StatusOr<CurveFiles> WriteCurves(const JobStatus& job, const std::string& dir,
                                       const std::string& gnuplot);

}  // namespace psrv

#endif  // PSRV_CLIENT_CURVES_H_
