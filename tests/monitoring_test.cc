// Watching a real cluster (coordinator, 2 servers, 2 workers on 127.0.0.1) train: every process's
// /metrics parses and agrees with the admin API, every metric is documented in docs/METRICS.md,
// `psctl shards --watch`, `psctl top` and `psctl job curves` work, and the coordinator's status
// page shows the cluster in headless Chromium (a screenshot is kept in the test's outputs). A
// standalone server shows whom a SYNC step waits for, and since when.
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <optional>
#include <fstream>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <grpcpp/client_context.h>
#include <nlohmann/json.hpp>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "client/coordinator_client.h"
#include "client/local_cluster.h"
#include "common/channel.h"
#include "common/http_client.h"
#include "common/prometheus_text.h"
#include "common/subprocess.h"
#include "gtest/gtest.h"
#include "proto/admin.grpc.pb.h"
#include "proto/parameter_server.grpc.pb.h"
#include "tests/test_util.h"

namespace psrv {
namespace {

// GET /metrics of 127.0.0.1:port, parsed strictly.
ParsedMetrics Scrape(int port, const std::string& who) {
  absl::StatusOr<HttpGetResult> reply = HttpGet("127.0.0.1", port, "/metrics");
  EXPECT_TRUE(reply.ok()) << who << ": " << reply.status();
  if (!reply.ok()) return ParsedMetrics();
  EXPECT_EQ(reply->status, 200) << who;
  EXPECT_EQ(reply->headers["content-type"], "text/plain; version=0.0.4; charset=utf-8") << who;
  absl::StatusOr<ParsedMetrics> parsed = ParsePrometheusText(reply->body);
  EXPECT_TRUE(parsed.ok()) << who << ": " << parsed.status();
  return parsed.ok() ? *parsed : ParsedMetrics();
}

std::string ShardRange(const nlohmann::json& shard) {
  return absl::StrCat("[", shard.at("range").at("begin").get<std::string>(), ",",
                      shard.at("range").at("end").get<std::string>(), ")");
}

uint64_t U64(const nlohmann::json& value) { return std::stoull(value.get<std::string>()); }

std::string Str(const nlohmann::json& value) { return value.get<std::string>(); }

int Count(const std::string& text, const std::string& part) {
  int n = 0;
  for (size_t at = text.find(part); at != std::string::npos; at = text.find(part, at + 1)) ++n;
  return n;
}

// The chromium executable, or "" (the tests that need it then say SKIPPED).
std::string FindChromium() {
  for (const char* path : {"/usr/bin/chromium", "/usr/bin/chromium-browser",
                           "/usr/bin/google-chrome", "/snap/bin/chromium"}) {
    if (access(path, X_OK) == 0) return path;
  }
  return "";
}

// Runs headless Chromium on `url` with `mode` (--dump-dom, or --screenshot=FILE); returns its
// stdout (the DOM) or "" on failure.
std::string Chromium(const std::string& chromium, const std::string& mode, const std::string& url,
                     const std::string& dir) {
  static int runs = 0;
  const std::string profile = TempDir("chromium_profile");
  const std::string out = absl::StrCat(dir, "/chromium_", ++runs, ".out");
  Subprocess browser;
  absl::Status started = browser.Start(
      {chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
       "--disable-component-update", "--disable-sync", "--no-first-run",
       "--disable-crash-reporter", "--user-data-dir=" + profile, "--window-size=1280,2000", mode,
       url},
      out);
  EXPECT_TRUE(started.ok()) << started;
  absl::StatusOr<int> code = browser.Wait(absl::Seconds(90));
  EXPECT_TRUE(code.ok() && *code == 0) << "chromium " << mode << ": "
                                       << (code.ok() ? absl::StrCat("exit ", *code) : "timeout")
                                       << "\n" << ReadFile(out);
  return ReadFile(out);
}

// Width and height of a PNG, from its IHDR chunk; (0, 0) if it is not a PNG.
std::pair<int, int> PngSize(const std::string& png) {
  if (png.size() < 24 || png.compare(0, 8, "\x89PNG\r\n\x1a\n") != 0) return {0, 0};
  auto be32 = [&](size_t at) {
    return (static_cast<unsigned char>(png[at]) << 24) |
           (static_cast<unsigned char>(png[at + 1]) << 16) |
           (static_cast<unsigned char>(png[at + 2]) << 8) | static_cast<unsigned char>(png[at + 3]);
  };
  return {static_cast<int>(be32(16)), static_cast<int>(be32(20))};
}

JobSpec SmallJob(uint64_t steps) {
  JobSpec spec = SmallMlpJob(SYNC, 2, 2, steps);
  spec.set_name("monitoring");
  spec.mutable_training()->set_eval_every(100);
  spec.mutable_training()->set_sample_length(40);
  return spec;
}

class MonitoringTest : public ::testing::Test {
 protected:
  void SetUp() override {
    log_dir_ = TempDir("monitoring");
    cluster_ = std::make_unique<LocalCluster>(TestClusterOptions(log_dir_, 2, 2));
    ASSERT_TRUE(cluster_->Start().ok());
    CoordinatorClientOptions client_options;
    client_options.address = cluster_->coordinator_address();
    client_ = std::make_unique<CoordinatorClient>(client_options);
    absl::StatusOr<std::vector<std::pair<std::string, int>>> ports =
        cluster_->MetricsPorts(absl::Seconds(30));
    ASSERT_TRUE(ports.ok()) << ports.status();
    for (const auto& [name, port] : *ports) metrics_ports_[name] = port;
  }

  void TearDown() override {
    if (cluster_) cluster_->Stop();
  }

  // Runs psctl with `args` against the cluster; returns its exit code, stdout and stderr.
  int Psctl(const std::vector<std::string>& args, std::string* out) {
    return RunPsctl(cluster_->coordinator_address(), log_dir_, args, out);
  }

  std::string log_dir_;
  std::unique_ptr<LocalCluster> cluster_;
  std::unique_ptr<CoordinatorClient> client_;
  std::map<std::string, int> metrics_ports_;  // "coordinator", "server 0", "worker 1"...
};

TEST_F(MonitoringTest, MetricsPsctlViewsCurvesAndStatusPageShowTheCluster) {
  ASSERT_EQ(metrics_ports_.size(), 5u);
  const JobSpec spec = SmallJob(600);
  absl::StatusOr<std::string> submitted = client_->SubmitJob(spec);
  ASSERT_TRUE(submitted.ok()) << submitted.status();
  const std::string job = *submitted;
  std::set<std::string> families;  // Every metric family seen, for the documentation check.
  auto remember = [&](const ParsedMetrics& metrics) {
    for (const auto& [name, type] : metrics.types) families.insert(name);
  };

  // 1. While it trains: the workers' metrics, and the live psctl views.
  const absl::Time deadline = absl::Now() + absl::Seconds(120);
  JobStatus status;
  while (absl::Now() < deadline) {
    absl::StatusOr<JobStatus> now = client_->GetJob(job);
    ASSERT_TRUE(now.ok()) << now.status();
    status = *now;
    if (status.state() != PENDING && status.state() != RUNNING) break;
    if (status.step() >= 30) break;
    absl::SleepFor(absl::Milliseconds(20));
  }
  ASSERT_EQ(status.state(), RUNNING) << status.message() << "; logs in " << log_dir_;
  for (const char* worker : {"worker 0", "worker 1"}) {
    const ParsedMetrics metrics = Scrape(metrics_ports_[worker], worker);
    remember(metrics);
    const std::map<std::string, std::string> labels = {{"job", job}};
    EXPECT_GE(metrics.Sum("psrv_worker_steps_total", labels), 25) << worker;
    // One observation per step; the worker may finish a step while the scrape reads the two.
    EXPECT_NEAR(metrics.Sum("psrv_worker_step_seconds_count", labels),
                metrics.Sum("psrv_worker_steps_total", labels), 1.0)
        << worker;
    for (const char* phase : {"pull", "compute", "push"}) {
      EXPECT_GE(metrics.Sum("psrv_worker_phase_seconds_count", {{"job", job}, {"phase", phase}}),
                25)
          << worker << " " << phase;
    }
    EXPECT_GT(metrics.Sum("psrv_worker_tokens_total", labels), 25 * 32) << worker;
    EXPECT_GT(metrics.Sum("psrv_worker_pushed_bytes_total", labels), 0) << worker;
    EXPECT_GT(metrics.Sum("psrv_worker_loss", labels), 0) << worker;
    EXPECT_GT(metrics.Sum("psrv_worker_tokens_per_second", labels), 0) << worker;
    EXPECT_EQ(metrics.Value("psrv_worker_busy"), 1) << worker;
    EXPECT_GT(metrics.Value("process_resident_memory_bytes").value_or(0), 1 << 20) << worker;
  }
  std::string out;
  EXPECT_EQ(Psctl({"shards", "--watch", "--interval", "0.2", "--count", "2"}, &out), 0) << out;
  EXPECT_EQ(Count(out, "psctl shards · every 200ms · "), 2) << out;
  EXPECT_NE(out.find("PUSH/S"), std::string::npos) << out;
  EXPECT_EQ(Psctl({"top", "--once"}, &out), 0) << out;
  EXPECT_NE(out.find("BUSIEST SHARDS"), std::string::npos) << out;
  EXPECT_NE(out.find(absl::StrCat(job, "     0  worker-")), std::string::npos) << out;
  EXPECT_NE(out.find(absl::StrCat(job, "     1  worker-")), std::string::npos) << out;

  // 2. The job ends.
  absl::StatusOr<JobStatus> final_status = client_->WatchJob(
      job, [](const JobStatus&) {},
      [&]() -> absl::Status {
        if (absl::Now() > deadline) return absl::DeadlineExceededError("job took too long");
        return cluster_->CheckProcesses();
      });
  ASSERT_TRUE(final_status.ok()) << final_status.status();
  ASSERT_EQ(final_status->state(), SUCCEEDED) << final_status->message();
  ASSERT_GE(final_status->loss_history_size(), 10);
  EXPECT_GT(final_status->loss_history(5).tokens_per_sec(), 0);
  EXPECT_GT(final_status->workers(0).step_seconds(), 0);

  // 3. Each server's metrics agree with what its admin API says, shard by shard.
  ASSERT_EQ(Psctl({"shards", "--json"}, &out), 0) << out;
  const nlohmann::json shards = nlohmann::json::parse(out);
  ASSERT_EQ(shards.at("servers").size(), 2u) << out;
  std::map<std::string, int> port_by_address;  // Admin address -> metrics port.
  for (const char* server : {"server 0", "server 1"}) {
    const ParsedMetrics metrics = Scrape(metrics_ports_[server], server);
    remember(metrics);
    const std::vector<MetricSample> info = metrics.Find("psrv_server_info");
    ASSERT_EQ(info.size(), 1u) << server;
    port_by_address[info[0].labels.at("address")] = metrics_ports_[server];
    EXPECT_NE(info[0].labels.at("server_id"), "standalone") << server;  // Registered.
  }
  for (const auto& server : shards.at("servers")) {
    const std::string address = Str(server.at("address"));
    ASSERT_EQ(port_by_address.count(address), 1u) << address;
    const ParsedMetrics metrics = Scrape(port_by_address[address], address);
    uint64_t pushes = 0, versions = 0;
    for (const auto& shard : server.at("shards")) {
      const std::map<std::string, std::string> labels = {
          {"job", job}, {"table", Str(shard.at("table"))}, {"range", ShardRange(shard)}};
      EXPECT_EQ(metrics.Value("psrv_shard_pushes_total", labels), U64(shard.at("pushes")))
          << address << " " << shard.dump();
      EXPECT_EQ(metrics.Value("psrv_shard_pulls_total", labels), U64(shard.at("pulls")));
      EXPECT_EQ(metrics.Value("psrv_shard_version", labels), U64(shard.at("version")));
      EXPECT_EQ(metrics.Value("psrv_shard_version", labels), 600);
      EXPECT_EQ(metrics.Value("psrv_shard_push_bytes_total", labels), U64(shard.at("bytes_in")));
      EXPECT_EQ(metrics.Value("psrv_shard_memory_bytes", labels), U64(shard.at("bytes")));
      EXPECT_EQ(shard.at("waiting_for_workers").size(), 0u);  // The job is over.
      pushes += U64(shard.at("pushes"));
      // Backups apply their primaries' steps; they do not aggregate (no step waits).
      if (shard.value("role", "PRIMARY") != "BACKUP") versions += U64(shard.at("version"));
    }
    // A Push call that succeeded is one accepted push of one shard; a PushBatch call carries
    // several (the workers send a step's small pushes together), so there are fewer calls than
    // pushes, and some of them are batches. Likewise for pulls.
    auto ok_calls = [&](const char* method) {
      return metrics
          .Value("grpc_server_handled_total", {{"grpc_service", "psrv.ParameterServer"},
                                               {"grpc_method", method},
                                               {"grpc_code", "OK"}})
          .value_or(0);
    };
    EXPECT_GT(ok_calls("PushBatch"), 0) << address;
    EXPECT_LT(ok_calls("Push") + ok_calls("PushBatch"), static_cast<double>(pushes)) << address;
    EXPECT_GT(metrics.Sum("grpc_server_handling_seconds_count", {{"grpc_method", "PullBatch"}}), 0);
    // SYNC: the gradients are never stale; one step wait per step of each shard.
    EXPECT_EQ(metrics.Value("psrv_push_staleness_count", {{"job", job}}), pushes);
    EXPECT_EQ(metrics.Value("psrv_push_staleness_sum", {{"job", job}}), 0);
    EXPECT_EQ(metrics.Value("psrv_sync_step_wait_seconds_count", {{"job", job}}), versions);
  }

  // 4. The coordinator's view.
  const ParsedMetrics coordinator = Scrape(metrics_ports_["coordinator"], "coordinator");
  remember(coordinator);
  EXPECT_EQ(coordinator.Value("psrv_jobs", {{"state", "SUCCEEDED"}}), 1);
  EXPECT_EQ(coordinator.Value("psrv_nodes", {{"role", "SERVER"}, {"health", "HEALTHY"}}), 2);
  EXPECT_EQ(coordinator.Value("psrv_job_step", {{"job", job}}), 600);
  EXPECT_GT(coordinator.Value("psrv_job_tokens_per_second", {{"job", job}}).value_or(0), 0);
  EXPECT_GT(coordinator.Value("psrv_job_val_loss", {{"job", job}}).value_or(0), 0);
  EXPECT_GT(coordinator.Sum("grpc_server_handled_total",
                            {{"grpc_method", "ReportProgress"}, {"grpc_code", "OK"}}),
            0);
  for (const auto& [name, port] : metrics_ports_) {
    if (absl::StartsWith(name, "worker")) continue;  // They exited with the job.
    absl::StatusOr<HttpGetResult> health = HttpGet("127.0.0.1", port, "/healthz");
    ASSERT_TRUE(health.ok()) << name;
    EXPECT_EQ(health->status, 200) << name;
  }

  // 5. Every metric a process exported is documented.
  const std::string docs = ReadFile(Runfile("docs/METRICS.md"));
  ASSERT_FALSE(docs.empty());
  EXPECT_GT(families.size(), 40u);
  for (const std::string& family : families) {
    EXPECT_NE(docs.find(absl::StrCat("`", family, "`")), std::string::npos)
        << family << " is not in docs/METRICS.md";
  }

  // 6. A rejected push shows up in the admin API, the metrics and the status page.
  const nlohmann::json& first = shards.at("servers")[0];
  const nlohmann::json& shard = first.at("shards")[0];
  {
    auto stub = ParameterServer::NewStub(CreateChannel(Str(first.at("address"))));
    PushRequest stale;
    stale.set_job_id(job);
    stale.set_table(Str(shard.at("table")));
    stale.mutable_range()->set_begin(U64(shard.at("range").at("begin")));
    stale.mutable_range()->set_end(U64(shard.at("range").at("end")));
    stale.set_dtype(FP32);
    stale.set_step(3);
    stale.set_worker_rank(1);
    stale.mutable_values()->resize(U64(shard.at("elements")) * 4);
    grpc::ClientContext context;
    PushResponse response;
    EXPECT_EQ(stub->Push(&context, stale, &response).error_code(),
              grpc::StatusCode::ALREADY_EXISTS);  // Step 3 was applied long ago.
  }
  ASSERT_EQ(Psctl({"shards", "--json", "--job", job}, &out), 0) << out;
  bool found = false;
  const nlohmann::json after = nlohmann::json::parse(out);
  for (const auto& server : after.at("servers")) {
    for (const auto& s : server.at("shards")) {
      if (Str(s.at("table")) != Str(shard.at("table")) || ShardRange(s) != ShardRange(shard) ||
          Str(server.at("address")) != Str(first.at("address"))) {
        continue;
      }
      found = true;
      EXPECT_EQ(s.at("last_error").get<std::string>().rfind("ALREADY_EXISTS: step 3", 0), 0u)
          << s.dump();
      EXPECT_NE(Str(s.at("last_error_ms")), "0");
      EXPECT_EQ(Str(s.at("rejected_pushes")), "1");
    }
  }
  EXPECT_TRUE(found) << out;
  const ParsedMetrics rejected = Scrape(port_by_address[Str(first.at("address"))], "server");
  EXPECT_EQ(rejected.Value("psrv_shard_rejected_pushes_total",
                           {{"table", Str(shard.at("table"))}, {"range", ShardRange(shard)}}),
            1);
  EXPECT_EQ(rejected.Value("grpc_server_handled_total",
                           {{"grpc_method", "Push"}, {"grpc_code", "AlreadyExists"}}),
            1);

  // 7. Training curves as files.
  const std::string curves = TempDir("curves");
  ASSERT_EQ(Psctl({"job", "curves", job, "--out", curves}, &out), 0) << out;
  const std::string csv = ReadFile(absl::StrCat(curves, "/", job, ".csv"));
  EXPECT_EQ(csv.rfind("step,train_loss,val_loss,tokens_per_sec\n", 0), 0u) << csv;
  EXPECT_GE(std::count(csv.begin(), csv.end(), '\n'), 30) << csv;
  if (access("/usr/bin/gnuplot", X_OK) == 0) {
    EXPECT_GT(PngSize(ReadFile(absl::StrCat(curves, "/", job, ".png"))).first, 0) << out;
  } else {
    std::cout << "SKIPPED the curves PNG: gnuplot is not installed (apt-get install gnuplot-nox)\n";
  }

  // 8. The status page and its JSON.
  const std::string page_url = cluster_->status_page_url();
  ASSERT_EQ(page_url, absl::StrCat("http://127.0.0.1:", metrics_ports_["coordinator"], "/"));
  absl::StatusOr<HttpGetResult> api =
      HttpGet("127.0.0.1", metrics_ports_["coordinator"], "/api/status");
  ASSERT_TRUE(api.ok()) << api.status();
  EXPECT_EQ(api->headers["content-type"], "application/json");
  const nlohmann::json api_json = nlohmann::json::parse(api->body);
  EXPECT_EQ(Str(api_json.at("jobs")[0].at("state")), "SUCCEEDED");
  EXPECT_EQ(api_json.at("servers").size(), 2u);
  // Workers started with --max_jobs=1 left the cluster when the job ended; the servers remain.
  EXPECT_EQ(api_json.at("nodes").size(), 2u);
  absl::StatusOr<HttpGetResult> page = HttpGet("127.0.0.1", metrics_ports_["coordinator"], "/");
  ASSERT_TRUE(page.ok());
  EXPECT_EQ(page->status, 200);
  EXPECT_NE(page->body.find("ALREADY_EXISTS: step 3"), std::string::npos);

  const std::string chromium = FindChromium();
  if (chromium.empty()) {
    std::cout << "SKIPPED the status page in Chromium: chromium is not installed "
                 "(apt-get install chromium)\n";
    return;
  }
  setenv("HOME", log_dir_.c_str(), 1);  // Chromium writes under $HOME; the test's may be read-only.
  const std::string url = page_url + "?refresh=0";
  const std::string dom = Chromium(chromium, "--dump-dom", url, log_dir_);
  EXPECT_NE(dom.find("<h1>psrv cluster</h1>"), std::string::npos) << dom.substr(0, 2000);
  EXPECT_NE(dom.find(absl::StrCat("<b>", job, "</b>")), std::string::npos);
  EXPECT_NE(dom.find("<span class=\"badge SUCCEEDED\">SUCCEEDED</span>"), std::string::npos);
  for (const auto& server : shards.at("servers")) {
    EXPECT_NE(dom.find(Str(server.at("address"))), std::string::npos) << server.at("address");
  }
  const size_t charts = dom.find(absl::StrCat("id=\"charts-", job, "\""));
  ASSERT_NE(charts, std::string::npos);
  const size_t svg = dom.find("<svg", charts);
  ASSERT_NE(svg, std::string::npos);
  const size_t train = dom.find("data-label=\"train\"", svg);
  ASSERT_NE(train, std::string::npos);
  const size_t points = dom.find("points=\"", train);
  ASSERT_NE(points, std::string::npos);
  const std::string polyline = dom.substr(points + 8, dom.find('"', points + 8) - points - 8);
  EXPECT_GE(std::count(polyline.begin(), polyline.end(), ','), 10) << polyline;
  EXPECT_NE(dom.find("data-label=\"validation\""), std::string::npos);
  EXPECT_NE(dom.find("data-label=\"tokens/s\""), std::string::npos);

  const char* outputs = std::getenv("TEST_UNDECLARED_OUTPUTS_DIR");
  const std::string screenshot = absl::StrCat(outputs ? outputs : log_dir_, "/status_page.png");
  Chromium(chromium, "--screenshot=" + screenshot, url, log_dir_);
  const std::string png = ReadFile(screenshot);
  EXPECT_EQ(PngSize(png), std::make_pair(1280, 2000)) << screenshot;
  EXPECT_GT(png.size(), 50000u) << "a blank page compresses to a few KiB";
}

// A SYNC step that has one worker's push but not the other's: the admin API and the metrics say
// whom it waits for and since when.
TEST(MonitoringServerTest, SyncWaitIsVisible) {
  const std::string dir = TempDir("server");
  Subprocess server;
  ASSERT_TRUE(server
                  .Start({Runfile("server/ps_server"), "--host=127.0.0.1", "--port=0",
                          "--port_file=" + dir + "/port", "--metrics_port=0",
                          "--metrics_port_file=" + dir + "/metrics_port"},
                         dir + "/server.log")
                  .ok());
  absl::StatusOr<int> port = WaitForPortFile(dir + "/port", absl::Seconds(30), &server);
  ASSERT_TRUE(port.ok()) << port.status();
  absl::StatusOr<int> metrics_port = WaitForPortFile(dir + "/metrics_port", absl::Seconds(1));
  ASSERT_TRUE(metrics_port.ok()) << metrics_port.status();
  const std::string address = absl::StrCat("127.0.0.1:", *port);
  auto stub = ParameterServer::NewStub(CreateChannel(address));
  CreateShardsRequest create;
  create.set_job_id("job");
  create.set_consistency(SYNC);
  create.mutable_optimizer()->set_kind(SGD);
  create.mutable_optimizer()->set_learning_rate(0.1f);
  create.set_num_workers(3);
  ShardSpec* spec = create.add_shards();
  spec->mutable_table()->set_name("w");
  spec->mutable_table()->add_shape(64);
  spec->mutable_range()->set_end(64);
  {
    grpc::ClientContext context;
    CreateShardsResponse response;
    ASSERT_TRUE(stub->CreateShards(&context, create, &response).ok());
  }
  auto push = [&](uint32_t rank) {
    PushRequest p;
    p.set_job_id("job");
    p.set_table("w");
    p.mutable_range()->set_end(64);
    p.set_dtype(FP32);
    p.set_step(1);
    p.set_worker_rank(rank);
    p.set_base_version(0);
    p.mutable_values()->resize(64 * 4);
    grpc::ClientContext context;
    PushResponse response;
    return stub->Push(&context, p, &response);
  };
  ASSERT_TRUE(push(1).ok());
  absl::SleepFor(absl::Milliseconds(300));
  absl::StatusOr<ServerStatus> status = GetServerStatus(address, "", absl::Seconds(10));
  ASSERT_TRUE(status.ok()) << status.status();
  ASSERT_EQ(status->shards_size(), 1);
  EXPECT_EQ(std::vector<uint32_t>(status->shards(0).waiting_for_workers().begin(),
                                  status->shards(0).waiting_for_workers().end()),
            (std::vector<uint32_t>{0, 2}));
  EXPECT_GE(status->shards(0).waiting_ms(), 300);
  EXPECT_GT(status->shards(0).push_rate(), 0);
  ParsedMetrics metrics = Scrape(*metrics_port, "server");
  const std::map<std::string, std::string> shard = {{"job", "job"}, {"range", "[0,64)"}};
  EXPECT_EQ(metrics.Value("psrv_shard_waiting_workers", shard), 2);
  EXPECT_GE(metrics.Value("psrv_shard_step_waiting_seconds", shard).value_or(0), 0.3);
  EXPECT_EQ(metrics.Value("psrv_shard_pending_pushes", shard), 1);

  ASSERT_TRUE(push(0).ok());
  ASSERT_TRUE(push(2).ok());
  status = GetServerStatus(address, "", absl::Seconds(10));
  ASSERT_TRUE(status.ok());
  EXPECT_EQ(status->shards(0).waiting_for_workers_size(), 0);
  EXPECT_EQ(status->shards(0).version(), 1u);
  metrics = Scrape(*metrics_port, "server");
  EXPECT_EQ(metrics.Value("psrv_shard_waiting_workers", shard), 0);
  EXPECT_EQ(metrics.Value("psrv_sync_step_wait_seconds_count", {{"job", "job"}}), 1);
  EXPECT_GE(metrics.Value("psrv_sync_step_wait_seconds_sum", {{"job", "job"}}).value_or(0), 0.3);
  server.Stop();
}

// `psctl local` ends its job by writing the training curves into its log folder.
TEST(MonitoringLocalTest, PsctlLocalWritesTrainingCurves) {
  const std::string dir = TempDir("local");
  const std::string out_path = dir + "/psctl.out";
  Subprocess psctl;
  ASSERT_TRUE(psctl
                  .Start({Runfile("client/psctl"), "local", "--data",
                          Runfile("tests/testdata/shakespeare_200k.txt"), "--model", "mlp",
                          "--steps", "60", "--servers", "1", "--workers", "1", "--log-dir",
                          dir + "/logs"},
                         out_path)
                  .ok());
  absl::StatusOr<int> code = psctl.Wait(absl::Seconds(180));
  const std::string out = ReadFile(out_path);
  ASSERT_TRUE(code.ok() && *code == 0) << out;
  EXPECT_NE(out.find("status page: http://127.0.0.1:"), std::string::npos) << out;
  const std::string csv_path = dir + "/logs/job-1.csv";
  EXPECT_NE(out.find("training curves: " + csv_path), std::string::npos) << out;
  EXPECT_EQ(ReadFile(csv_path).rfind("step,train_loss,val_loss,tokens_per_sec\n", 0), 0u);
  if (access("/usr/bin/gnuplot", X_OK) == 0) {
    EXPECT_NE(out.find(csv_path + ", " + dir + "/logs/job-1.png"), std::string::npos) << out;
    EXPECT_GT(PngSize(ReadFile(dir + "/logs/job-1.png")).first, 0);
  } else {
    std::cout << "SKIPPED the curves PNG: gnuplot is not installed (apt-get install gnuplot-nox)\n";
  }
}

}  // namespace
}  // namespace psrv
