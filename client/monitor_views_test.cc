#include "client/monitor_views.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace psrv {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

const absl::Time kNow = absl::FromUnixSeconds(1700000000);

ShardStatus Shard(const std::string& table, uint64_t begin, uint64_t end, double push_rate,
                  double pull_rate) {
  ShardStatus s;
  s.set_job_id("job-1");
  s.set_table(table);
  s.mutable_range()->set_begin(begin);
  s.mutable_range()->set_end(end);
  s.set_elements(end - begin);
  s.set_bytes((end - begin) * 12);
  s.set_version(40);
  s.set_consistency(SYNC);
  s.set_pushes(80);
  s.set_pulls(82);
  s.set_push_rate(push_rate);
  s.set_pull_rate(pull_rate);
  s.set_bytes_in_rate(push_rate * (end - begin) * 4);
  s.set_last_update_ms(absl::ToUnixMillis(kNow) - 2000);
  s.add_workers_seen(1);
  s.add_workers_seen(0);
  return s;
}

std::vector<ServerReply> Servers() {
  NodeInfo a;
  a.set_node_id("server-1");
  a.set_address("10.0.0.1:7071");
  NodeInfo b;
  b.set_node_id("server-2");
  b.set_address("10.0.0.2:7071");
  NodeInfo c;
  c.set_node_id("server-3");
  ServerStatus first;
  *first.add_shards() = Shard("wte", 0, 4096, 20, 21);
  ShardStatus waiting = Shard("ln_f.w", 0, 128, 100, 101);
  waiting.add_waiting_for_workers(1);
  waiting.set_waiting_ms(2500);
  waiting.set_last_error("FAILED_PRECONDITION: step 3 is ahead\n  (worker 1, step 3)");
  waiting.set_last_error_ms(absl::ToUnixMillis(kNow) - 7000);
  *first.add_shards() = waiting;
  ServerStatus second;
  *second.add_shards() = Shard("wte", 4096, 8192, 1, 2);
  return {{a, first}, {b, second}, {c, absl::UnavailableError("connection refused\n  hint")}};
}

TEST(MonitorViewsTest, ShardsTableShowsRatesWaitsAndErrors) {
  const std::string text = ShardsTable(Servers(), "", kNow);
  EXPECT_THAT(text, HasSubstr("SERVER         JOB    TABLE   RANGE"));
  EXPECT_THAT(text, HasSubstr("PUSH/S  PULL/S"));
  // ln_f.w sorts before wte; its step waits for rank 1 since 2.5 s.
  EXPECT_LT(text.find("ln_f.w"), text.find("[0,4096)"));
  EXPECT_THAT(text, HasSubstr("1 for 2s"));
  EXPECT_THAT(text, HasSubstr("last rejected push 7s ago: FAILED_PRECONDITION: step 3 is ahead; "
                              "(worker 1, step 3)"));
  EXPECT_THAT(text, HasSubstr("0,1"));
  EXPECT_THAT(text, HasSubstr("server-3       error: connection refused; hint"));
  for (size_t at = 0, next; (next = text.find('\n', at)) != std::string::npos; at = next + 1) {
    EXPECT_NE(text[next - 1], ' ') << "trailing blank";
  }
}

TEST(MonitorViewsTest, ShardsTableShowsRolesAndLostBackups) {
  NodeInfo a;
  a.set_address("10.0.0.1:7071");
  NodeInfo b;
  b.set_address("10.0.0.2:7071");
  ServerStatus first, second;
  ShardStatus unreplicated = Shard("wte", 0, 4096, 20, 21);
  unreplicated.set_backup_lost(true);
  unreplicated.set_backup_error("10.0.0.2:7071: UNAVAILABLE: connection refused");
  unreplicated.set_backup_error_ms(absl::ToUnixMillis(kNow) - 3000);
  *first.add_shards() = unreplicated;
  ShardStatus backup = Shard("wpe", 0, 512, 0, 0);
  backup.set_role(BACKUP);
  *second.add_shards() = backup;
  const std::string text = ShardsTable({{a, first}, {b, second}}, "", kNow);
  EXPECT_THAT(text, HasSubstr("MODE  ROLE"));
  EXPECT_THAT(text, HasSubstr("SYNC  primary"));
  EXPECT_THAT(text, HasSubstr("SYNC  backup"));
  EXPECT_THAT(text, HasSubstr("unreplicated: backup lost 3s ago: 10.0.0.2:7071: UNAVAILABLE: "
                              "connection refused"));
}

TEST(MonitorViewsTest, TopShowsTheBusiestShardsAndTheSlowestWorkers) {
  JobStatus job;
  job.set_job_id("job-1");
  job.set_state(RUNNING);
  for (uint32_t rank : {0u, 1u, 2u}) {
    WorkerProgress* w = job.add_workers();
    w->set_rank(rank);
    w->set_worker_id("worker-" + std::to_string(rank + 4));
    w->set_step(rank == 1 ? 37 : 40);
    w->set_tokens_per_sec(rank == 1 ? 900 : rank == 2 ? 0 : 2000);  // Rank 2 not reported yet.
    w->set_step_seconds(rank == 1 ? 0.420f : 0.2f);
    w->set_loss(2.5f);
  }
  JobStatus done = job;
  done.set_job_id("job-0");
  done.set_state(SUCCEEDED);
  const std::string text = TopView(Servers(), {done, job}, 2, kNow);
  EXPECT_THAT(text, HasSubstr("BUSIEST SHARDS"));
  // The busiest first, and only `limit` of them.
  const size_t busiest = text.find("ln_f.w");
  ASSERT_NE(busiest, std::string::npos);
  EXPECT_LT(busiest, text.find("[0,4096)"));
  EXPECT_THAT(text, Not(HasSubstr("[4096,8192)")));
  EXPECT_THAT(text, HasSubstr("error: server-3: connection refused; hint"));
  EXPECT_THAT(text, HasSubstr("SLOWEST WORKERS"));
  // Rank 1 is slowest, 3 steps behind, and one shard waits for it.
  const size_t slowest = text.find("job-1     1  worker-5");
  ASSERT_NE(slowest, std::string::npos) << text;
  EXPECT_LT(slowest, text.find("worker-4"));
  EXPECT_THAT(text.substr(slowest, text.find('\n', slowest) - slowest),
              testing::MatchesRegex(".*37 +3 +900 +420 ms +2.500 +1$"));
  EXPECT_THAT(text, Not(HasSubstr("job-0")));  // Ended jobs have no slow workers.

  EXPECT_THAT(TopView({}, {}, 10, kNow), HasSubstr("(no shards)"));
  EXPECT_THAT(TopView({}, {}, 10, kNow), HasSubstr("(no running jobs)"));
}

}  // namespace
}  // namespace psrv
