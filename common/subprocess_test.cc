#include "common/subprocess.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"

namespace psrv {
namespace {

using ::testing::HasSubstr;

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

bool ProcessExists(pid_t pid) { return kill(pid, 0) == 0; }

TEST(SubprocessTest, ExitCodeAndLogFile) {
  const std::string log = ::testing::TempDir() + "/exit3.log";
  std::remove(log.c_str());
  Subprocess process;
  ASSERT_TRUE(process.Start({"/bin/sh", "-c", "echo $$ ; echo oops >&2; exit 3"}, log).ok());
  absl::StatusOr<int> code = process.Wait(absl::Seconds(10));
  ASSERT_TRUE(code.ok()) << code.status();
  EXPECT_EQ(*code, 3);
  EXPECT_FALSE(process.running());
  EXPECT_EQ(ReadFile(log), absl::StrCat(process.pid(), "\noops\n"));
  // Waiting again returns the same code.
  EXPECT_EQ(*process.Wait(absl::ZeroDuration()), 3);
}

TEST(SubprocessTest, StopSendsSigterm) {
  Subprocess process;
  ASSERT_TRUE(process.Start({"/bin/sleep", "100"}).ok());
  EXPECT_TRUE(process.running());
  absl::StatusOr<int> still = process.Wait(absl::Milliseconds(50));
  EXPECT_EQ(still.status().code(), absl::StatusCode::kDeadlineExceeded);
  const absl::Time start = absl::Now();
  EXPECT_EQ(process.Stop(), 128 + SIGTERM);
  EXPECT_LT(absl::Now() - start, absl::Seconds(4));
  EXPECT_FALSE(process.running());
}

TEST(SubprocessTest, StopEscalatesToSigkill) {
  const std::string log = ::testing::TempDir() + "/ignore_term.log";
  std::remove(log.c_str());
  Subprocess process;
  // The shell ignores SIGTERM (and so does the sleep it waits on).
  ASSERT_TRUE(process.Start({"/bin/sh", "-c", "trap '' TERM; echo ready; sleep 100"}, log).ok());
  for (int i = 0; i < 1000 && ReadFile(log) != "ready\n"; ++i)
    absl::SleepFor(absl::Milliseconds(10));
  ASSERT_EQ(ReadFile(log), "ready\n");
  const absl::Time start = absl::Now();
  EXPECT_EQ(process.Stop(absl::Milliseconds(200)), 128 + SIGKILL);
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(200));
}

TEST(SubprocessTest, SignalReachesTheChild) {
  Subprocess process;
  ASSERT_TRUE(process.Start({"/bin/sleep", "100"}).ok());
  process.Signal(SIGINT);
  absl::StatusOr<int> code = process.Wait(absl::Seconds(10));
  ASSERT_TRUE(code.ok()) << code.status();
  EXPECT_EQ(*code, 128 + SIGINT);
  process.Signal(SIGINT);  // No-op once it has exited.
}

TEST(SubprocessTest, DestructorKillsARunningChild) {
  pid_t pid;
  {
    Subprocess process;
    ASSERT_TRUE(process.Start({"/bin/sleep", "100"}).ok());
    pid = process.pid();
    ASSERT_GT(pid, 0);
    EXPECT_TRUE(ProcessExists(pid));
  }
  // Killed and reaped: the pid no longer exists (not even as a zombie).
  EXPECT_FALSE(ProcessExists(pid));
}

TEST(SubprocessTest, MissingBinary) {
  Subprocess process;
  absl::Status status = process.Start({"/nonexistent/binary"});
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(status.message()), HasSubstr("/nonexistent/binary"));
  EXPECT_FALSE(process.running());
  EXPECT_EQ(process.Start({}).code(), absl::StatusCode::kInvalidArgument);
}

TEST(SubprocessTest, CannotStartTwice) {
  Subprocess process;
  ASSERT_TRUE(process.Start({"/bin/sleep", "100"}).ok());
  EXPECT_EQ(process.Start({"/bin/sleep", "1"}).code(), absl::StatusCode::kFailedPrecondition);
  process.Stop();
  // After it stopped, the object can run another process.
  ASSERT_TRUE(process.Start({"/bin/sh", "-c", "exit 0"}).ok());
  EXPECT_EQ(*process.Wait(absl::Seconds(10)), 0);
}

TEST(PortFileTest, RoundTrip) {
  const std::string path = ::testing::TempDir() + "/port_roundtrip";
  std::remove(path.c_str());
  ASSERT_TRUE(WritePortFile(path, 54321).ok());
  absl::StatusOr<int> port = WaitForPortFile(path, absl::Seconds(1));
  ASSERT_TRUE(port.ok()) << port.status();
  EXPECT_EQ(*port, 54321);
}

TEST(PortFileTest, WaitsForTheWriter) {
  const std::string path = ::testing::TempDir() + "/port_later";
  std::remove(path.c_str());
  std::thread writer([&] {
    absl::SleepFor(absl::Milliseconds(100));
    ASSERT_TRUE(WritePortFile(path, 8080).ok());
  });
  absl::StatusOr<int> port = WaitForPortFile(path, absl::Seconds(10));
  writer.join();
  ASSERT_TRUE(port.ok()) << port.status();
  EXPECT_EQ(*port, 8080);
}

TEST(PortFileTest, Timeout) {
  const std::string path = ::testing::TempDir() + "/port_never";
  std::remove(path.c_str());
  const absl::Time start = absl::Now();
  absl::StatusOr<int> port = WaitForPortFile(path, absl::Milliseconds(100));
  EXPECT_EQ(port.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_THAT(std::string(port.status().message()), HasSubstr(path));
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(100));
}

TEST(PortFileTest, ProcessExitsBeforeWritingThePort) {
  const std::string path = ::testing::TempDir() + "/port_dead";
  std::remove(path.c_str());
  Subprocess process;
  ASSERT_TRUE(process.Start({"/bin/sh", "-c", "exit 7"}).ok());
  absl::StatusOr<int> port = WaitForPortFile(path, absl::Seconds(30), &process);
  EXPECT_EQ(port.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(port.status().message()), HasSubstr("exited with code 7"));
}

TEST(PortFileTest, ChildWritesPort) {
  const std::string path = ::testing::TempDir() + "/port_child";
  std::remove(path.c_str());
  Subprocess process;
  ASSERT_TRUE(process.Start({"/bin/sh", "-c", "echo 4242 > " + path + "; sleep 100"}).ok());
  absl::StatusOr<int> port = WaitForPortFile(path, absl::Seconds(10), &process);
  ASSERT_TRUE(port.ok()) << port.status();
  EXPECT_EQ(*port, 4242);
  EXPECT_EQ(process.Stop(), 128 + SIGTERM);
}

}  // namespace
}  // namespace psrv
