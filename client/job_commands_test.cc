// psctl's job commands against an in-process fake Coordinator.
#include "client/job_commands.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fstream>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

#include "client/command_test_util.h"

namespace psrv {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;

TEST_F(CommandsTest, SubmitAppliesOverridesAndDefaults) {
  JobSpecFlags flags = MinimalFlags();
  flags.name = "tiny";
  flags.steps = 200;
  flags.optimizer = "Momentum";
  flags.mode = "async";
  flags.servers = 3;
  flags.workers = 4;
  flags.model = "MLP";
  flags.hidden_dim = 32;
  EXPECT_EQ(JobSubmitCommand(env_, flags, /*watch=*/false, /*json=*/false), kExitOk) << err_.str();
  EXPECT_EQ(out_.str(), "job-1\n");
  ASSERT_EQ(coordinator_.submitted().size(), 1u);
  const JobSpec spec = coordinator_.submitted()[0];
  EXPECT_EQ(spec.name(), "tiny");
  EXPECT_EQ(spec.data().path(), "/data/text.txt");
  EXPECT_EQ(spec.training().steps(), 200u);
  EXPECT_EQ(spec.training().optimizer().kind(), MOMENTUM);
  EXPECT_FLOAT_EQ(spec.training().optimizer().momentum(), 0.9f);
  EXPECT_EQ(spec.training().consistency(), ASYNC);
  EXPECT_EQ(spec.num_servers(), 3u);
  EXPECT_EQ(spec.num_workers(), 4u);
  EXPECT_EQ(spec.model().kind(), "mlp");
  EXPECT_EQ(spec.model().hidden_dim(), 32u);
  EXPECT_EQ(spec.model().context(), 8u);         // The mlp's default.
  EXPECT_EQ(spec.training().batch_size(), 12u);  // Default.
}

TEST_F(CommandsTest, SubmitDefaultsToGptAndAdamW) {
  EXPECT_EQ(JobSubmitCommand(env_, MinimalFlags(), false, false), kExitOk) << err_.str();
  const JobSpec spec = coordinator_.submitted().at(0);
  EXPECT_EQ(spec.model().kind(), "gpt");
  EXPECT_EQ(spec.model().layers(), 4u);
  EXPECT_EQ(spec.model().context(), 64u);
  EXPECT_EQ(spec.model().tokenizer(), "byte");
  EXPECT_EQ(spec.model().vocabulary(), "");
  EXPECT_EQ(spec.training().optimizer().kind(), ADAMW);
  EXPECT_FLOAT_EQ(spec.training().optimizer().learning_rate(), 1e-3f);
  EXPECT_FLOAT_EQ(spec.data().validation_fraction(), 0.1f);
}

TEST_F(CommandsTest, SubmitMapsGptAdamWAndEvaluationFlags) {
  // A char tokenizer's vocabulary comes from the data file, read here.
  const std::string corpus = ::testing::TempDir() + "/corpus.txt";
  std::ofstream(corpus) << "to be, or not to be\n";
  JobSpecFlags flags;
  flags.data = corpus;
  flags.context = 256;
  flags.layers = 6;
  flags.heads = 6;
  flags.width = 192;
  flags.dropout = 0.2;
  flags.tokenizer = "Char";
  flags.validation_fraction = 0.05;
  flags.grad_clip = 1.0;
  flags.eval_every = 250;
  flags.eval_batches = 50;
  flags.optimizer = "adamw";
  flags.lr = 3e-4;
  flags.beta1 = 0.8;
  flags.beta2 = 0.99;
  flags.weight_decay = 0.1;
  flags.warmup_steps = 100;
  flags.decay_steps = 5000;
  flags.min_lr = 3e-5;
  EXPECT_EQ(JobSubmitCommand(env_, flags, false, false), kExitOk) << err_.str();
  const JobSpec spec = coordinator_.submitted().at(0);
  EXPECT_EQ(spec.model().kind(), "gpt");
  EXPECT_EQ(spec.model().context(), 256u);
  EXPECT_EQ(spec.model().layers(), 6u);
  EXPECT_EQ(spec.model().heads(), 6u);
  EXPECT_EQ(spec.model().width(), 192u);
  EXPECT_FLOAT_EQ(spec.model().dropout(), 0.2f);
  EXPECT_EQ(spec.model().tokenizer(), "char");
  EXPECT_EQ(spec.model().vocabulary(), "\n ,benort");
  EXPECT_FLOAT_EQ(spec.data().validation_fraction(), 0.05f);
  const TrainingSpec& t = spec.training();
  EXPECT_FLOAT_EQ(t.grad_clip(), 1.0f);
  EXPECT_EQ(t.eval_every(), 250u);
  EXPECT_EQ(t.eval_batches(), 50u);
  EXPECT_EQ(t.optimizer().kind(), ADAMW);
  EXPECT_FLOAT_EQ(t.optimizer().learning_rate(), 3e-4f);
  EXPECT_FLOAT_EQ(t.optimizer().beta1(), 0.8f);
  EXPECT_FLOAT_EQ(t.optimizer().beta2(), 0.99f);
  EXPECT_FLOAT_EQ(t.optimizer().epsilon(), 1e-8f);  // Default.
  EXPECT_FLOAT_EQ(t.optimizer().weight_decay(), 0.1f);
  EXPECT_EQ(t.optimizer().warmup_steps(), 100u);
  EXPECT_EQ(t.optimizer().decay_steps(), 5000u);
  EXPECT_FLOAT_EQ(t.optimizer().min_learning_rate(), 3e-5f);
}

// A spec's vocabulary is kept as it is (bytes fields are base64 in JSON and YAML: "YWI=" is "ab").
TEST_F(CommandsTest, SpecFileVocabularyIsKept) {
  const std::string path = ::testing::TempDir() + "/char.yaml";
  std::ofstream(path) << "model: {tokenizer: char, vocabulary: YWI=}\ndata: {path: /nowhere}\n";
  JobSpecFlags flags;
  flags.spec_file = path;
  ASSERT_EQ(JobSubmitCommand(env_, flags, false, false), kExitOk) << err_.str();
  EXPECT_EQ(coordinator_.submitted().at(0).model().vocabulary(), "ab");
}

TEST_F(CommandsTest, CharTokenizerNeedsAReadableDataFile) {
  JobSpecFlags flags;
  flags.data = ::testing::TempDir() + "/no-such-corpus.txt";
  flags.tokenizer = "char";
  EXPECT_EQ(JobSubmitCommand(env_, flags, false, false), kExitBadInput);
  EXPECT_THAT(err_.str(),
              AllOf(HasSubstr("psctl: model.tokenizer is \"char\""),
                    HasSubstr("no-such-corpus.txt cannot be read"), HasSubstr("--tokenizer byte")));
  EXPECT_TRUE(coordinator_.submitted().empty());
}

TEST_F(CommandsTest, FlagsThatDoNotFitTheJobAreBadInput) {
  struct Case {
    std::function<void(JobSpecFlags&)> set;
    std::string error;
  };
  const std::vector<Case> cases = {
      {[](JobSpecFlags& f) { f.hidden_dim = 32; },
       "--hidden-dim is for the mlp model, but the job's model is gpt"},
      {[](JobSpecFlags& f) {
         f.model = "mlp";
         f.layers = 2;
       },
       "--layers is for the gpt model, but the job's model is mlp"},
      {[](JobSpecFlags& f) {
         f.optimizer = "sgd";
         f.beta1 = 0.5;
       },
       "--beta1 is for --optimizer adamw, but the job's optimizer is sgd"},
      {[](JobSpecFlags& f) {
         f.optimizer = "adamw";
         f.momentum = 0.5;
       },
       "--momentum is for --optimizer momentum"},
      {[](JobSpecFlags& f) { f.dropout = 1; }, "--dropout must be in [0, 1), got 1"},
      {[](JobSpecFlags& f) { f.validation_fraction = 0; },
       "--validation-fraction must be in (0, 0.5], got 0"},
      {[](JobSpecFlags& f) { f.grad_clip = -1; }, "--grad-clip must be >= 0, got -1"},
      {[](JobSpecFlags& f) { f.beta2 = 1; }, "--beta2 must be in (0, 1), got 1"},
      {[](JobSpecFlags& f) { f.eval_batches = 0; }, "--eval-batches must be in [1, 10000], got 0"},
      {[](JobSpecFlags& f) { f.tokenizer = "word"; }, "--tokenizer must be byte, char or bpe, got word"},
      {[](JobSpecFlags& f) { f.optimizer = "lion"; },
       "--optimizer must be sgd, momentum or adamw, got lion"},
      {[](JobSpecFlags& f) { f.context = 5000; }, "--context must be in [1, 4096], got 5000"},
      {[](JobSpecFlags& f) {
         f.model = "mlp";
         f.context = 100;
       },
       "invalid job spec: model.context must be in [1, 64], got 100"},
      {[](JobSpecFlags& f) {
         f.width = 100;
         f.heads = 3;
       },
       "invalid job spec: model.heads (3) must divide model.width (100)"},
      {[](JobSpecFlags& f) {
         f.lr = 1e-3;
         f.min_lr = 1e-2;
       },
       "invalid job spec: training.optimizer.min_learning_rate"},
  };
  for (const Case& c : cases) {
    err_.str("");
    JobSpecFlags flags = MinimalFlags();
    c.set(flags);
    EXPECT_EQ(JobSubmitCommand(env_, flags, false, false), kExitBadInput) << c.error;
    EXPECT_THAT(err_.str(), HasSubstr(c.error));
  }
  EXPECT_TRUE(coordinator_.submitted().empty());
}

TEST_F(CommandsTest, SubmitJson) {
  EXPECT_EQ(JobSubmitCommand(env_, MinimalFlags(), false, /*json=*/true), kExitOk);
  EXPECT_EQ(out_.str(), "{\n  \"job_id\": \"job-1\"\n}\n");
}

TEST_F(CommandsTest, SubmitFromSpecFileWithOverride) {
  const std::string path = ::testing::TempDir() + "/job.yaml";
  std::ofstream(path) << "name: from-file\ndata: {path: /x}\ntraining: {steps: 7, batch_size: 3}\n";
  JobSpecFlags flags;
  flags.spec_file = path;
  flags.batch_size = 5;
  EXPECT_EQ(JobSubmitCommand(env_, flags, false, false), kExitOk) << err_.str();
  const JobSpec spec = coordinator_.submitted().at(0);
  EXPECT_EQ(spec.name(), "from-file");
  EXPECT_EQ(spec.training().steps(), 7u);
  EXPECT_EQ(spec.training().batch_size(), 5u);
}

TEST_F(CommandsTest, InvalidInputExitsTwoWithoutCallingTheCoordinator) {
  JobSpecFlags flags = MinimalFlags();
  flags.batch_size = 0;
  EXPECT_EQ(JobSubmitCommand(env_, flags, false, false), kExitBadInput);
  EXPECT_EQ(err_.str(), "psctl: --batch-size must be in [1, 65536], got 0\n");

  err_.str("");
  flags = MinimalFlags();
  flags.lr = 11;
  EXPECT_EQ(JobSubmitCommand(env_, flags, false, false), kExitBadInput);
  EXPECT_THAT(err_.str(), HasSubstr("invalid job spec: training.optimizer.learning_rate"));

  err_.str("");
  EXPECT_EQ(JobSubmitCommand(env_, JobSpecFlags(), false, false), kExitBadInput);
  EXPECT_THAT(err_.str(), HasSubstr("data.path"));
  EXPECT_THAT(err_.str(), HasSubstr("--data"));

  err_.str("");
  flags = MinimalFlags();
  flags.spec_file = "job.txt";
  EXPECT_EQ(JobSubmitCommand(env_, flags, false, false), kExitBadInput);
  EXPECT_THAT(err_.str(), HasSubstr(".json, .yaml or .yml"));

  err_.str("");
  flags.spec_file = ::testing::TempDir() + "/missing.json";
  EXPECT_EQ(JobSubmitCommand(env_, flags, false, false), kExitBadInput);
  EXPECT_THAT(err_.str(), HasSubstr("cannot read --spec"));

  err_.str("");
  const std::string bad = ::testing::TempDir() + "/bad.json";
  std::ofstream(bad) << "{\"name\": \"x\", \"steps\": 5}";
  flags.spec_file = bad;
  EXPECT_EQ(JobSubmitCommand(env_, flags, false, false), kExitBadInput);
  EXPECT_THAT(err_.str(), HasSubstr("unknown field \"steps\""));

  EXPECT_TRUE(coordinator_.submitted().empty());
}

TEST_F(CommandsTest, List) {
  EXPECT_EQ(JobListCommand(env_, false), kExitOk);
  EXPECT_EQ(out_.str(),
            "ID     NAME           STATE      STEP   LOSS    VAL  TOK/S    AGE\n"
            "job-1  tiny           RUNNING  40/100  2.500  2.450  45.1k  2m05s\n"
            "job-2  a-longer-name  PENDING   0/100      -      -      -  2m05s\n");
}

TEST_F(CommandsTest, ListJson) {
  EXPECT_EQ(JobListCommand(env_, true), kExitOk);
  EXPECT_THAT(out_.str(), HasSubstr("\"jobs\": ["));
  EXPECT_THAT(out_.str(), HasSubstr("\"job_id\": \"job-2\""));
}

TEST_F(CommandsTest, Status) {
  EXPECT_EQ(JobStatusCommand(env_, "job-1", false), kExitOk);
  EXPECT_THAT(out_.str(),
              AllOf(HasSubstr("state:      SUCCEEDED\n"), HasSubstr("step:       100/100\n"),
                    HasSubstr("val loss:   2.450 at step 100, best 2.400 at step 50\n"),
                    HasSubstr("Sample of generated text:\nthe quick brown fox\n")));
}

TEST_F(CommandsTest, StatusShowsFailuresSurvived) {
  EXPECT_EQ(JobStatusCommand(env_, "job-3", false), kExitOk) << err_.str();
  EXPECT_THAT(out_.str(), AllOf(HasSubstr("shards backed up"),
                                HasSubstr("checkpoints:  2, the last at step 50 (bad)\n"),
                                HasSubstr("restarts:     1, resumed from step 40\n"),
                                HasSubstr("fail-overs:   2 (shard map epoch)\n"),
                                HasSubstr("vacant")));
}

TEST_F(CommandsTest, StatusWithoutValidationLoss) {
  EXPECT_EQ(JobStatusCommand(env_, "job-2", false), kExitOk) << err_.str();
  EXPECT_THAT(out_.str(), HasSubstr("val loss:   -\n"));
}

TEST_F(CommandsTest, StatusJsonShowsZeros) {
  EXPECT_EQ(JobStatusCommand(env_, "job-1", true), kExitOk);
  EXPECT_THAT(out_.str(),
              AllOf(HasSubstr("\"job_id\": \"job-1\""), HasSubstr("\"state\": \"SUCCEEDED\""),
                    HasSubstr("\"end_time_ms\": \"0\"")));
}

TEST_F(CommandsTest, StatusOfUnknownJob) {
  EXPECT_EQ(JobStatusCommand(env_, "nope", false), kExitFailure);
  EXPECT_EQ(err_.str(), "psctl: get job nope: NOT_FOUND: no job nope\n");
}

TEST_F(CommandsTest, WatchSucceeded) {
  EXPECT_EQ(JobWatchCommand(env_, "job-1"), kExitOk);
  EXPECT_THAT(out_.str(),
              AllOf(HasSubstr("job job-1 (tiny): PENDING"), HasSubstr("job job-1 (tiny): RUNNING"),
                    HasSubstr("50/100 50% loss 2.500 val 2.450 tok/s"),
                    HasSubstr("job job-1 SUCCEEDED: step 100/100"),
                    HasSubstr("final training loss 2.500, best validation loss 2.400 at step 50 "
                              "(last 2.450 at step 100)\n"),
                    HasSubstr("Sample of generated text:\nthe quick brown fox\n")));
}

TEST_F(CommandsTest, WatchFailed) {
  EXPECT_EQ(JobWatchCommand(env_, "job-fails"), kExitFailure);
  EXPECT_THAT(out_.str(), AllOf(HasSubstr("job job-fails FAILED"),
                                HasSubstr("message: worker 1: out of memory")));
}

TEST_F(CommandsTest, SubmitAndWatch) {
  EXPECT_EQ(JobSubmitCommand(env_, MinimalFlags(), /*watch=*/true, false), kExitOk);
  EXPECT_THAT(out_.str(), AllOf(HasSubstr("submitted job job-1\n"), HasSubstr("SUCCEEDED")));
}

TEST_F(CommandsTest, WatchInterrupted) {
  env_.interrupted = [] { return true; };
  // The fake stream ends at once, so the watch may finish before the first poll; either way psctl
  // must not hang and must exit 0 or 130.
  const int code = JobWatchCommand(env_, "job-1");
  EXPECT_TRUE(code == kExitOk || code == kExitInterrupted) << code;
}

TEST_F(CommandsTest, Cancel) {
  EXPECT_EQ(JobCancelCommand(env_, "job-9"), kExitOk);
  EXPECT_EQ(out_.str(), "job job-9: CANCELLED\n");
  EXPECT_EQ(JobCancelCommand(env_, "job-done"), kExitFailure);
  EXPECT_EQ(err_.str(), "psctl: cancel job job-done: FAILED_PRECONDITION: job already ended\n");
}

TEST_F(CommandsTest, JobCurvesWritesTheCsv) {
  env_.gnuplot = "";  // As if gnuplot were not installed.
  const std::string dir = ::testing::TempDir() + "/curves_cmd";
  EXPECT_EQ(JobCurvesCommand(env_, "job-1", dir), kExitOk) << err_.str();
  EXPECT_EQ(out_.str(), "wrote " + dir + "/job-1.csv\n");
  EXPECT_THAT(err_.str(), HasSubstr("PNG skipped: gnuplot is not installed"));
  std::ifstream csv(dir + "/job-1.csv");
  std::string header;
  std::getline(csv, header);
  EXPECT_EQ(header, "step,train_loss,val_loss,tokens_per_sec");
  EXPECT_EQ(JobCurvesCommand(env_, "job-404", dir), kExitFailure);
}

TEST(CommandsNoCoordinatorTest, UnavailableHintsAtTheAddress) {
  std::ostringstream out, err;
  CommandEnv env;
  env.out = &out;
  env.err = &err;
  env.coordinator = "127.0.0.1:1";
  env.timeout = absl::Seconds(5);
  EXPECT_EQ(JobListCommand(env, false), kExitFailure);
  EXPECT_THAT(err.str(), HasSubstr("psctl: list jobs: UNAVAILABLE: "));
  EXPECT_THAT(err.str(), HasSubstr("127.0.0.1:1"));
  EXPECT_THAT(err.str(),
              HasSubstr("is ps_coordinator running? (--coordinator / PSCTL_COORDINATOR)"));
  EXPECT_EQ(out.str(), "");
}

}  // namespace
}  // namespace psrv
