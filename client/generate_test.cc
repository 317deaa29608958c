// psctl generate against an in-process fake Coordinator (GetJob) and fake ParameterServer (Pull).
#include "client/generate.h"

#include <gmock/gmock.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "proto/coordinator.grpc.pb.h"
#include "proto/parameter_server.grpc.pb.h"
#include "worker/model/language_model.h"
#include "worker/model/model_factory.h"

namespace psrv {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::StartsWith;

// The value of parameter `i` of every fake job: small and varied, so sampling is not uniform.
float ParameterValue(uint64_t i) { return 0.5f * std::sin(0.37f * static_cast<float>(i)); }

// Serves any range of any table with ParameterValue(table offset + key); records the requests.
class FakeParameterServer final : public ParameterServer::Service {
 public:
  grpc::Status Pull(grpc::ServerContext*, const PullRequest* request,
                    PullResponse* response) override {
    {
      absl::MutexLock lock(&mu_);
      pulls_.push_back(*request);
    }
    std::string values;
    for (uint64_t key = request->range().begin(); key < request->range().end(); ++key) {
      const float value = ParameterValue(key);
      values.append(reinterpret_cast<const char*>(&value), sizeof(value));
    }
    response->set_dtype(FP32);
    *response->mutable_range() = request->range();
    response->set_values(values);
    return grpc::Status::OK;
  }

  std::vector<PullRequest> pulls() {
    absl::MutexLock lock(&mu_);
    return pulls_;
  }

 private:
  absl::Mutex mu_;
  std::vector<PullRequest> pulls_ ABSL_GUARDED_BY(mu_);
};

class FakeCoordinator final : public Coordinator::Service {
 public:
  grpc::Status GetJob(grpc::ServerContext*, const GetJobRequest* request,
                      JobStatus* response) override {
    absl::MutexLock lock(&mu_);
    auto job = jobs_.find(request->job_id());
    if (job == jobs_.end()) {
      return grpc::Status(grpc::StatusCode::NOT_FOUND, "no job " + request->job_id());
    }
    *response = job->second;
    return grpc::Status::OK;
  }

  void AddJob(const JobStatus& job) {
    absl::MutexLock lock(&mu_);
    jobs_[job.job_id()] = job;
  }

 private:
  absl::Mutex mu_;
  std::map<std::string, JobStatus> jobs_ ABSL_GUARDED_BY(mu_);
};

ModelSpec CharMlp(const std::string& vocabulary) {
  ModelSpec model;
  model.set_kind("mlp");
  model.set_context(4);
  model.set_embedding_dim(4);
  model.set_hidden_dim(8);
  model.set_tokenizer("char");
  model.set_vocabulary(vocabulary);
  return model;
}

ModelSpec ByteGpt() {
  ModelSpec model;
  model.set_kind("gpt");
  model.set_context(8);
  model.set_layers(1);
  model.set_heads(2);
  model.set_width(8);
  model.set_tokenizer("byte");
  return model;
}

class GenerateTest : public ::testing::Test {
 protected:
  void SetUp() override {
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(&coordinator_);
    builder.RegisterService(&parameter_server_);
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    address_ = absl::StrCat("127.0.0.1:", port);

    JobStatus pending;
    pending.set_job_id("job-pending");
    pending.set_state(PENDING);
    *pending.mutable_spec()->mutable_model() = CharMlp("\nab");
    coordinator_.AddJob(pending);
    AddRunningJob("job-1", CharMlp("\nab"));
    AddRunningJob("job-no-newline", CharMlp("ab"));
    AddRunningJob("job-gpt", ByteGpt());

    env_.out = &out_;
    env_.err = &err_;
    env_.coordinator = address_;
    env_.timeout = absl::Seconds(5);
  }

  void TearDown() override { server_->Shutdown(); }

  // A RUNNING job whose parameters form one table in two shards, both on the fake server.
  void AddRunningJob(const std::string& job_id, const ModelSpec& model) {
    const int vocab = model.tokenizer() == "char" ? model.vocabulary().size() : 256;
    absl::StatusOr<std::unique_ptr<LanguageModel>> lm = CreateLanguageModel(model, vocab);
    ASSERT_TRUE(lm.ok()) << lm.status();
    const uint64_t n = (*lm)->num_parameters();
    JobStatus job;
    job.set_job_id(job_id);
    job.set_state(RUNNING);
    job.set_step(42);
    *job.mutable_spec()->mutable_model() = model;
    ShardMap* map = job.mutable_shard_map();
    map->set_job_id(job_id);
    TableSpec* table = map->add_tables();
    table->set_name("params");
    table->add_shape(n);
    for (const auto& [begin, end] : {std::pair<uint64_t, uint64_t>{0, n / 2}, {n / 2, n}}) {
      ShardAssignment* shard = map->add_shards();
      shard->set_table("params");
      shard->mutable_range()->set_begin(begin);
      shard->mutable_range()->set_end(end);
      shard->set_server_id("s-1");
      shard->set_server_address(address_);
    }
    coordinator_.AddJob(job);
  }

  GenerateFlags Flags(const std::string& job_id) {
    GenerateFlags flags;
    flags.job_id = job_id;
    flags.length = 40;
    flags.seed = 7;
    return flags;
  }

  FakeCoordinator coordinator_;
  FakeParameterServer parameter_server_;
  std::unique_ptr<grpc::Server> server_;
  std::string address_;
  std::ostringstream out_, err_;
  CommandEnv env_;
};

TEST_F(GenerateTest, UnknownJob) {
  EXPECT_EQ(GenerateCommand(env_, Flags("nope")), kExitFailure);
  EXPECT_EQ(err_.str(), "psctl: get job nope: NOT_FOUND: no job nope\n");
  EXPECT_EQ(out_.str(), "");
}

TEST_F(GenerateTest, PendingJobHasNoParametersYet) {
  EXPECT_EQ(GenerateCommand(env_, Flags("job-pending")), kExitFailure);
  EXPECT_THAT(err_.str(),
              AllOf(StartsWith("psctl: job job-pending is PENDING and has no parameters yet"),
                    HasSubstr("once it is RUNNING")));
  EXPECT_EQ(out_.str(), "");
  EXPECT_TRUE(parameter_server_.pulls().empty());
}

TEST_F(GenerateTest, SamplesFromThePulledParameters) {
  GenerateFlags flags = Flags("job-1");
  flags.prompt = "ab";
  flags.prompt_given = true;
  EXPECT_EQ(GenerateCommand(env_, flags), kExitOk) << err_.str();
  const std::string text = out_.str();
  EXPECT_THAT(text, StartsWith("ab"));
  // Prompt, 40 characters of the vocabulary, and a newline unless the text ends with one.
  ASSERT_GE(text.size(), 42u);
  ASSERT_LE(text.size(), 43u);
  for (char c : text) EXPECT_TRUE(c == '\n' || c == 'a' || c == 'b') << static_cast<int>(c);
  EXPECT_EQ(err_.str(), "");

  // Every shard was pulled at step 0 (never waits) as rank 0.
  const std::vector<PullRequest> pulls = parameter_server_.pulls();
  ASSERT_EQ(pulls.size(), 2u);
  for (const PullRequest& pull : pulls) {
    EXPECT_EQ(pull.job_id(), "job-1");
    EXPECT_EQ(pull.table(), "params");
    EXPECT_EQ(pull.step(), 0u);
    EXPECT_EQ(pull.worker_rank(), 0u);
  }

  // The same seed gives the same text.
  std::ostringstream again;
  env_.out = &again;
  EXPECT_EQ(GenerateCommand(env_, flags), kExitOk);
  EXPECT_EQ(again.str(), text);
}

TEST_F(GenerateTest, JsonWithGptAndByteTokenizer) {
  GenerateFlags flags = Flags("job-gpt");
  flags.prompt = "Hi";
  flags.prompt_given = true;
  flags.top_k = 5;
  flags.json = true;
  EXPECT_EQ(GenerateCommand(env_, flags), kExitOk) << err_.str();
  EXPECT_THAT(out_.str(),
              AllOf(StartsWith("{\n  \"job_id\": \"job-gpt\",\n  \"state\": \"RUNNING\",\n"),
                    HasSubstr("\"step\": 42,"), HasSubstr("\"prompt\": \"Hi\","),
                    HasSubstr("\"text\": \""), HasSubstr("\"length\": 40,"),
                    HasSubstr("\"top_k\": 5,"), HasSubstr("\"seed\": 7\n}\n")));
}

TEST_F(GenerateTest, PromptOutsideTheVocabularyIsBadInput) {
  GenerateFlags flags = Flags("job-1");
  flags.prompt = "abc";
  flags.prompt_given = true;
  EXPECT_EQ(GenerateCommand(env_, flags), kExitBadInput);
  EXPECT_THAT(err_.str(), AllOf(StartsWith("psctl: --prompt: "), HasSubstr("'c'"),
                                HasSubstr("char tokenizer of 3 tokens")));
  EXPECT_EQ(out_.str(), "");
}

TEST_F(GenerateTest, DefaultPromptFallsBackWhenNewlineIsNotInTheVocabulary) {
  EXPECT_EQ(GenerateCommand(env_, Flags("job-no-newline")), kExitOk) << err_.str();
  const std::string text = out_.str();
  ASSERT_FALSE(text.empty());
  for (size_t i = 0; i + 1 < text.size(); ++i) EXPECT_TRUE(text[i] == 'a' || text[i] == 'b');
}

TEST_F(GenerateTest, FlagsOutOfRangeAreBadInput) {
  GenerateFlags flags = Flags("job-1");
  flags.temperature = 0;
  EXPECT_EQ(GenerateCommand(env_, flags), kExitBadInput);
  EXPECT_EQ(err_.str(), "psctl: --temperature must be in (0, 100], got 0\n");
  err_.str("");
  flags = Flags("job-1");
  flags.length = 0;
  EXPECT_EQ(GenerateCommand(env_, flags), kExitBadInput);
  EXPECT_EQ(err_.str(), "psctl: --length must be in [1, 100000], got 0\n");
  err_.str("");
  flags = Flags("job-1");
  flags.top_k = -1;
  EXPECT_EQ(GenerateCommand(env_, flags), kExitBadInput);
  EXPECT_THAT(err_.str(), HasSubstr("--top-k must be in [0, 1000000]"));
}

TEST_F(GenerateTest, BadTokenizerInTheJobIsNotBadInput) {
  ModelSpec model = CharMlp("\nab");
  model.set_tokenizer("word");
  JobStatus job;
  job.set_job_id("job-word");
  job.set_state(RUNNING);
  *job.mutable_spec()->mutable_model() = model;
  ShardAssignment* shard = job.mutable_shard_map()->add_shards();
  shard->set_table("params");
  shard->set_server_address(address_);
  coordinator_.AddJob(job);
  EXPECT_EQ(GenerateCommand(env_, Flags("job-word")), kExitFailure);
  EXPECT_THAT(err_.str(), StartsWith("psctl: the tokenizer of job job-word: "));
}

TEST_F(GenerateTest, UnreachableServer) {
  JobStatus job;
  job.set_job_id("job-dead");
  job.set_state(SUCCEEDED);
  *job.mutable_spec()->mutable_model() = CharMlp("\nab");
  absl::StatusOr<std::unique_ptr<LanguageModel>> lm = CreateLanguageModel(CharMlp("\nab"), 3);
  ASSERT_TRUE(lm.ok());
  ShardMap* map = job.mutable_shard_map();
  map->set_job_id("job-dead");
  TableSpec* table = map->add_tables();
  table->set_name("params");
  table->add_shape((*lm)->num_parameters());
  ShardAssignment* shard = map->add_shards();
  shard->set_table("params");
  shard->mutable_range()->set_end((*lm)->num_parameters());
  shard->set_server_address("127.0.0.1:1");  // Nothing listens there.
  coordinator_.AddJob(job);
  env_.timeout = absl::Seconds(2);
  EXPECT_EQ(GenerateCommand(env_, Flags("job-dead")), kExitFailure);
  EXPECT_THAT(err_.str(), StartsWith("psctl: pull the parameters of job job-dead: "));
}

}  // namespace
}  // namespace psrv
