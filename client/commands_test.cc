// psctl's commands against an in-process fake Coordinator and fake Admin services.
#include "client/commands.h"

#include <gmock/gmock.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <fstream>
#include <functional>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "proto/admin.grpc.pb.h"
#include "proto/coordinator.grpc.pb.h"

namespace psrv {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::Not;

class FakeCoordinator final : public Coordinator::Service {
 public:
  grpc::Status SubmitJob(grpc::ServerContext*, const SubmitJobRequest* request,
                         SubmitJobResponse* response) override {
    absl::MutexLock lock(&mu_);
    submitted_.push_back(request->spec());
    response->set_job_id(absl::StrCat("job-", submitted_.size()));
    return grpc::Status::OK;
  }

  grpc::Status GetJob(grpc::ServerContext*, const GetJobRequest* request,
                      JobStatus* response) override {
    if (request->job_id() == "job-2") {
      *response = Job(PENDING, 0);
      response->set_job_id("job-2");
      return grpc::Status::OK;
    }
    if (request->job_id() == "job-3") {  // Survived a lost server and a lost worker.
      *response = Job(RUNNING, 60);
      response->set_job_id("job-3");
      response->mutable_spec()->set_replicas(2);
      response->set_restarts(1);
      response->set_resumed_from_step(40);
      response->mutable_shard_map()->set_epoch(2);
      response->add_checkpoints()->set_step(40);
      CheckpointManifest* bad = response->add_checkpoints();
      bad->set_step(50);
      bad->set_bad_reason("CRC mismatch");
      WorkerProgress* lost = response->add_workers();
      lost->set_rank(1);
      lost->set_vacant(true);
      return grpc::Status::OK;
    }
    if (request->job_id() != "job-1") {
      return grpc::Status(grpc::StatusCode::NOT_FOUND, "no job " + request->job_id());
    }
    *response = Job(SUCCEEDED, 100);
    return grpc::Status::OK;
  }

  grpc::Status ListJobs(grpc::ServerContext*, const ListJobsRequest*,
                        ListJobsResponse* response) override {
    *response->add_jobs() = Job(RUNNING, 40);
    JobStatus other = Job(PENDING, 0);
    other.set_job_id("job-2");
    other.mutable_spec()->set_name("a-longer-name");
    other.set_loss(0);
    other.clear_loss_history();
    other.set_tokens_per_sec(0);
    *response->add_jobs() = other;
    return grpc::Status::OK;
  }

  grpc::Status CancelJob(grpc::ServerContext*, const CancelJobRequest* request,
                         JobStatus* response) override {
    if (request->job_id() == "job-done") {
      return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION, "job already ended");
    }
    *response = Job(CANCELLED, 10);
    response->set_job_id(request->job_id());
    return grpc::Status::OK;
  }

  grpc::Status WatchJob(grpc::ServerContext*, const WatchJobRequest* request,
                        grpc::ServerWriter<JobStatus>* writer) override {
    const JobState last = request->job_id() == "job-fails" ? FAILED : SUCCEEDED;
    for (JobStatus status : {Job(PENDING, 0), Job(RUNNING, 0), Job(RUNNING, 50), Job(last, 100)}) {
      status.set_job_id(request->job_id());
      if (status.state() == FAILED) status.set_message("worker 1: out of memory");
      writer->Write(status);
    }
    return grpc::Status::OK;
  }

  grpc::Status ListNodes(grpc::ServerContext*, const ListNodesRequest*,
                         ListNodesResponse* response) override {
    absl::MutexLock lock(&mu_);
    for (const NodeInfo& node : nodes_) *response->add_nodes() = node;
    return grpc::Status::OK;
  }

  void AddNode(NodeInfo node) {
    absl::MutexLock lock(&mu_);
    nodes_.push_back(std::move(node));
  }

  std::vector<JobSpec> submitted() {
    absl::MutexLock lock(&mu_);
    return submitted_;
  }

  static JobStatus Job(JobState state, uint64_t step) {
    JobStatus status;
    status.set_job_id("job-1");
    status.mutable_spec()->set_name("tiny");
    status.mutable_spec()->mutable_training()->set_steps(100);
    status.mutable_spec()->set_num_servers(1);
    status.mutable_spec()->set_num_workers(1);
    status.set_state(state);
    status.set_step(step);
    if (step > 0) {
      status.set_loss(2.5f);
      status.add_loss_history()->set_loss(2.5f);
      status.set_tokens_per_sec(45100);
      // Validation at half-way and now; the half-way loss is the best.
      ValidationPoint* half = status.add_val_history();
      half->set_step(step / 2);
      half->set_loss(2.4f);
      ValidationPoint* now = status.add_val_history();
      now->set_step(step);
      now->set_loss(2.45f);
      status.set_val_loss(2.45f);
    }
    status.set_submit_time_ms(absl::ToUnixMillis(absl::Now() - absl::Seconds(125)));
    if (state == SUCCEEDED) status.set_sample("the quick brown fox");
    return status;
  }

 private:
  absl::Mutex mu_;
  std::vector<JobSpec> submitted_ ABSL_GUARDED_BY(mu_);
  std::vector<NodeInfo> nodes_ ABSL_GUARDED_BY(mu_);
};

class FakeAdmin final : public Admin::Service {
 public:
  grpc::Status GetStatus(grpc::ServerContext*, const GetStatusRequest* request,
                         ServerStatus* response) override {
    response->set_server_id("s-1");
    for (const char* table : {"embedding", "hidden.bias"}) {
      ShardStatus* shard = response->add_shards();
      shard->set_job_id(request->job_id().empty() ? "job-1" : request->job_id());
      shard->set_table(table);
      shard->mutable_range()->set_begin(0);
      shard->mutable_range()->set_end(6144);
      shard->set_elements(6144);
      shard->set_bytes(3 * 6144 * 4);
      shard->set_version(12);
      shard->set_consistency(SYNC);
      shard->set_pushes(24);
      shard->set_pulls(26);
      shard->set_bytes_in(1 << 20);
      shard->set_bytes_out(2 << 20);
      shard->add_workers_seen(1);
      shard->add_workers_seen(0);
    }
    return grpc::Status::OK;
  }
};

std::unique_ptr<grpc::Server> StartServer(grpc::Service* service, int* port) {
  grpc::ServerBuilder builder;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), port);
  builder.RegisterService(service);
  return builder.BuildAndStart();
}

class CommandsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    int port = 0;
    coordinator_server_ = StartServer(&coordinator_, &port);
    ASSERT_NE(coordinator_server_, nullptr);
    coordinator_address_ = absl::StrCat("127.0.0.1:", port);
    admin_server_ = StartServer(&admin_, &port);
    ASSERT_NE(admin_server_, nullptr);
    admin_address_ = absl::StrCat("127.0.0.1:", port);

    NodeInfo server;
    server.set_node_id("s-1");
    server.set_role(SERVER);
    server.set_address(admin_address_);
    server.set_health(HEALTHY);
    server.set_last_heartbeat_ms(absl::ToUnixMillis(absl::Now()));
    coordinator_.AddNode(server);
    NodeInfo dead = server;
    dead.set_node_id("s-2");
    dead.set_address("127.0.0.1:1");  // Nothing listens there.
    dead.set_health(DEAD);
    coordinator_.AddNode(dead);
    NodeInfo worker;
    worker.set_node_id("w-1");
    worker.set_role(WORKER);
    worker.set_address("127.0.0.1:0");
    worker.set_health(HEALTHY);
    worker.set_job_id("job-1");
    worker.set_rank(0);
    coordinator_.AddNode(worker);

    env_.out = &out_;
    env_.err = &err_;
    env_.coordinator = coordinator_address_;
    env_.timeout = absl::Seconds(5);
  }

  void TearDown() override {
    coordinator_server_->Shutdown();
    admin_server_->Shutdown();
  }

  JobSpecFlags MinimalFlags() {
    JobSpecFlags flags;
    flags.data = "/data/text.txt";
    return flags;
  }

  FakeCoordinator coordinator_;
  FakeAdmin admin_;
  std::unique_ptr<grpc::Server> coordinator_server_, admin_server_;
  std::string coordinator_address_, admin_address_;
  std::ostringstream out_, err_;
  CommandEnv env_;
};

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
      {[](JobSpecFlags& f) { f.tokenizer = "word"; }, "--tokenizer must be byte or char, got word"},
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

TEST_F(CommandsTest, Cluster) {
  EXPECT_EQ(ClusterCommand(env_, false), kExitOk);
  EXPECT_THAT(out_.str(), HasSubstr("ID   ROLE    ADDRESS"));
  EXPECT_THAT(out_.str(), HasSubstr("s-2  SERVER  127.0.0.1:1"));
  EXPECT_THAT(out_.str(), HasSubstr("DEAD"));
  EXPECT_THAT(out_.str(), HasSubstr("WORKER"));
}

TEST_F(CommandsTest, ShardsTableWithUnreachableServer) {
  env_.timeout = absl::Seconds(2);
  EXPECT_EQ(ShardsCommand(env_, ShardsFlags()), kExitOk) << err_.str();
  const std::string text = out_.str();
  EXPECT_THAT(text, HasSubstr("SERVER"));
  EXPECT_THAT(text, HasSubstr("embedding"));
  EXPECT_THAT(text, HasSubstr("[0,6144)"));
  EXPECT_THAT(text, HasSubstr("72.0 KiB"));
  EXPECT_THAT(text, HasSubstr("1.0 MiB / 2.0 MiB"));
  EXPECT_THAT(text, HasSubstr("0,1"));
  EXPECT_THAT(text,
              HasSubstr("127.0.0.1:1      error: get status of server 127.0.0.1:1: UNAVAILABLE"));
  EXPECT_THAT(text, HasSubstr("; is the ps_server at 127.0.0.1:1 running?\n"));
}

TEST_F(CommandsTest, ShardsJson) {
  env_.timeout = absl::Seconds(2);
  ShardsFlags flags;
  flags.job_id = "job-7";
  flags.json = true;
  EXPECT_EQ(ShardsCommand(env_, flags), kExitOk);
  const std::string text = out_.str();
  EXPECT_THAT(text, HasSubstr("\"servers\": ["));
  EXPECT_THAT(text, HasSubstr("\"job_id\": \"job-7\""));
  EXPECT_THAT(text, HasSubstr("\"rejected_pushes\": \"0\""));  // Zeros are printed.
  EXPECT_THAT(text, HasSubstr("\"errors\": ["));
  EXPECT_THAT(text, HasSubstr("\"code\": \"UNAVAILABLE\""));
}

TEST_F(CommandsTest, ShardsWatchRefreshesUntilTheCount) {
  env_.timeout = absl::Seconds(2);
  ShardsFlags flags;
  flags.watch = true;
  flags.interval = absl::Milliseconds(10);
  flags.count = 2;
  EXPECT_EQ(ShardsCommand(env_, flags), kExitOk) << err_.str();
  const std::string text = out_.str();
  // Not a terminal: frames follow one another, each under its title line.
  size_t first = text.find("psctl shards · every 10ms · ");
  ASSERT_NE(first, std::string::npos) << text;
  EXPECT_NE(text.find("psctl shards · every 10ms · ", first + 1), std::string::npos);
  EXPECT_THAT(text, Not(HasSubstr("\033[2J")));
  EXPECT_THAT(text, HasSubstr("[0,6144)"));

  // On a terminal each frame clears the screen; Ctrl-C ends the view with 0.
  out_.str("");
  env_.tty = true;
  int polls = 0;
  env_.interrupted = [&polls] { return ++polls > 3; };
  flags.count = 0;
  EXPECT_EQ(ShardsCommand(env_, flags), kExitOk);
  EXPECT_EQ(out_.str().rfind("\033[H\033[2J", 0), 0u);

  // --json --watch: one compact document per line.
  out_.str("");
  env_.tty = false;
  env_.interrupted = [] { return false; };
  flags.json = true;
  flags.count = 2;
  EXPECT_EQ(ShardsCommand(env_, flags), kExitOk);
  std::istringstream lines(out_.str());
  std::string line;
  int documents = 0;
  while (std::getline(lines, line)) {
    EXPECT_EQ(line.rfind("{\"servers\":[", 0), 0u) << line;
    ++documents;
  }
  EXPECT_EQ(documents, 2);
}

TEST_F(CommandsTest, TopOnce) {
  env_.timeout = absl::Seconds(2);
  TopFlags flags;
  flags.once = true;
  EXPECT_EQ(TopCommand(env_, flags), kExitOk) << err_.str();
  const std::string text = out_.str();
  EXPECT_THAT(text, HasSubstr("BUSIEST SHARDS"));
  EXPECT_THAT(text, HasSubstr("embedding"));
  EXPECT_THAT(text, HasSubstr("error: 127.0.0.1:1"));
  EXPECT_THAT(text, HasSubstr("SLOWEST WORKERS"));
  EXPECT_THAT(text, Not(HasSubstr("\033")));
  flags.limit = 0;
  EXPECT_EQ(TopCommand(env_, flags), kExitBadInput);
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

TEST(LocalCommandTest, BadInputBeforeStartingAnything) {
  std::ostringstream out, err;
  CommandEnv env;
  env.out = &out;
  env.err = &err;
  JobSpecFlags flags;
  flags.data = "/nonexistent/data.txt";
  LocalFlags local;
  local.bin_dir = "/nonexistent";
  EXPECT_EQ(LocalCommand(env, flags, local), kExitBadInput);
  EXPECT_THAT(err.str(), HasSubstr("cannot read the training data /nonexistent/data.txt"));

  err.str("");
  local.worker_args = {"cuda_attention=flash"};
  EXPECT_EQ(LocalCommand(env, flags, local), kExitBadInput);
  EXPECT_THAT(err.str(), HasSubstr("--worker-arg takes a ps_worker flag, --name=value"));
  err.str("");
  local.worker_args = {"--device=cpu", "--max_jobs=3"};
  EXPECT_EQ(LocalCommand(env, flags, local), kExitBadInput);
  EXPECT_THAT(err.str(), HasSubstr("--worker-arg --max_jobs is set by psctl local itself"));
  local.worker_args.clear();

  err.str("");
  local.servers = 65;
  EXPECT_EQ(LocalCommand(env, flags, local), kExitBadInput);
  EXPECT_THAT(err.str(), HasSubstr("--servers must be in [1, 64], got 65"));

  err.str("");
  local.servers.reset();
  const std::string data = ::testing::TempDir() + "/data.txt";
  std::ofstream(data) << "hello world\n";
  flags.data = data;
  EXPECT_EQ(LocalCommand(env, flags, local), kExitFailure);
  EXPECT_THAT(err.str(), HasSubstr("no executable ps_coordinator in --bin-dir /nonexistent"));

  // A char tokenizer reads the data file for its vocabulary first.
  err.str("");
  flags.data = "/nonexistent/data.txt";
  flags.tokenizer = "char";
  EXPECT_EQ(LocalCommand(env, flags, local), kExitBadInput);
  EXPECT_THAT(err.str(), AllOf(HasSubstr("model.tokenizer is \"char\""),
                               HasSubstr("/nonexistent/data.txt cannot be read")));
}

}  // namespace
}  // namespace psrv
