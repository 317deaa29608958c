// The coordinator's metrics over a ClusterCoordinator driven by hand.
#include "coordinator/coordinator_metrics.h"

#include <gtest/gtest.h>

#include "common/prometheus_text.h"

namespace psrv {
namespace {

JobSpec Spec() {
  JobSpec spec;
  spec.set_name("tiny");
  spec.set_num_servers(1);
  spec.set_num_workers(2);
  spec.mutable_data()->set_path("/data.txt");
  spec.mutable_model()->set_kind("mlp");
  spec.mutable_training()->set_steps(50);
  return spec;
}

TEST(CoordinatorMetricsTest, NodesJobsAndProgress) {
  absl::Time now = absl::Now();
  ClusterCoordinator::Options options;
  options.clock = [&now] { return now; };
  options.create_shards = [](const std::string&, const CreateShardsRequest&) {
    return absl::OkStatus();
  };
  ClusterCoordinator cluster(options);
  MetricsRegistry registry;
  AddCoordinatorMetrics(&cluster, &registry, options.clock);

  RegisterRequest node;
  node.set_role(SERVER);
  node.set_address("s:1");
  ASSERT_TRUE(cluster.Register(node).ok());
  node.set_role(WORKER);
  node.set_address("w");
  std::vector<std::string> workers;
  for (int i = 0; i < 2; ++i) workers.push_back(cluster.Register(node)->node_id());
  absl::StatusOr<std::string> job = cluster.SubmitJob(Spec());
  ASSERT_TRUE(job.ok()) << job.status();
  cluster.Tick();
  ASSERT_EQ(cluster.GetJob(*job)->state(), RUNNING);
  for (uint32_t rank = 0; rank < 2; ++rank) {
    ReportProgressRequest report;
    report.set_job_id(*job);
    report.set_node_id(workers[rank]);
    report.set_rank(rank);
    report.set_step(10 + rank);
    report.set_loss(3.0f + rank);
    report.set_tokens_per_sec(1000 * (rank + 1));
    report.set_step_seconds(0.25f * (rank + 1));
    ASSERT_TRUE(cluster.ReportProgress(report).ok());
  }

  absl::StatusOr<ParsedMetrics> parsed = ParsePrometheusText(registry.Render());
  ASSERT_TRUE(parsed.ok()) << parsed.status() << registry.Render();
  EXPECT_EQ(parsed->Value("psrv_nodes", {{"role", "SERVER"}, {"health", "HEALTHY"}}), 1);
  EXPECT_EQ(parsed->Value("psrv_nodes", {{"role", "WORKER"}, {"health", "HEALTHY"}}), 2);
  EXPECT_EQ(parsed->Value("psrv_nodes", {{"role", "WORKER"}, {"health", "DEAD"}}), 0);
  EXPECT_EQ(parsed->Value("psrv_jobs", {{"state", "RUNNING"}}), 1);
  EXPECT_EQ(parsed->Value("psrv_jobs", {{"state", "SUCCEEDED"}}), 0);
  EXPECT_EQ(parsed->Value("psrv_job_info", {{"job", *job}, {"name", "tiny"}, {"state", "RUNNING"}}),
            1);
  EXPECT_EQ(parsed->Value("psrv_job_step", {{"job", *job}}), 10);
  EXPECT_EQ(parsed->Value("psrv_job_steps", {{"job", *job}}), 50);
  EXPECT_EQ(parsed->Value("psrv_job_loss", {{"job", *job}}), 3.5);
  EXPECT_EQ(parsed->Value("psrv_job_tokens_per_second", {{"job", *job}}), 3000);
  EXPECT_EQ(parsed->Value("psrv_job_worker_step_seconds", {{"job", *job}, {"rank", "1"}}), 0.5);
  EXPECT_EQ(parsed->Value("psrv_job_worker_step", {{"job", *job}, {"rank", "0"}}), 10);
  EXPECT_EQ(parsed->Find("psrv_node_heartbeat_age_seconds").size(), 3u);
  EXPECT_EQ(parsed->Value("psrv_job_restarts", {{"job", *job}}), 0);
  EXPECT_EQ(parsed->Value("psrv_job_failovers", {{"job", *job}}), 0);
  EXPECT_EQ(parsed->Value("psrv_job_vacant_ranks", {{"job", *job}}), 0);

  // The loss history keeps the job's throughput at each report.
  const JobStatus status = *cluster.GetJob(*job);
  ASSERT_GE(status.loss_history_size(), 1);
  EXPECT_EQ(status.loss_history(status.loss_history_size() - 1).tokens_per_sec(), 3000);
  EXPECT_EQ(status.workers(1).step_seconds(), 0.5f);

  // Silent nodes turn DEAD (and the job FAILS).
  now += absl::Seconds(60);
  cluster.Tick();
  parsed = ParsePrometheusText(registry.Render());
  ASSERT_TRUE(parsed.ok());
  EXPECT_EQ(parsed->Value("psrv_nodes", {{"role", "WORKER"}, {"health", "DEAD"}}), 2);
  EXPECT_EQ(parsed->Value("psrv_jobs", {{"state", "FAILED"}}), 1);
  EXPECT_EQ(parsed->Value("psrv_job_vacant_ranks", {{"job", *job}}), 0);
  EXPECT_GE(parsed->Value("psrv_node_heartbeat_age_seconds", {{"role", "SERVER"}}).value_or(0), 59);
}

TEST(CoordinatorMetricsTest, OnlyTheLatestEndedJobsAreExportedOneByOne) {
  ClusterCoordinator::Options options;
  ClusterCoordinator cluster(options);
  MetricsRegistry registry;
  AddCoordinatorMetrics(&cluster, &registry);
  for (int i = 0; i < kEndedJobsInMetrics + 5; ++i) {
    absl::StatusOr<std::string> job = cluster.SubmitJob(Spec());
    ASSERT_TRUE(job.ok());
    ASSERT_TRUE(cluster.CancelJob(*job).ok());
  }
  ASSERT_TRUE(cluster.SubmitJob(Spec()).ok());  // PENDING: always exported.
  absl::StatusOr<ParsedMetrics> parsed = ParsePrometheusText(registry.Render());
  ASSERT_TRUE(parsed.ok());
  EXPECT_EQ(parsed->Find("psrv_job_info").size(), kEndedJobsInMetrics + 1u);
  EXPECT_EQ(parsed->Value("psrv_jobs", {{"state", "CANCELLED"}}), kEndedJobsInMetrics + 5);
  EXPECT_EQ(parsed->Find("psrv_job_info", {{"job", "job-1"}}).size(), 0u);  // The oldest.
}

}  // namespace
}  // namespace psrv
