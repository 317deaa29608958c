#include "client/curves.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <fstream>
#include <sstream>

namespace psrv {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

JobStatus Job() {
  JobStatus job;
  job.set_job_id("job-3");
  job.mutable_spec()->set_name("it's a test");
  job.set_state(SUCCEEDED);
  for (int step : {10, 20, 30}) {
    LossPoint* p = job.add_loss_history();
    p->set_step(step);
    p->set_loss(6.0f - step / 10.0f);
    p->set_tokens_per_sec(1000.0f + step);
  }
  ValidationPoint* v = job.add_val_history();
  v->set_step(20);
  v->set_loss(4.25f);
  v = job.add_val_history();
  v->set_step(31);  // The final validation, after the last step.
  v->set_loss(3.5f);
  return job;
}

std::string Read(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

TEST(CurvesTest, CsvMergesTrainingAndValidationBySteps) {
  EXPECT_EQ(CurvesCsv(Job()),
            "step,train_loss,val_loss,tokens_per_sec\n"
            "10,5,,1010.0\n"
            "20,4,4.25,1020.0\n"
            "30,3,,1030.0\n"
            "31,,3.5,\n");
}

TEST(CurvesTest, ScriptDrawsWhatTheJobHas) {
  const std::string script = GnuplotScript(Job(), "/tmp/d/job-3.csv", "/tmp/d/job-3.png");
  EXPECT_THAT(script, HasSubstr("set output '/tmp/d/job-3.png'"));
  EXPECT_THAT(script, HasSubstr("multiplot layout 2,1 title 'job-3 (it''s a test), SUCCEEDED'"));
  EXPECT_THAT(script, HasSubstr("title 'validation'"));
  EXPECT_THAT(script, HasSubstr("title 'tokens/s'"));
  JobStatus bare = Job();
  bare.clear_val_history();
  for (LossPoint& p : *bare.mutable_loss_history()) p.set_tokens_per_sec(0);
  const std::string simple = GnuplotScript(bare, "a.csv", "a.png");
  EXPECT_THAT(simple, Not(HasSubstr("multiplot")));
  EXPECT_THAT(simple, Not(HasSubstr("validation")));
}

TEST(CurvesTest, WritesCsvAndPngOrSaysWhyNot) {
  const std::string dir = ::testing::TempDir() + "/curves";
  absl::StatusOr<CurveFiles> files = WriteCurves(Job(), dir, "");
  ASSERT_TRUE(files.ok()) << files.status();
  EXPECT_EQ(files->csv, dir + "/job-3.csv");
  EXPECT_EQ(Read(files->csv), CurvesCsv(Job()));
  EXPECT_EQ(files->png, "");
  EXPECT_THAT(files->note, HasSubstr("gnuplot is not installed"));

  // A gnuplot that fails: the CSV stays, the note says why.
  files = WriteCurves(Job(), dir, "/bin/false");
  ASSERT_TRUE(files.ok());
  EXPECT_EQ(files->png, "");
  EXPECT_THAT(files->note, HasSubstr("gnuplot failed (exit 1)"));
  EXPECT_EQ(access((dir + "/job-3.gp").c_str(), F_OK), -1);  // No leftovers.

  const std::string gnuplot = FindGnuplot();
  if (gnuplot.empty()) {
    std::cout << "SKIPPED the PNG part: gnuplot is not installed (apt-get install gnuplot-nox)\n";
  } else {
    files = WriteCurves(Job(), dir, gnuplot);
    ASSERT_TRUE(files.ok());
    ASSERT_EQ(files->png, dir + "/job-3.png") << files->note;
    const std::string png = Read(files->png);
    ASSERT_GT(png.size(), 1000u);
    EXPECT_EQ(png.substr(0, 8), "\x89PNG\r\n\x1a\n");
  }

  JobStatus empty;
  empty.set_job_id("job-9");
  EXPECT_EQ(WriteCurves(empty, dir, "").status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace psrv
