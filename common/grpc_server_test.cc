// StartGrpcServer with metrics: every RPC is counted by method and status code and timed.
#include "common/grpc_server.h"

#include <gtest/gtest.h>
#include <grpcpp/client_context.h>

#include "absl/strings/str_cat.h"
#include "common/channel.h"
#include "common/prometheus_text.h"
#include "proto/admin.grpc.pb.h"

namespace psrv {
namespace {

// Answers NOT_FOUND for job "missing", else OK.
class FakeAdmin final : public Admin::Service {
  grpc::Status GetStatus(grpc::ServerContext*, const GetStatusRequest* request,
                         ServerStatus* response) override {
    if (request->job_id() == "missing") return grpc::Status(grpc::StatusCode::NOT_FOUND, "no");
    response->set_server_id("s");
    return grpc::Status::OK;
  }
};

TEST(GrpcServerTest, CountsAndTimesEveryRpc) {
  MetricsRegistry metrics;
  FakeAdmin admin;
  absl::StatusOr<RunningServer> server = StartGrpcServer("127.0.0.1", 0, {&admin}, "", &metrics);
  ASSERT_TRUE(server.ok()) << server.status();
  auto stub = Admin::NewStub(CreateChannel(absl::StrCat("127.0.0.1:", server->port)));
  for (int i = 0; i < 5; ++i) {
    grpc::ClientContext context;
    GetStatusRequest request;
    request.set_job_id(i < 3 ? "job-1" : "missing");
    ServerStatus response;
    stub->GetStatus(&context, request, &response);
  }
  server->server->Shutdown();

  const std::string text = metrics.Render();
  absl::StatusOr<ParsedMetrics> parsed = ParsePrometheusText(text);
  ASSERT_TRUE(parsed.ok()) << parsed.status() << "\n" << text;
  const std::map<std::string, std::string> method = {{"grpc_service", "psrv.Admin"},
                                                     {"grpc_method", "GetStatus"},
                                                     {"grpc_type", "unary"}};
  EXPECT_EQ(parsed->Value("grpc_server_started_total", method), 5);
  std::map<std::string, std::string> ok = method, not_found = method;
  ok["grpc_code"] = "OK";
  not_found["grpc_code"] = "NotFound";
  EXPECT_EQ(parsed->Value("grpc_server_handled_total", ok), 3);
  EXPECT_EQ(parsed->Value("grpc_server_handled_total", not_found), 2);
  EXPECT_EQ(parsed->Find("grpc_server_handled_total", method).size(), 2u);  // Only codes seen.
  EXPECT_EQ(parsed->Value("grpc_server_handling_seconds_count", method), 5);
  EXPECT_GT(parsed->Value("grpc_server_handling_seconds_sum", method).value_or(0), 0);
}

}  // namespace
}  // namespace psrv
