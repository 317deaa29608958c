#include "client/job_progress.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <sstream>
#include <string>
#include <utility>

namespace psrv {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

class JobProgressTest : public ::testing::Test {
 protected:
  JobProgressPrinter MakePrinter(bool tty) {
    JobProgressPrinter::Options options;
    options.tty = tty;
    options.bar_width = 10;
    options.clock = [this] { return now_; };
    return JobProgressPrinter(&out_, options);
  }

  JobStatus Status(JobState state, uint64_t step, float loss = 0) {
    JobStatus status;
    status.set_job_id("j-7");
    status.mutable_spec()->set_name("tiny");
    status.mutable_spec()->mutable_training()->set_steps(100);
    status.mutable_spec()->mutable_training()->set_batch_size(10);
    status.mutable_spec()->set_num_servers(2);
    status.mutable_spec()->set_num_workers(2);
    status.set_state(state);
    status.set_step(step);
    status.set_loss(loss);
    if (step > 0) {
      status.set_tokens_per_sec(2000);
      status.add_loss_history()->set_loss(loss);
    }
    status.set_start_time_ms(absl::ToUnixMillis(start_));
    return status;
  }

  std::ostringstream out_;
  absl::Time start_ = absl::FromUnixSeconds(1700000000);
  absl::Time now_ = start_;
};

TEST_F(JobProgressTest, NonTtyPrintsStatesAndTenths) {
  JobProgressPrinter printer = MakePrinter(false);
  JobStatus pending = Status(PENDING, 0);
  pending.clear_start_time_ms();
  printer.Update(pending);
  printer.Update(pending);  // Same state again: nothing new.
  printer.Update(Status(RUNNING, 0));
  for (uint64_t step = 1; step <= 25; ++step) {
    now_ += absl::Milliseconds(100);
    printer.Update(Status(RUNNING, step, 2.5f));
  }
  EXPECT_EQ(out_.str(),
            "job j-7 (tiny): PENDING, waiting for 2 server(s) and 2 idle worker(s)\n"
            "job j-7 (tiny): RUNNING\n"
            "[..........] 0/100 0% loss - tok/s - eta -\n"
            // At 10 steps in 1 s (10 steps/s): 90 left take 9 s.
            "[#.........] 10/100 10% loss 2.500 tok/s 2.0k eta 0:09\n"
            "[##........] 20/100 20% loss 2.500 tok/s 2.0k eta 0:08\n");
}

TEST_F(JobProgressTest, NonTtyPrintsAfterLongQuiet) {
  JobProgressPrinter::Options options;
  options.bar_width = 10;
  options.quiet_interval = absl::Seconds(30);
  options.clock = [this] { return now_; };
  JobProgressPrinter printer(&out_, options);
  JobStatus running = Status(RUNNING, 0);
  running.mutable_spec()->mutable_training()->set_steps(100000);
  printer.Update(running);
  for (uint64_t step : {10, 20, 30}) {
    now_ += absl::Seconds(20);
    running.set_step(step);
    printer.Update(running);
  }
  // Lines at step 0 (first), 20 (40 s after the first line), but not 10 or 30 (20 s later).
  EXPECT_THAT(out_.str(), HasSubstr("] 0/100000 0%"));
  EXPECT_THAT(out_.str(), Not(HasSubstr("] 10/100000")));
  EXPECT_THAT(out_.str(), HasSubstr("] 20/100000 0%"));
  EXPECT_THAT(out_.str(), Not(HasSubstr("] 30/100000")));
}

TEST_F(JobProgressTest, EtaFromTokensBeforeTheStepRateIsKnown) {
  JobProgressPrinter printer = MakePrinter(false);
  // 2000 tok/s over 2 workers x batch 10 = 100 steps/s: 50 steps left take 0.5 s.
  ProgressInfo info = printer.Progress(Status(RUNNING, 50, 1.0f));
  ASSERT_TRUE(info.eta.has_value());
  EXPECT_EQ(*info.eta, absl::Milliseconds(500));
}

TEST_F(JobProgressTest, TtyRedrawsInPlaceAndFinishes) {
  JobProgressPrinter printer = MakePrinter(true);
  printer.Update(Status(RUNNING, 0));
  now_ += absl::Seconds(2);
  printer.Update(Status(RUNNING, 40, 2.0f));
  JobStatus done = Status(SUCCEEDED, 100, 1.25f);
  done.set_end_time_ms(absl::ToUnixMillis(start_ + absl::Seconds(83)));
  done.set_sample("Once upon a time\x01");
  printer.Update(done);
  printer.Finish(done);
  EXPECT_EQ(out_.str(),
            "job j-7 (tiny): RUNNING\n"
            "\r[..........] 0/100 0% loss - tok/s - eta -\033[K"
            "\r[####......] 40/100 40% loss 2.000 tok/s 2.0k eta 0:03\033[K"
            "\r[##########] 100/100 100% loss 1.250 tok/s 2.0k eta 0:00\033[K\n"
            "job j-7 SUCCEEDED: step 100/100, loss 1.250, elapsed 1:23\n"
            "\n"
            "Sample of generated text:\n"
            "Once upon a time?\n");
}

TEST_F(JobProgressTest, FailedJobShowsMessage) {
  JobProgressPrinter printer = MakePrinter(false);
  printer.Update(Status(RUNNING, 0));
  JobStatus failed = Status(FAILED, 30, 3.0f);
  failed.set_message("worker 1: cannot open /nope");
  failed.set_end_time_ms(absl::ToUnixMillis(start_ + absl::Seconds(5)));
  printer.Update(failed);
  printer.Finish(failed);
  const std::string text = out_.str();
  EXPECT_THAT(text, HasSubstr("job j-7 FAILED: step 30/100, loss 3.000, elapsed 0:05\n"));
  EXPECT_THAT(text, HasSubstr("message: worker 1: cannot open /nope\n"));
  EXPECT_THAT(text, Not(HasSubstr("Sample of generated text")));
}

TEST_F(JobProgressTest, ValidationLossInTheBarAndTheSummary) {
  JobProgressPrinter printer = MakePrinter(false);
  printer.Update(Status(RUNNING, 0));
  JobStatus running = Status(RUNNING, 50, 2.0f);
  printer.Update(running);  // No validation loss yet: no "val".
  running.set_step(60);
  running.set_val_loss(1.9124f);
  printer.Update(running);
  JobStatus done = Status(SUCCEEDED, 100, 1.25f);
  done.set_end_time_ms(absl::ToUnixMillis(start_ + absl::Seconds(83)));
  for (const auto& [step, loss] : {std::pair<uint64_t, float>{50, 1.9f}, {80, 1.4f}, {100, 1.5f}}) {
    ValidationPoint* point = done.add_val_history();
    point->set_step(step);
    point->set_loss(loss);
  }
  done.set_val_loss(1.5f);
  printer.Update(done);
  printer.Finish(done);
  const std::string text = out_.str();
  EXPECT_THAT(text, HasSubstr("] 50/100 50% loss 2.000 tok/s"));
  EXPECT_THAT(text, HasSubstr("] 60/100 60% loss 2.000 val 1.912 tok/s"));
  EXPECT_THAT(text, HasSubstr("] 100/100 100% loss 1.250 val 1.500 tok/s"));
  EXPECT_THAT(text, HasSubstr("job j-7 SUCCEEDED: step 100/100, loss 1.250, elapsed 1:23\n"
                              "final training loss 1.250, best validation loss 1.400 at step 80 "
                              "(last 1.500 at step 100)\n"));
}

TEST_F(JobProgressTest, NoValidationLineWithoutValidation) {
  JobProgressPrinter printer = MakePrinter(false);
  JobStatus done = Status(SUCCEEDED, 100, 1.25f);
  printer.Finish(done);
  EXPECT_THAT(out_.str(), Not(HasSubstr("validation")));
}

TEST(BestValidationTest, LowestLossEarliestOnTies) {
  JobStatus status;
  EXPECT_FALSE(BestValidation(status).has_value());
  for (const auto& [step, loss] : {std::pair<uint64_t, float>{10, 2.0f}, {20, 1.5f}, {30, 1.5f}}) {
    ValidationPoint* point = status.add_val_history();
    point->set_step(step);
    point->set_loss(loss);
  }
  ASSERT_TRUE(BestValidation(status).has_value());
  EXPECT_EQ(BestValidation(status)->step(), 20u);
  EXPECT_FLOAT_EQ(BestValidation(status)->loss(), 1.5f);
}

TEST(JobElapsedTest, StartEndAndNow) {
  const absl::Time now = absl::FromUnixSeconds(1000);
  JobStatus status;
  EXPECT_EQ(JobElapsed(status, now), absl::ZeroDuration());
  status.set_start_time_ms(990 * 1000);
  EXPECT_EQ(JobElapsed(status, now), absl::Seconds(10));
  status.set_end_time_ms(995 * 1000);
  EXPECT_EQ(JobElapsed(status, now), absl::Seconds(5));
}

}  // namespace
}  // namespace psrv
