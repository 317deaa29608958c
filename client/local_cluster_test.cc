// LocalCluster against stand-in binaries: shell scripts that take the real flags, write port files
// and sleep (or fail, as the environment tells them).
#include "client/local_cluster.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/stat.h>

#include <fstream>
#include <sstream>
#include <string>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"

namespace psrv {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

// Writes the port it is told (via PORT_<role>) to --port_file, logs its pid and arguments, then
// sleeps; FAIL_<role>=code makes it exit with that code instead (after writing the port if
// LATE_FAIL is set).
constexpr char kScript[] = R"(#!/bin/sh
role=%ROLE%
echo "pid $$"
echo "args $*"
for a in "$@"; do
  case "$a" in --port_file=*) pf="${a#--port_file=}";; esac
done
eval fail=\$FAIL_$role
if [ -n "$fail" ] && [ -z "$LATE_FAIL" ]; then echo "fatal: bad flag" >&2; exit "$fail"; fi
if [ -n "$pf" ]; then
  eval port=\$PORT_$role
  echo "$port" > "$pf.tmp" && mv "$pf.tmp" "$pf"
fi
if [ -n "$fail" ]; then sleep 0.3; echo "dying now" >&2; exit "$fail"; fi
exec sleep 1000
)";

class LocalClusterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = absl::StrCat(::testing::TempDir(), "/local_cluster_",
                         ::testing::UnitTest::GetInstance()->current_test_info()->name());
    bin_dir_ = root_ + "/bin";
    log_dir_ = root_ + "/logs";
    mkdir(root_.c_str(), 0755);
    mkdir(bin_dir_.c_str(), 0755);
    mkdir(log_dir_.c_str(), 0755);
    WriteScript("ps_coordinator", "coordinator");
    WriteScript("ps_server", "server");
    WriteScript("ps_worker", "worker");
    setenv("PORT_coordinator", "7070", 1);
    setenv("PORT_server", "5000", 1);
    for (const char* var : {"FAIL_coordinator", "FAIL_server", "FAIL_worker", "LATE_FAIL"}) {
      unsetenv(var);
    }
  }

  void WriteScript(const std::string& name, const std::string& role) {
    std::string text = kScript;
    text.replace(text.find("%ROLE%"), 6, role);
    const std::string path = bin_dir_ + "/" + name;
    std::ofstream(path) << text;
    chmod(path.c_str(), 0755);
  }

  LocalClusterOptions Options() {
    absl::StatusOr<LocalBinaries> binaries = FindLocalBinaries(bin_dir_, "");
    EXPECT_TRUE(binaries.ok()) << binaries.status();
    LocalClusterOptions options;
    options.binaries = *binaries;
    options.num_servers = 2;
    options.num_workers = 3;
    options.log_dir = log_dir_;
    options.startup_timeout = absl::Seconds(20);
    return options;
  }

  std::string Log(const std::string& stem) {
    std::ifstream in(log_dir_ + "/" + stem + ".log");
    std::stringstream buffer;
    buffer << in.rdbuf();
    return buffer.str();
  }

  // Workers are not waited for by Start(): give their scripts a moment to log.
  std::string LogOnceWritten(const std::string& stem) {
    for (int i = 0; i < 200; ++i) {
      std::string log = Log(stem);
      if (log.find("args") != std::string::npos) return log;
      absl::SleepFor(absl::Milliseconds(25));
    }
    return Log(stem);
  }

  pid_t PidFromLog(const std::string& stem) {
    for (absl::string_view line : absl::StrSplit(LogOnceWritten(stem), '\n')) {
      int pid;
      if (absl::ConsumePrefix(&line, "pid ") && absl::SimpleAtoi(line, &pid)) return pid;
    }
    return -1;
  }

  std::string root_, bin_dir_, log_dir_;
};

TEST_F(LocalClusterTest, FindsBinariesInBinDir) {
  absl::StatusOr<LocalBinaries> binaries = FindLocalBinaries(bin_dir_, "");
  ASSERT_TRUE(binaries.ok()) << binaries.status();
  EXPECT_EQ(binaries->coordinator, bin_dir_ + "/ps_coordinator");
  EXPECT_EQ(binaries->server, bin_dir_ + "/ps_server");
  EXPECT_EQ(binaries->worker, bin_dir_ + "/ps_worker");

  absl::StatusOr<LocalBinaries> missing = FindLocalBinaries(root_, "");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(missing.status().message()), HasSubstr("ps_coordinator"));
  EXPECT_THAT(std::string(missing.status().message()), HasSubstr("--bin-dir"));
}

TEST_F(LocalClusterTest, WorkerArgsReachEveryWorker) {
  LocalClusterOptions options = Options();
  options.worker_args = {"--cuda_attention=flash", "--device=cpu"};
  LocalCluster cluster(options);
  ASSERT_TRUE(cluster.Start().ok());
  for (const char* worker : {"worker-0", "worker-2"}) {
    EXPECT_THAT(LogOnceWritten(worker),
                HasSubstr("--host=127.0.0.1 --cuda_attention=flash --device=cpu --metrics_port=0"))
        << worker;
  }
  EXPECT_THAT(Log("server-0"), Not(HasSubstr("--cuda_attention")));
  cluster.Stop(absl::Seconds(5));
}

// Servers confine checkpoints to --checkpoint_root: "/" unless psctl local --checkpoint-root says.
TEST_F(LocalClusterTest, CheckpointRootReachesEveryServer) {
  LocalClusterOptions options = Options();
  {
    LocalCluster cluster(options);
    ASSERT_TRUE(cluster.Start().ok());
    EXPECT_THAT(Log("server-0"), HasSubstr("--checkpoint_root=/ "));
    cluster.Stop(absl::Seconds(5));
  }
  options.checkpoint_root = root_ + "/ckpt";
  LocalCluster cluster(options);
  ASSERT_TRUE(cluster.Start().ok());
  for (const char* server : {"server-0", "server-1"}) {
    EXPECT_THAT(Log(server), HasSubstr("--checkpoint_root=" + root_ + "/ckpt")) << server;
  }
  EXPECT_THAT(LogOnceWritten("worker-0"), Not(HasSubstr("--checkpoint_root")));
  cluster.Stop(absl::Seconds(5));
}

TEST_F(LocalClusterTest, StartsEveryProcessWithTheRightFlagsAndStopsThem) {
  LocalCluster cluster(Options());
  ASSERT_TRUE(cluster.Start().ok());
  EXPECT_EQ(cluster.coordinator_address(), "127.0.0.1:7070");
  EXPECT_TRUE(cluster.CheckProcesses().ok());

  EXPECT_THAT(
      Log("coordinator"),
      HasSubstr("args --host=127.0.0.1 --port=0 --port_file=" + log_dir_ + "/coordinator.port" +
                " --state_db=" + log_dir_ + "/coordinator.db"));
  EXPECT_THAT(Log("server-1"), HasSubstr("args --host=127.0.0.1 --port=0 --port_file=" + log_dir_ +
                                         "/server-1.port --coordinator=127.0.0.1:7070"));
  EXPECT_THAT(LogOnceWritten("worker-2"),
              HasSubstr("args --coordinator=127.0.0.1:7070 --max_jobs=1 --host=127.0.0.1 "
                        "--metrics_port=0 --metrics_port_file=" + log_dir_ +
                        "/worker-2.metrics_port"));
  // Every process serves its metrics on a free port of its own.
  EXPECT_THAT(Log("coordinator"), HasSubstr("--metrics_port=0 --metrics_port_file=" + log_dir_ +
                                            "/coordinator.metrics_port"));
  EXPECT_THAT(Log("server-1"), HasSubstr("--metrics_port=0 --metrics_port_file=" + log_dir_ +
                                         "/server-1.metrics_port"));
  // The stand-ins write no metrics port: no status page, and MetricsPorts says who is missing.
  EXPECT_EQ(cluster.status_page_url(), "");
  absl::StatusOr<std::vector<std::pair<std::string, int>>> ports =
      cluster.MetricsPorts(absl::Milliseconds(50));
  EXPECT_EQ(ports.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_THAT(std::string(ports.status().message()), HasSubstr("coordinator: no metrics port"));

  std::vector<pid_t> pids;
  for (const char* stem :
       {"coordinator", "server-0", "server-1", "worker-0", "worker-1", "worker-2"}) {
    pids.push_back(PidFromLog(stem));
    ASSERT_GT(pids.back(), 0) << stem;
  }
  cluster.Stop(absl::Seconds(5));
  for (pid_t pid : pids) EXPECT_NE(kill(pid, 0), 0) << pid;
}

TEST_F(LocalClusterTest, CoordinatorThatDiesAtOnceIsNamedWithItsLog) {
  setenv("FAIL_coordinator", "1", 1);
  LocalCluster cluster(Options());
  absl::Status status = cluster.Start();
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(status.message()), HasSubstr("coordinator (pid "));
  EXPECT_THAT(std::string(status.message()), HasSubstr("exited with code 1"));
  EXPECT_THAT(std::string(status.message()), HasSubstr("fatal: bad flag"));
}

TEST_F(LocalClusterTest, ServerThatDiesLaterIsReported) {
  setenv("FAIL_server", "3", 1);
  setenv("LATE_FAIL", "1", 1);
  LocalCluster cluster(Options());
  ASSERT_TRUE(cluster.Start().ok());
  absl::Status status;
  for (int i = 0; i < 100 && status.ok(); ++i) {
    absl::SleepFor(absl::Milliseconds(50));
    status = cluster.CheckProcesses();
  }
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(status.message()), HasSubstr("server 0"));
  EXPECT_THAT(std::string(status.message()), HasSubstr("exited with code 3"));
  EXPECT_THAT(std::string(status.message()), HasSubstr("dying now"));
}

TEST_F(LocalClusterTest, WorkerThatFinishesCleanlyIsFine) {
  setenv("FAIL_worker", "0", 1);
  LocalCluster cluster(Options());
  ASSERT_TRUE(cluster.Start().ok());
  absl::SleepFor(absl::Milliseconds(300));
  EXPECT_TRUE(cluster.CheckProcesses().ok()) << cluster.CheckProcesses();
}

TEST_F(LocalClusterTest, InterruptedWhileWaitingForAPort) {
  setenv("PORT_coordinator", "", 1);  // Never writes a usable port.
  LocalClusterOptions options = Options();
  int polls = 0;
  options.interrupted = [&polls] { return ++polls > 3; };
  LocalCluster cluster(options);
  EXPECT_EQ(cluster.Start().code(), absl::StatusCode::kCancelled);
}

TEST(TailOfFileTest, LastLines) {
  const std::string path = ::testing::TempDir() + "/tail.txt";
  std::ofstream(path) << "1\n2\n3\n4\n";
  EXPECT_EQ(TailOfFile(path, 2), "3\n4");
  EXPECT_EQ(TailOfFile(path, 10), "1\n2\n3\n4");
  EXPECT_EQ(TailOfFile(path + ".missing", 3), "");
}

}  // namespace
}  // namespace psrv
