// A whole cluster on mutual TLS with role checks (ps_coordinator, ps_server, ps_worker started by
// the LocalCluster that `psctl local --tls` uses, certificates made with openssl at test time):
// callers without a certificate, without TLS or from another CA are refused, each role gets what
// the table in common/rpc_roles.cc gives it and nothing more, a bearer token over TLS works like a
// certificate, and a job trains to SUCCEEDED.
#include <sys/stat.h>

#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <gmock/gmock.h>
#include <grpcpp/client_context.h>
#include <grpcpp/create_channel.h>

#include "absl/strings/str_cat.h"
#include "client/coordinator_client.h"
#include "client/local_cluster.h"
#include "common/http_client.h"
#include "common/local_ca.h"
#include "common/prometheus_text.h"
#include "common/tls.h"
#include "gtest/gtest.h"
#include "proto/admin.grpc.pb.h"
#include "proto/coordinator.grpc.pb.h"
#include "proto/parameter_server.grpc.pb.h"
#include "tests/test_util.h"

namespace psrv {
namespace {

using ::testing::HasSubstr;

// Credentials of certificate `name` in `dir` ("": TLS with the CA but no client certificate).
std::shared_ptr<grpc::ChannelCredentials> As(const std::string& dir, const std::string& name) {
  absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> credentials =
      LocalCaCredentials(dir, name);
  EXPECT_TRUE(credentials.ok()) << credentials.status();
  return credentials.ok() ? *credentials : grpc::InsecureChannelCredentials();
}

std::unique_ptr<grpc::ClientContext> Context() {
  auto context = std::make_unique<grpc::ClientContext>();
  context->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  return context;
}

class TlsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!OpensslAvailable()) return;
    log_dir_ = new std::string(TempDir("tls"));
    tls_dir_ = new std::string(*log_dir_ + "/tls");
    ASSERT_EQ(mkdir(tls_dir_->c_str(), 0700), 0);
    ASSERT_TRUE(MakeLocalClusterCertificates(*tls_dir_).ok());
    // This test process talks as an operator wherever it uses CreateChannel (CoordinatorClient).
    ASSERT_TRUE(EnableTls(LocalCaFiles(*tls_dir_, "operator")).ok());
    // Two servers: each backs up the other's shards (server-to-server calls on TLS too).
    LocalClusterOptions options = TestClusterOptions(*log_dir_, 2, 1);
    options.tls_dir = *tls_dir_;
    // Tokens too: a caller may prove its role with either (psctl below, with the CA alone).
    ASSERT_TRUE(MakeLocalClusterTokens(*tls_dir_).ok());
    options.tokens_dir = *tls_dir_;
    cluster_ = new LocalCluster(options);
    absl::Status started = cluster_->Start();
    ASSERT_TRUE(started.ok()) << started;
  }

  static void TearDownTestSuite() {
    if (cluster_ != nullptr) cluster_->Stop();
    delete cluster_;
    cluster_ = nullptr;
  }

  void SetUp() override {
    if (tls_dir_ == nullptr) {
      GTEST_SKIP() << "openssl is not installed: no certificates to test with";
    }
    ASSERT_NE(cluster_, nullptr);
  }

  static std::unique_ptr<Coordinator::Stub> CoordinatorAs(
      std::shared_ptr<grpc::ChannelCredentials> credentials) {
    return Coordinator::NewStub(
        grpc::CreateChannel(cluster_->coordinator_address(), std::move(credentials)));
  }

  // The address of the cluster's server, asked of the coordinator as a viewer.
  static std::string ServerAddress() {
    ListNodesResponse nodes;
    grpc::Status status = CoordinatorAs(As(*tls_dir_, "viewer"))
                              ->ListNodes(Context().get(), ListNodesRequest(), &nodes);
    EXPECT_TRUE(status.ok()) << status.error_message();
    for (const NodeInfo& node : nodes.nodes()) {
      if (node.role() == SERVER) return node.address();
    }
    ADD_FAILURE() << "no server registered";
    return "";
  }

  static std::string* log_dir_;
  static std::string* tls_dir_;
  static LocalCluster* cluster_;
};

std::string* TlsTest::log_dir_ = nullptr;
std::string* TlsTest::tls_dir_ = nullptr;
LocalCluster* TlsTest::cluster_ = nullptr;

TEST_F(TlsTest, CallerWithoutCertificateIsUnauthenticated) {
  // The handshake succeeds (servers request, verify, but do not require a certificate), then
  // every call is refused by the authorizer with a message.
  ListJobsResponse jobs;
  grpc::Status status =
      CoordinatorAs(As(*tls_dir_, ""))->ListJobs(Context().get(), ListJobsRequest(), &jobs);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAUTHENTICATED) << status.error_message();
  EXPECT_THAT(status.error_message(), HasSubstr("no client certificate"));
}

TEST_F(TlsTest, InsecureChannelAndForeignCaFailTheHandshake) {
  ListJobsResponse jobs;
  grpc::Status insecure = CoordinatorAs(grpc::InsecureChannelCredentials())
                              ->ListJobs(Context().get(), ListJobsRequest(), &jobs);
  EXPECT_EQ(insecure.error_code(), grpc::StatusCode::UNAVAILABLE) << insecure.error_message();

  // An operator certificate from another CA: the coordinator does not verify it.
  const std::string other = *log_dir_ + "/other-ca";
  ASSERT_EQ(mkdir(other.c_str(), 0700), 0);
  ASSERT_TRUE(MakeLocalCa(other, {{"operator", "operator"}}).ok());
  TlsFiles files = LocalCaFiles(other, "operator");
  files.ca = *tls_dir_ + "/ca.crt";  // Trusts the real server, but is not trusted by it.
  absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> credentials =
      MakeChannelCredentials(files);
  ASSERT_TRUE(credentials.ok()) << credentials.status();
  grpc::Status foreign =
      CoordinatorAs(*credentials)->ListJobs(Context().get(), ListJobsRequest(), &jobs);
  EXPECT_EQ(foreign.error_code(), grpc::StatusCode::UNAVAILABLE) << foreign.error_message();
}

TEST_F(TlsTest, WorkerCannotPromoteDropOrCancel) {
  auto worker = As(*tls_dir_, "worker");
  JobStatus job;
  CancelJobRequest cancel;
  cancel.set_job_id("job-1");
  grpc::Status status = CoordinatorAs(worker)->CancelJob(Context().get(), cancel, &job);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_THAT(status.error_message(), HasSubstr("/psrv.Coordinator/CancelJob needs role operator"));
  EXPECT_THAT(status.error_message(), HasSubstr("has role worker"));

  auto server = ParameterServer::NewStub(grpc::CreateChannel(ServerAddress(), worker));
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

TEST_F(TlsTest, ViewerReadsStatusButCannotSubmit) {
  auto viewer = As(*tls_dir_, "viewer");
  ListJobsResponse jobs;
  grpc::Status status = CoordinatorAs(viewer)->ListJobs(Context().get(), ListJobsRequest(), &jobs);
  EXPECT_TRUE(status.ok()) << status.error_message();
  ServerStatus server_status;
  status = Admin::NewStub(grpc::CreateChannel(ServerAddress(), viewer))
               ->GetStatus(Context().get(), GetStatusRequest(), &server_status);
  EXPECT_TRUE(status.ok()) << status.error_message();

  SubmitJobRequest submit;
  *submit.mutable_spec() = SmallMlpJob(SYNC, 1, 1, 10);
  SubmitJobResponse submitted;
  status = CoordinatorAs(viewer)->SubmitJob(Context().get(), submit, &submitted);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_THAT(status.error_message(), HasSubstr("needs role operator"));

  // psctl with the viewer's certificate reads; without one it is refused.
  const TlsFiles files = LocalCaFiles(*tls_dir_, "viewer");
  std::string out;
  EXPECT_EQ(RunPsctl(cluster_->coordinator_address(), *log_dir_,
                     {"job", "list", "--tls-cert", files.cert, "--tls-key", files.key, "--tls-ca",
                      files.ca},
                     &out),
            0)
      << out;
  EXPECT_EQ(RunPsctl(cluster_->coordinator_address(), *log_dir_, {"job", "list"}, &out), 1)
      << out;
  // TLS with the CA alone and a viewer's bearer token instead of a certificate: reads, and is
  // refused what a viewer may not do.
  EXPECT_EQ(RunPsctl(cluster_->coordinator_address(), *log_dir_,
                     {"job", "list", "--tls-ca", files.ca, "--token-file",
                      *tls_dir_ + "/viewer.token"},
                     &out),
            0)
      << out;
  EXPECT_NE(RunPsctl(cluster_->coordinator_address(), *log_dir_,
                     {"job", "cancel", "job-1", "--tls-ca", files.ca, "--token-file",
                      *tls_dir_ + "/viewer.token"},
                     &out),
            0)
      << out;
  EXPECT_THAT(out, HasSubstr("token has role viewer"));
}

TEST_F(TlsTest, OperatorRunsAJobToSucceededWithEveryProcessOnMutualTls) {
  // CoordinatorClient uses CreateChannel, hence this process's operator certificate.
  CoordinatorClientOptions client_options;
  client_options.address = cluster_->coordinator_address();
  CoordinatorClient client(client_options);
  absl::StatusOr<std::string> id = client.SubmitJob(SmallMlpJob(SYNC, 2, 1, 40));
  ASSERT_TRUE(id.ok()) << id.status();
  const JobStatus status = WaitForJob(
      &client, *id, [](const JobStatus& s) { return s.state() >= SUCCEEDED; },
      absl::Seconds(120), *log_dir_);
  EXPECT_EQ(status.state(), SUCCEEDED) << status.message() << "\nlogs in " << *log_dir_;
  EXPECT_EQ(status.step(), 40u);
  EXPECT_TRUE(cluster_->CheckProcesses().ok());

  // Every process ran on TLS; primaries replicated to their backups (server to server, role
  // server); and the only calls refused anywhere are the ones the tests above made on purpose.
  for (const char* process : {"coordinator", "server-0", "server-1", "worker-0"}) {
    const std::string log = ReadFile(absl::StrCat(*log_dir_, "/", process, ".log"));
    EXPECT_THAT(log, HasSubstr("mutual TLS on")) << process;
  }
  absl::StatusOr<std::vector<std::pair<std::string, int>>> ports =
      cluster_->MetricsPorts(absl::Seconds(5));
  ASSERT_TRUE(ports.ok()) << ports.status();
  const std::set<std::string> provoked = {
      "/psrv.Coordinator/ListJobs", "/psrv.Coordinator/CancelJob", "/psrv.Coordinator/SubmitJob",
      "/psrv.ParameterServer/Promote", "/psrv.ParameterServer/DropJob"};
  double replicated = 0;
  for (const auto& [name, port] : *ports) {
    if (name.rfind("worker", 0) == 0) continue;  // Exited with its job; no gRPC server anyway.
    absl::StatusOr<HttpGetResult> reply = HttpGet("127.0.0.1", port, "/metrics");
    ASSERT_TRUE(reply.ok()) << name << ": " << reply.status();
    absl::StatusOr<ParsedMetrics> metrics = ParsePrometheusText(reply->body);
    ASSERT_TRUE(metrics.ok()) << name << ": " << metrics.status();
    replicated += metrics->Sum("grpc_server_handled_total",
                               {{"grpc_method", "Replicate"}, {"grpc_code", "OK"}});
    for (const MetricSample& refused : metrics->Find("psrv_grpc_auth_rejected_total")) {
      EXPECT_TRUE(provoked.count(refused.labels.at("grpc_method")))
          << name << " refused " << refused.labels.at("grpc_method") << " from a cluster process";
    }
  }
  EXPECT_GT(replicated, 0);
}

}  // namespace
}  // namespace psrv
