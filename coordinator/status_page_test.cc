// The status page and /api/status from hand-made snapshots, and TakeSnapshot against a
// ClusterCoordinator with a fake Admin call.
#include "coordinator/status_page.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

namespace psrv {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

JobStatus RunningJob() {
  JobStatus job;
  job.set_job_id("job-7");
  job.mutable_spec()->set_name("demo <b>bold</b>");
  job.mutable_spec()->mutable_training()->set_steps(400);
  job.mutable_spec()->set_num_servers(2);
  job.mutable_spec()->set_num_workers(2);
  job.set_state(RUNNING);
  job.set_step(200);
  job.set_loss(2.1f);
  job.set_val_loss(2.3f);
  job.set_tokens_per_sec(41000);
  job.set_submit_time_ms(absl::ToUnixMillis(absl::FromUnixSeconds(1700000000)));
  job.set_start_time_ms(absl::ToUnixMillis(absl::FromUnixSeconds(1700000001)));
  for (int s = 10; s <= 200; s += 10) {
    LossPoint* p = job.add_loss_history();
    p->set_step(s);
    p->set_loss(5.5f - s / 100.0f);
    p->set_tokens_per_sec(40000 + s);
  }
  ValidationPoint* v = job.add_val_history();
  v->set_step(100);
  v->set_loss(2.5f);
  return job;
}

ClusterSnapshot Snapshot() {
  ClusterSnapshot snapshot;
  snapshot.time = absl::FromUnixSeconds(1700000100);
  snapshot.coordinator = "127.0.0.1:7070";
  NodeInfo server;
  server.set_node_id("server-1");
  server.set_role(SERVER);
  server.set_address("10.0.0.5:7071");
  server.set_health(HEALTHY);
  server.set_last_heartbeat_ms(absl::ToUnixMillis(snapshot.time) - 300);
  NodeInfo dead = server;
  dead.set_node_id("server-2");
  dead.set_address("10.0.0.6:7071");
  dead.set_health(DEAD);
  NodeInfo worker;
  worker.set_node_id("worker-3");
  worker.set_role(WORKER);
  worker.set_address("w/pid-1");
  worker.set_health(SUSPECT);
  worker.set_job_id("job-7");
  worker.set_rank(1);
  snapshot.nodes = {server, dead, worker};
  JobStatus failed;
  failed.set_job_id("job-6");
  failed.set_state(FAILED);
  failed.set_message("worker rank 0: out of memory");
  snapshot.jobs = {failed, RunningJob()};
  ServerStatus status;
  status.set_server_id("server-1");
  ShardStatus* shard = status.add_shards();
  shard->set_job_id("job-7");
  shard->set_table("wte");
  shard->mutable_range()->set_begin(0);
  shard->mutable_range()->set_end(4096);
  shard->set_elements(4096);
  shard->set_bytes(3 * 4096 * 4);
  shard->set_version(199);
  shard->set_consistency(SYNC);
  shard->set_push_rate(12.5);
  shard->set_pull_rate(25);
  shard->add_waiting_for_workers(1);
  shard->set_waiting_ms(1500);
  shard->set_last_error("FAILED_PRECONDITION: step 3 <old> (worker 0, step 3)");
  shard->set_last_error_ms(absl::ToUnixMillis(snapshot.time) - 5000);
  snapshot.servers = {{server, status}, {dead, absl::UnavailableError("not asked: dead")}};
  return snapshot;
}

TEST(StatusPageTest, ShowsNodesJobsCurvesAndShards) {
  const std::string html = RenderStatusPage(Snapshot());
  EXPECT_EQ(html.rfind("<!DOCTYPE html>", 0), 0u);
  EXPECT_THAT(html, HasSubstr("<meta http-equiv=\"refresh\" content=\"5\">"));
  EXPECT_THAT(html, HasSubstr("coordinator 127.0.0.1:7070 · 2023-11-14 22:15:00 UTC"));
  // Jobs, newest first, with escaped names and their state.
  EXPECT_LT(html.find("<b>job-7</b>"), html.find("<b>job-6</b>"));
  EXPECT_THAT(html, HasSubstr("demo &lt;b&gt;bold&lt;/b&gt;"));
  EXPECT_THAT(html, Not(HasSubstr("<b>bold</b>")));
  EXPECT_THAT(html, HasSubstr("<span class=\"badge RUNNING\">RUNNING</span>"));
  EXPECT_THAT(html, HasSubstr("worker rank 0: out of memory"));
  EXPECT_THAT(html, HasSubstr("200/400"));
  EXPECT_THAT(html, HasSubstr("41.0k"));
  // Curves of the running and the failed job (which has no data).
  EXPECT_THAT(html, HasSubstr("id=\"charts-job-7\""));
  EXPECT_THAT(html, HasSubstr("data-label=\"train\""));
  EXPECT_THAT(html, HasSubstr("data-label=\"validation\""));
  EXPECT_THAT(html, HasSubstr("data-label=\"tokens/s\""));
  EXPECT_THAT(html, HasSubstr("no data yet"));
  // Shards: rates, whom the step waits for, the last error; the dead server's reason.
  EXPECT_THAT(html, HasSubstr("10.0.0.5:7071"));
  EXPECT_THAT(html, HasSubstr("[0,4096)"));
  EXPECT_THAT(html, HasSubstr("<td class=\"num\">12</td>"));
  EXPECT_THAT(html, HasSubstr("rank 1 for 1s"));
  EXPECT_THAT(html, HasSubstr("last rejected push 5s ago: FAILED_PRECONDITION: step 3 &lt;old&gt;"));
  EXPECT_THAT(html, HasSubstr("not asked: dead"));
  // Nodes with health.
  EXPECT_THAT(html, HasSubstr("<span class=\"badge DEAD\">DEAD</span>"));
  EXPECT_THAT(html, HasSubstr("<span class=\"badge SUSPECT\">SUSPECT</span>"));
  EXPECT_THAT(html, Not(HasSubstr("<script")));
  EXPECT_EQ(html.substr(html.size() - 15), "</body></html>\n");

  StatusPageOptions still;
  still.refresh_seconds = 0;
  EXPECT_THAT(RenderStatusPage(Snapshot(), still), Not(HasSubstr("http-equiv")));
}

TEST(StatusPageTest, JsonHoldsTheSameData) {
  const nlohmann::json json = nlohmann::json::parse(RenderStatusJson(Snapshot()));
  EXPECT_EQ(json.at("coordinator"), "127.0.0.1:7070");
  EXPECT_EQ(json.at("nodes").size(), 3u);
  EXPECT_EQ(json.at("jobs").size(), 2u);
  EXPECT_EQ(json.at("jobs")[1].at("job_id"), "job-7");
  EXPECT_EQ(json.at("jobs")[1].at("loss_history").size(), 20u);
  EXPECT_EQ(json.at("servers").size(), 1u);
  EXPECT_EQ(json.at("servers")[0].at("shards")[0].at("push_rate"), 12.5);
  EXPECT_EQ(json.at("servers")[0].at("shards")[0].at("waiting_for_workers")[0], 1);
  EXPECT_EQ(json.at("errors")[0].at("node_id"), "server-2");
  EXPECT_EQ(json.at("errors")[0].at("code"), "UNAVAILABLE");
}

TEST(StatusPageTest, TakeSnapshotAsksEveryLiveServer) {
  absl::Time now = absl::FromUnixSeconds(1700000000);
  ClusterCoordinator::Options options;
  options.clock = [&now] { return now; };
  options.create_shards = [](const std::string&, const CreateShardsRequest&) {
    return absl::OkStatus();
  };
  ClusterCoordinator cluster(options);
  RegisterRequest server;
  server.set_role(SERVER);
  server.set_address("a:1");
  ASSERT_TRUE(cluster.Register(server).ok());
  server.set_address("b:2");
  ASSERT_TRUE(cluster.Register(server).ok());
  RegisterRequest worker;
  worker.set_role(WORKER);
  worker.set_address("w");
  ASSERT_TRUE(cluster.Register(worker).ok());
  std::vector<std::string> asked;
  absl::Mutex mu;
  ClusterSnapshot snapshot =
      TakeSnapshot(&cluster, "here:7070", [&](const std::string& address) {
        absl::MutexLock lock(&mu);
        asked.push_back(address);
        if (address == "b:2") return absl::StatusOr<ServerStatus>(absl::DeadlineExceededError("slow"));
        ServerStatus status;
        status.set_address(address);
        return absl::StatusOr<ServerStatus>(status);
      });
  EXPECT_EQ(snapshot.nodes.size(), 3u);
  ASSERT_EQ(snapshot.servers.size(), 2u);
  EXPECT_TRUE(snapshot.servers[0].status.ok());
  EXPECT_EQ(snapshot.servers[0].status->address(), "a:1");
  EXPECT_EQ(snapshot.servers[1].status.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(asked.size(), 2u);

  // Servers silent for 10 heartbeat intervals are not asked.
  now += absl::Seconds(60);
  asked.clear();
  snapshot = TakeSnapshot(&cluster, "here:7070", [&](const std::string& address) {
    asked.push_back(address);
    return absl::StatusOr<ServerStatus>(ServerStatus());
  });
  EXPECT_TRUE(asked.empty());
  EXPECT_THAT(std::string(snapshot.servers[0].status.status().message()), HasSubstr("not asked"));
}

}  // namespace
}  // namespace psrv
