// A whole cluster authorized by bearer tokens on plaintext channels, as behind a proxy or mesh that
// ends TLS (--allow_insecure_tokens; README "Security"): every process sends its role's token and
// accepts the table's; callers without a token or with a wrong one are refused, a worker's token
// gets what the role table gives workers and nothing more, an operator's token runs a job to
// SUCCEEDED, and a daemon with a malformed table or a token without TLS refuses to start.
#include <sys/stat.h>

#include <fstream>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <gmock/gmock.h>
#include <grpcpp/client_context.h>
#include <grpcpp/create_channel.h>

#include "absl/strings/str_cat.h"
#include "client/coordinator_client.h"
#include "client/local_cluster.h"
#include "common/auth_tokens.h"
#include "common/subprocess.h"
#include "gtest/gtest.h"
#include "proto/coordinator.grpc.pb.h"
#include "proto/parameter_server.grpc.pb.h"
#include "tests/test_util.h"

namespace psrv {
namespace {

using ::testing::HasSubstr;

std::unique_ptr<grpc::ClientContext> Context() {
  auto context = std::make_unique<grpc::ClientContext>();
  context->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  return context;
}

// A plaintext channel to `address` whose calls carry `token` ("": none).
std::shared_ptr<grpc::Channel> ChannelWith(const std::string& address, const std::string& token) {
  return grpc::experimental::CreateCustomChannelWithInterceptors(
      address, grpc::InsecureChannelCredentials(), grpc::ChannelArguments(),
      BearerTokenInterceptors(token));
}

class TokenTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    log_dir_ = new std::string(TempDir("tokens"));
    tokens_dir_ = new std::string(*log_dir_ + "/tokens");
    ASSERT_EQ(mkdir(tokens_dir_->c_str(), 0700), 0);
    ASSERT_TRUE(MakeLocalClusterTokens(*tokens_dir_).ok());
    // This test process talks as an operator wherever it uses CreateChannel (CoordinatorClient).
    ASSERT_TRUE(EnableTokens({*tokens_dir_ + "/operator.token", "", true}).ok());
    LocalClusterOptions options = TestClusterOptions(*log_dir_, 2, 1);
    options.tokens_dir = *tokens_dir_;
    cluster_ = new LocalCluster(options);
    absl::Status started = cluster_->Start();
    ASSERT_TRUE(started.ok()) << started;
  }

  static void TearDownTestSuite() {
    if (cluster_ != nullptr) cluster_->Stop();
    delete cluster_;
    cluster_ = nullptr;
  }

  void SetUp() override { ASSERT_NE(cluster_, nullptr); }

  static std::string Token(const std::string& role) {
    absl::StatusOr<std::string> token = ReadTokenFile(*tokens_dir_ + "/" + role + ".token");
    EXPECT_TRUE(token.ok()) << token.status();
    return token.ok() ? *token : "";
  }

  static std::unique_ptr<Coordinator::Stub> CoordinatorAs(const std::string& token) {
    return Coordinator::NewStub(ChannelWith(cluster_->coordinator_address(), token));
  }

  // The address of one of the cluster's servers, asked of the coordinator as a viewer.
  static std::string ServerAddress() {
    ListNodesResponse nodes;
    grpc::Status status =
        CoordinatorAs(Token("viewer"))->ListNodes(Context().get(), ListNodesRequest(), &nodes);
    EXPECT_TRUE(status.ok()) << status.error_message();
    for (const NodeInfo& node : nodes.nodes()) {
      if (node.role() == SERVER) return node.address();
    }
    ADD_FAILURE() << "no server registered";
    return "";
  }

  static std::string* log_dir_;
  static std::string* tokens_dir_;
  static LocalCluster* cluster_;
};

std::string* TokenTest::log_dir_ = nullptr;
std::string* TokenTest::tokens_dir_ = nullptr;
LocalCluster* TokenTest::cluster_ = nullptr;

TEST_F(TokenTest, CallerWithoutOrWithAWrongTokenIsUnauthenticated) {
  ListJobsResponse jobs;
  grpc::Status none = CoordinatorAs("")->ListJobs(Context().get(), ListJobsRequest(), &jobs);
  EXPECT_EQ(none.error_code(), grpc::StatusCode::UNAUTHENTICATED) << none.error_message();
  EXPECT_THAT(none.error_message(), HasSubstr("no bearer token"));

  std::string wrong = Token("viewer");
  wrong.back() = wrong.back() == '0' ? '1' : '0';
  grpc::Status bad = CoordinatorAs(wrong)->ListJobs(Context().get(), ListJobsRequest(), &jobs);
  EXPECT_EQ(bad.error_code(), grpc::StatusCode::UNAUTHENTICATED) << bad.error_message();
  EXPECT_THAT(bad.error_message(), HasSubstr("not in this server's table"));

  grpc::Status viewer =
      CoordinatorAs(Token("viewer"))->ListJobs(Context().get(), ListJobsRequest(), &jobs);
  EXPECT_TRUE(viewer.ok()) << viewer.error_message();
}

TEST_F(TokenTest, WorkerTokenCannotCancelDropOrPromote) {
  const std::string worker = Token("worker");
  JobStatus job;
  CancelJobRequest cancel;
  cancel.set_job_id("job-1");
  grpc::Status status = CoordinatorAs(worker)->CancelJob(Context().get(), cancel, &job);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_THAT(status.error_message(), HasSubstr("/psrv.Coordinator/CancelJob needs role operator"));
  EXPECT_THAT(status.error_message(), HasSubstr("token has role worker"));

  auto server = ParameterServer::NewStub(ChannelWith(ServerAddress(), worker));
  PromoteResponse promoted;
  status = server->Promote(Context().get(), PromoteRequest(), &promoted);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_THAT(status.error_message(),
              HasSubstr("/psrv.ParameterServer/Promote needs role coordinator"));
  DropJobResponse dropped;
  status = server->DropJob(Context().get(), DropJobRequest(), &dropped);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_THAT(status.error_message(),
              HasSubstr("/psrv.ParameterServer/DropJob needs role coordinator"));
}

TEST_F(TokenTest, PsctlSendsItsTokenFile) {
  std::string out;
  EXPECT_EQ(RunPsctl(cluster_->coordinator_address(), *log_dir_,
                     {"job", "list", "--token-file", *tokens_dir_ + "/viewer.token",
                      "--allow-insecure-tokens"},
                     &out),
            0)
      << out;
  EXPECT_EQ(RunPsctl(cluster_->coordinator_address(), *log_dir_, {"job", "list"}, &out), 1)
      << out;
  // A token on plaintext needs the explicit flag.
  EXPECT_NE(RunPsctl(cluster_->coordinator_address(), *log_dir_,
                     {"job", "list", "--token-file", *tokens_dir_ + "/viewer.token"}, &out),
            0);
  EXPECT_THAT(out, HasSubstr("bearer tokens travel only on TLS"));
}

TEST_F(TokenTest, OperatorTokenRunsAJobToSucceeded) {
  // CoordinatorClient uses CreateChannel, hence this process's operator token; the cluster's
  // processes reach each other with their own tokens.
  CoordinatorClientOptions client_options;
  client_options.address = cluster_->coordinator_address();
  CoordinatorClient client(client_options);
  absl::StatusOr<std::string> id = client.SubmitJob(SmallMlpJob(SYNC, 2, 1, 30));
  ASSERT_TRUE(id.ok()) << id.status();
  const JobStatus status = WaitForJob(
      &client, *id, [](const JobStatus& s) { return s.state() >= SUCCEEDED; },
      absl::Seconds(120), *log_dir_);
  EXPECT_EQ(status.state(), SUCCEEDED) << status.message() << "\nlogs in " << *log_dir_;
  EXPECT_EQ(status.step(), 30u);
  EXPECT_TRUE(cluster_->CheckProcesses().ok());
}

// Runs ps_server with `flags` and returns its exit code, its output in `*log`.
int StartServer(const std::vector<std::string>& flags, const std::string& log_path,
                std::string* log) {
  std::vector<std::string> argv = {TestClusterOptions("", 1, 1).binaries.server,
                                   "--coordinator=127.0.0.1:1", "--port=0"};
  argv.insert(argv.end(), flags.begin(), flags.end());
  Subprocess process;
  EXPECT_TRUE(process.Start(argv, log_path).ok());
  absl::StatusOr<int> code = process.Wait(absl::Seconds(30));
  *log = ReadFile(log_path);
  return code.ok() ? *code : -1;
}

TEST_F(TokenTest, DaemonRefusesAMalformedTableOrATokenWithoutTls) {
  const std::string bad = *log_dir_ + "/bad-tokens.txt";
  std::ofstream(bad) << "operator short\n";
  std::string log;
  EXPECT_NE(StartServer({"--auth_tokens_file=" + bad, "--allow_insecure_tokens"},
                        *log_dir_ + "/bad-table.log", &log),
            0);
  EXPECT_THAT(log, HasSubstr(bad + ":1: token shorter than 16 characters")) << log;

  EXPECT_NE(StartServer({"--token_file=" + *tokens_dir_ + "/server.token"},
                        *log_dir_ + "/no-tls.log", &log),
            0);
  EXPECT_THAT(log, HasSubstr("bearer tokens travel only on TLS")) << log;
}

}  // namespace
}  // namespace psrv
