#include "client/curves.h"

#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <optional>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "common/files.h"
#include "common/subprocess.h"

namespace psrv {
namespace {

// A gnuplot single-quoted string literal.
std::string Quoted(const std::string& text) {
  return absl::StrCat("'", absl::StrReplaceAll(text, {{"'", "''"}}), "'");
}

std::string FileStem(const std::string& job_id) {
  std::string stem = job_id;
  for (char& c : stem) {
    if (c == '/' || c == '\\' || c == '\0') c = '_';
  }
  return stem.empty() ? "job" : stem;
}

// gnuplot's complaint, on one line.
std::string ReadLog(const std::string& path) {
  std::ifstream in(path);
  std::string text, line;
  while (std::getline(in, line)) {
    if (!line.empty()) absl::StrAppend(&text, text.empty() ? "" : " | ", line);
  }
  return text.size() > 400 ? text.substr(text.size() - 400) : text;
}

bool HasThroughput(const JobStatus& job) {
  for (const LossPoint& p : job.loss_history()) {
    if (p.tokens_per_sec() > 0) return true;
  }
  return false;
}

}  // namespace

std::string CurvesCsv(const JobStatus& job) {
  struct Row {
    std::optional<float> train, val, tokens;
  };
  std::map<uint64_t, Row> rows;
  for (const LossPoint& p : job.loss_history()) {
    rows[p.step()].train = p.loss();
    if (p.tokens_per_sec() > 0) rows[p.step()].tokens = p.tokens_per_sec();
  }
  for (const ValidationPoint& p : job.val_history()) rows[p.step()].val = p.loss();
  std::string csv = "step,train_loss,val_loss,tokens_per_sec\n";
  auto value = [](const std::optional<float>& v, const char* format) {
    return v.has_value() ? absl::StrFormat(format, *v) : std::string();
  };
  for (const auto& [step, row] : rows) {
    absl::StrAppend(&csv, step, ",", value(row.train, "%.6g"), ",", value(row.val, "%.6g"), ",",
                    value(row.tokens, "%.1f"), "\n");
  }
  return csv;
}

std::string GnuplotScript(const JobStatus& job, const std::string& csv_path,
                          const std::string& png_path) {
  const bool throughput = HasThroughput(job);
  const std::string data = Quoted(csv_path);
  std::string title = job.job_id();
  if (!job.spec().name().empty()) absl::StrAppend(&title, " (", job.spec().name(), ")");
  if (job.state() != JOB_STATE_UNSPECIFIED) {
    absl::StrAppend(&title, ", ", JobState_Name(job.state()));
  }
  std::string script = absl::StrCat(
      "set terminal pngcairo noenhanced size 1000,", throughput ? 700 : 420,
      " font 'sans,10'\n", "set output ", Quoted(png_path), "\n",
      "set datafile separator ','\n", "set key top right\n", "set grid\n");
  if (throughput) {
    absl::StrAppend(&script, "set multiplot layout 2,1 title ", Quoted(title), "\n");
    script += "set title 'Loss (nats/token)'\n";
  } else {
    absl::StrAppend(&script, "set title ", Quoted(title + ": loss (nats/token)"), "\n");
  }
  absl::StrAppend(&script, "set xlabel 'step'\nset ylabel 'loss'\n", "plot ", data,
                  " using 1:2 skip 1 with lines lw 2 lc rgb '#2563eb' title 'train'");
  if (job.val_history_size() > 0) {
    absl::StrAppend(&script, ", ", data,
                    " using 1:3 skip 1 with linespoints pt 7 ps 0.6 lw 2 lc rgb '#dc2626' "
                    "title 'validation'");
  }
  script += "\n";
  if (throughput) {
    absl::StrAppend(&script, "set title 'Throughput (tokens/s, all workers)'\n",
                    "set ylabel 'tokens/s'\nset yrange [0:*]\n", "plot ", data,
                    " using 1:4 skip 1 with lines lw 2 lc rgb '#059669' title 'tokens/s'\n",
                    "unset multiplot\n");
  }
  return script;
}

std::string FindGnuplot() {
  const char* path = std::getenv("PATH");
  std::string dirs = path != nullptr && *path != '\0' ? path : "/usr/local/bin:/usr/bin:/bin";
  for (absl::string_view dir : absl::StrSplit(dirs, ':', absl::SkipEmpty())) {
    const std::string candidate = absl::StrCat(dir, "/gnuplot");
    if (access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return "";
}

absl::StatusOr<CurveFiles> WriteCurves(const JobStatus& job, const std::string& dir,
                                       const std::string& gnuplot) {
  if (job.loss_history_size() == 0 && job.val_history_size() == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("job ", job.job_id(), " has no training curve yet (no progress reported)"));
  }
  absl::Status created = CreateDirectories(dir);
  if (!created.ok()) return created;
  const std::string stem = absl::StrCat(dir, "/", FileStem(job.job_id()));
  CurveFiles files;
  files.csv = stem + ".csv";
  {
    std::ofstream out(files.csv, std::ios::binary | std::ios::trunc);
    out << CurvesCsv(job);
    if (!out.flush()) {
      return absl::InternalError(absl::StrCat("cannot write ", files.csv, ": ", strerror(errno)));
    }
  }
  if (gnuplot.empty()) {
    files.note = "PNG skipped: gnuplot is not installed (apt-get install gnuplot-nox)";
    return files;
  }
  const std::string png = stem + ".png";
  const std::string script_path = stem + ".gp";
  const std::string log_path = stem + ".gnuplot.log";
  {
    std::ofstream script(script_path, std::ios::trunc);
    script << GnuplotScript(job, files.csv, png);
    if (!script.flush()) {
      return absl::InternalError(absl::StrCat("cannot write ", script_path));
    }
  }
  std::remove(log_path.c_str());
  Subprocess plot;
  absl::Status started = plot.Start({gnuplot, script_path}, log_path);
  absl::StatusOr<int> code =
      started.ok() ? plot.Wait(absl::Seconds(60)) : absl::StatusOr<int>(started);
  const std::string log = ReadLog(log_path);
  std::remove(script_path.c_str());
  std::remove(log_path.c_str());
  if (!code.ok() || *code != 0 || access(png.c_str(), R_OK) != 0) {
    files.note = absl::StrCat("PNG skipped: gnuplot failed",
                              code.ok() ? absl::StrCat(" (exit ", *code, ")")
                                        : absl::StrCat(": ", code.status().message()),
                              log.empty() ? "" : ": ", log);
    return files;
  }
  files.png = png;
  return files;
}

}  // namespace psrv
