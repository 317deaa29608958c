// The role check: subjects to roles, verdicts per method, and a real server under mutual TLS
// (certificates made with openssl at test time) on TCP and on a Unix domain socket.
#include "common/rpc_authorizer.h"

#include <stdlib.h>
#include <unistd.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <grpcpp/client_context.h>
#include <grpcpp/create_channel.h>
#include <grpcpp/server_builder.h>

#include "absl/strings/str_cat.h"
#include "common/auth_tokens.h"
#include "common/channel.h"
#include "common/grpc_server.h"
#include "common/local_ca.h"
#include "common/prometheus_text.h"
#include "common/tls.h"
#include "proto/admin.grpc.pb.h"

namespace psrv {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

TEST(SubjectRolesTest, ReadsEveryOuAndItsEscapes) {
  EXPECT_THAT(SubjectRoles("CN=worker-0,OU=worker,O=psrv"), ElementsAre("worker"));
  EXPECT_THAT(SubjectRoles("CN=a,OU=viewer+OU=operator,O=psrv"), ElementsAre("viewer", "operator"));
  EXPECT_THAT(SubjectRoles("CN=x,O=psrv"), IsEmpty());
  // An escaped comma is part of the value: "worker\,OU=coordinator" is one OU, not two.
  EXPECT_THAT(SubjectRoles("CN=x,OU=worker\\,OU=coordinator,O=psrv"),
              ElementsAre("worker,OU=coordinator"));
  EXPECT_THAT(SubjectRoles("CN=OU=coordinator,O=psrv"), IsEmpty());
}

RpcCaller Certificate(const std::string& subject) { return RpcCaller{subject, std::nullopt}; }
RpcCaller Token(const std::string& role) { return RpcCaller{std::nullopt, role}; }

TEST(AuthorizeRpcTest, FollowsTheRoleTable) {
  const RpcCaller worker = Certificate("CN=w,OU=worker,O=psrv");
  EXPECT_TRUE(AuthorizeRpc("/psrv.ParameterServer/Push", worker).ok());
  EXPECT_TRUE(AuthorizeRpc("/psrv.Coordinator/GetJob", worker).ok());
  EXPECT_TRUE(AuthorizeRpc("/grpc.health.v1.Health/Check", Certificate("CN=x,O=psrv")).ok());
  EXPECT_TRUE(
      AuthorizeRpc("/psrv.Coordinator/SubmitJob", Certificate("CN=o,OU=operator,O=psrv")).ok());
  EXPECT_TRUE(
      AuthorizeRpc("/psrv.Coordinator/ListJobs", Certificate("CN=v,OU=viewer,O=psrv")).ok());

  for (const char* method : {"/psrv.ParameterServer/Promote", "/psrv.ParameterServer/DropJob",
                             "/psrv.Coordinator/CancelJob"}) {
    grpc::Status denied = AuthorizeRpc(method, worker);
    EXPECT_EQ(denied.error_code(), grpc::StatusCode::PERMISSION_DENIED) << method;
    EXPECT_THAT(denied.error_message(), HasSubstr(method));
    EXPECT_THAT(denied.error_message(), HasSubstr("has role worker"));
  }
  EXPECT_THAT(AuthorizeRpc("/psrv.Coordinator/CancelJob", worker).error_message(),
              HasSubstr("needs role operator"));
  EXPECT_EQ(AuthorizeRpc("/psrv.Coordinator/SubmitJob", Certificate("CN=v,OU=viewer,O=psrv"))
                .error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(AuthorizeRpc("/psrv.Coordinator/Nope", worker).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(AuthorizeRpc("/psrv.Coordinator/ListJobs", RpcCaller()).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
}

TEST(AuthorizeRpcTest, TakesATokenRoleLikeACertificateOu) {
  EXPECT_TRUE(AuthorizeRpc("/psrv.Coordinator/SubmitJob", Token("operator")).ok());
  EXPECT_TRUE(AuthorizeRpc("/grpc.health.v1.Health/Check", Token("viewer")).ok());
  grpc::Status denied = AuthorizeRpc("/psrv.Coordinator/CancelJob", Token("worker"));
  EXPECT_EQ(denied.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_THAT(denied.error_message(), HasSubstr("the caller's token has role worker"));
  // Certificate and token together: either role will do.
  RpcCaller both{"CN=w,OU=worker,O=psrv", "operator"};
  EXPECT_TRUE(AuthorizeRpc("/psrv.Coordinator/CancelJob", both).ok());
  // A token the table does not know is refused even with a good certificate.
  RpcCaller unknown{"CN=o,OU=operator,O=psrv", std::nullopt,
                    /*unknown_token=*/true};
  grpc::Status refused = AuthorizeRpc("/psrv.Coordinator/ListJobs", unknown);
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_THAT(refused.error_message(), HasSubstr("not in this server's table"));
  EXPECT_THAT(AuthorizeRpc("/psrv.Coordinator/ListJobs", RpcCaller()).error_message(),
              HasSubstr("no client certificate and no bearer token"));
}

TEST(TokenTableTest, ParsesRolesTokensAndComments) {
  absl::StatusOr<TokenTable> table = TokenTable::Parse(
      "# the cluster's tokens\n"
      "operator  3f9a0c1d2e4b5a6978ffee  # psctl\n"
      "\n"
      "\tworker\t0123456789abcdef0123\n",
      "tokens.txt");
  ASSERT_TRUE(table.ok()) << table.status();
  EXPECT_EQ(table->size(), 2u);
  EXPECT_EQ(table->RoleOf("3f9a0c1d2e4b5a6978ffee"), "operator");
  EXPECT_EQ(table->RoleOf("0123456789abcdef0123"), "worker");
  EXPECT_EQ(table->RoleOf("0123456789abcdef012"), std::nullopt);    // A prefix.
  EXPECT_EQ(table->RoleOf("0123456789abcdef01234"), std::nullopt);  // Longer.
  EXPECT_EQ(table->RoleOf(""), std::nullopt);
}

TEST(TokenTableTest, RejectsMalformedFilesNamingTheLine) {
  const std::string good = "0123456789abcdef";
  struct Case {
    std::string text;
    std::string error;
  };
  for (const Case& bad : std::vector<Case>{
           {"operator\n", "tokens.txt:1: not two fields"},
           {"operator " + good + " extra\n", "tokens.txt:1: not two fields"},
           {"# ok\nadmin " + good + "\n", "tokens.txt:2: unknown role \"admin\""},
           {"worker 0123456789abcde\n", "tokens.txt:1: token shorter than 16"},
           {"worker " + good + "\nviewer " + good + "\n", "tokens.txt:2: token listed twice"},
           {"# nothing\n\n", "tokens.txt: no tokens"},
       }) {
    absl::StatusOr<TokenTable> table = TokenTable::Parse(bad.text, "tokens.txt");
    ASSERT_FALSE(table.ok()) << bad.text;
    EXPECT_EQ(table.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(table.status().message(), HasSubstr(bad.error)) << bad.text;
  }
  EXPECT_EQ(TokenTable::Read("/nonexistent/tokens").status().code(), absl::StatusCode::kNotFound);
}

TEST(TokenTableTest, BearerHeadersAndConstantTimeEquality) {
  EXPECT_EQ(ParseBearer("Bearer abc"), "abc");
  EXPECT_EQ(ParseBearer("bearer  abc "), "abc");
  EXPECT_EQ(ParseBearer("Basic abc"), std::nullopt);
  EXPECT_EQ(ParseBearer("Bearer "), std::nullopt);
  EXPECT_TRUE(ConstantTimeEquals("abcdef", "abcdef"));
  EXPECT_FALSE(ConstantTimeEquals("abcdef", "abcdeg"));
  EXPECT_FALSE(ConstantTimeEquals("abcdef", "abcde"));
  EXPECT_FALSE(ConstantTimeEquals("", "a"));
  EXPECT_TRUE(ConstantTimeEquals("", ""));
}

class FakeAdmin final : public Admin::Service {
  grpc::Status GetStatus(grpc::ServerContext*, const GetStatusRequest*,
                         ServerStatus* response) override {
    response->set_server_id("s");
    return grpc::Status::OK;
  }
};

// A server of the process's TLS identity (role "server") and clients of every kind.
class MutualTlsServerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!OpensslAvailable()) return;
    char dir[] = "/tmp/psrv-tls-test-XXXXXX";
    ASSERT_NE(mkdtemp(dir), nullptr);
    dir_ = new std::string(dir);
    ASSERT_TRUE(MakeLocalCa(*dir_, {{"server", "server"},
                                    {"viewer", "viewer"},
                                    {"worker", "worker"},
                                    {"nobody", ""}})
                    .ok());
    ASSERT_TRUE(EnableTls(LocalCaFiles(*dir_, "server")).ok());
  }

  void SetUp() override {
    if (dir_ == nullptr) GTEST_SKIP() << "openssl is not installed: no certificates to test with";
    socket_ = absl::StrCat(*dir_, "/admin.sock");
    absl::StatusOr<RunningServer> server =
        StartGrpcServer("127.0.0.1", 0, {&admin_}, "", &metrics_, socket_);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
  }

  void TearDown() override {
    if (server_.server) server_.server->Shutdown();
  }

  std::string Tcp() const { return absl::StrCat("127.0.0.1:", server_.port); }

  // Admin.GetStatus over a channel with `credentials`.
  grpc::Status Call(const std::string& target,
                    std::shared_ptr<grpc::ChannelCredentials> credentials) {
    auto stub = Admin::NewStub(grpc::CreateChannel(target, credentials));
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    ServerStatus response;
    return stub->GetStatus(&context, GetStatusRequest(), &response);
  }

  // Credentials of certificate `name` ("": TLS with the CA but no client certificate).
  static std::shared_ptr<grpc::ChannelCredentials> As(const std::string& name) {
    absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> credentials =
        LocalCaCredentials(*dir_, name);
    EXPECT_TRUE(credentials.ok()) << credentials.status();
    return credentials.ok() ? *credentials : grpc::InsecureChannelCredentials();
  }

  static std::string* dir_;
  FakeAdmin admin_;
  MetricsRegistry metrics_;
  RunningServer server_;
  std::string socket_;
};

std::string* MutualTlsServerTest::dir_ = nullptr;

TEST_F(MutualTlsServerTest, AllowsTheRolesOfTheTableOnTcpAndUnixSocket) {
  for (const std::string& target : {Tcp(), "unix:" + socket_}) {
    grpc::Status viewer = Call(target, As("viewer"));
    EXPECT_TRUE(viewer.ok()) << target << ": " << viewer.error_message();

    grpc::Status worker = Call(target, As("worker"));
    EXPECT_EQ(worker.error_code(), grpc::StatusCode::PERMISSION_DENIED) << target;
    EXPECT_THAT(worker.error_message(), HasSubstr("/psrv.Admin/GetStatus needs role viewer"));

    grpc::Status nobody = Call(target, As("nobody"));  // A certificate without an OU.
    EXPECT_EQ(nobody.error_code(), grpc::StatusCode::PERMISSION_DENIED) << target;
    EXPECT_THAT(nobody.error_message(), HasSubstr("(no OU)"));

    grpc::Status anonymous = Call(target, As(""));  // TLS, but no client certificate.
    EXPECT_EQ(anonymous.error_code(), grpc::StatusCode::UNAUTHENTICATED) << target;
    EXPECT_THAT(anonymous.error_message(), HasSubstr("no client certificate"));

    // Plaintext HTTP/2 to a TLS port: the connection never comes up.
    grpc::Status insecure = Call(target, grpc::InsecureChannelCredentials());
    EXPECT_EQ(insecure.error_code(), grpc::StatusCode::UNAVAILABLE) << target;
  }
  absl::StatusOr<ParsedMetrics> parsed = ParsePrometheusText(metrics_.Render());
  ASSERT_TRUE(parsed.ok());
  EXPECT_EQ(parsed->Value("psrv_grpc_auth_rejected_total",
                          {{"grpc_method", "/psrv.Admin/GetStatus"},
                           {"grpc_code", "PermissionDenied"}}),
            4);
  EXPECT_EQ(parsed->Value("psrv_grpc_auth_rejected_total",
                          {{"grpc_method", "/psrv.Admin/GetStatus"},
                           {"grpc_code", "Unauthenticated"}}),
            2);
}

TEST_F(MutualTlsServerTest, CreateChannelUsesTheProcessCertificate) {
  // This process's certificate has role "server", which Admin.GetStatus does not allow: the
  // refusal shows that CreateChannel presented it over TLS.
  auto stub = Admin::NewStub(CreateChannel(Tcp()));
  grpc::ClientContext context;
  ServerStatus response;
  grpc::Status status = stub->GetStatus(&context, GetStatusRequest(), &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_THAT(status.error_message(), HasSubstr("has role server"));
}

// A plaintext server with a token table (TLS ends at a proxy in front of it): a token sent by the
// client interceptor of CreateChannel gets its role; a wrong or missing token is refused.
TEST(PlaintextTokenServerTest, AuthorizesByBearerToken) {
  absl::StatusOr<TokenTable> table =
      TokenTable::Parse("viewer viewer-token-0123456789\nworker worker-token-0123456789\n", "test");
  ASSERT_TRUE(table.ok()) << table.status();
  MetricsRegistry metrics;
  FakeAdmin admin;
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(
      "127.0.0.1:0",
      InsecureServerCredentialsWithAuthorizer(std::make_shared<RpcAuthorizer>(&metrics, &*table)),
      &port);
  builder.RegisterService(&admin);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  ASSERT_NE(server, nullptr);
  auto call = [&](const std::string& token) {
    auto stub = Admin::NewStub(grpc::experimental::CreateCustomChannelWithInterceptors(
        absl::StrCat("127.0.0.1:", port), grpc::InsecureChannelCredentials(),
        grpc::ChannelArguments(), BearerTokenInterceptors(token)));
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    ServerStatus response;
    return stub->GetStatus(&context, GetStatusRequest(), &response);
  };
  grpc::Status viewer = call("viewer-token-0123456789");
  EXPECT_TRUE(viewer.ok()) << viewer.error_message();
  grpc::Status worker = call("worker-token-0123456789");
  EXPECT_EQ(worker.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_THAT(worker.error_message(), HasSubstr("token has role worker"));
  grpc::Status wrong = call("viewer-token-0123456780");
  EXPECT_EQ(wrong.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  grpc::Status missing = call("");
  EXPECT_EQ(missing.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_THAT(missing.error_message(), HasSubstr("no bearer token"));
  server->Shutdown();
  absl::StatusOr<ParsedMetrics> parsed = ParsePrometheusText(metrics.Render());
  ASSERT_TRUE(parsed.ok());
  EXPECT_EQ(
      parsed->Value("psrv_grpc_auth_rejected_total",
                    {{"grpc_method", "/psrv.Admin/GetStatus"}, {"grpc_code", "Unauthenticated"}}),
      2);
}

}  // namespace
}  // namespace psrv
