// psctl's cluster views against in-process fake Coordinator and Admin services.
#include "client/monitor_commands.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "client/command_test_util.h"

namespace psrv {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

TEST_F(CommandsTest, Cluster) {
  EXPECT_EQ(ClusterCommand(env_, false), kExitOk);
  EXPECT_THAT(out_.str(), HasSubstr("ID   ROLE    ADDRESS"));
  EXPECT_THAT(out_.str(), HasSubstr("s-2  SERVER  127.0.0.1:1"));
  EXPECT_THAT(out_.str(), HasSubstr("DEAD"));
  EXPECT_THAT(out_.str(), HasSubstr("WORKER"));
}

TEST_F(CommandsTest, ShardsTableWithUnreachableServer) {
  env_.timeout = absl::Seconds(2);
  EXPECT_EQ(ShardsCommand(env_, ShardsFlags()), kExitOk) << err_.str();
  const std::string text = out_.str();
  EXPECT_THAT(text, HasSubstr("SERVER"));
  EXPECT_THAT(text, HasSubstr("embedding"));
  EXPECT_THAT(text, HasSubstr("[0,6144)"));
  EXPECT_THAT(text, HasSubstr("72.0 KiB"));
  EXPECT_THAT(text, HasSubstr("1.0 MiB / 2.0 MiB"));
  EXPECT_THAT(text, HasSubstr("0,1"));
  EXPECT_THAT(text,
              HasSubstr("127.0.0.1:1      error: get status of server 127.0.0.1:1: UNAVAILABLE"));
  EXPECT_THAT(text, HasSubstr("; is the ps_server at 127.0.0.1:1 running?\n"));
}

TEST_F(CommandsTest, ShardsJson) {
  env_.timeout = absl::Seconds(2);
  ShardsFlags flags;
  flags.job_id = "job-7";
  flags.json = true;
  EXPECT_EQ(ShardsCommand(env_, flags), kExitOk);
  const std::string text = out_.str();
  EXPECT_THAT(text, HasSubstr("\"servers\": ["));
  EXPECT_THAT(text, HasSubstr("\"job_id\": \"job-7\""));
  EXPECT_THAT(text, HasSubstr("\"rejected_pushes\": \"0\""));  // Zeros are printed.
  EXPECT_THAT(text, HasSubstr("\"errors\": ["));
  EXPECT_THAT(text, HasSubstr("\"code\": \"UNAVAILABLE\""));
}

TEST_F(CommandsTest, ShardsWatchRefreshesUntilTheCount) {
  env_.timeout = absl::Seconds(2);
  ShardsFlags flags;
  flags.watch = true;
  flags.interval = absl::Milliseconds(10);
  flags.count = 2;
  EXPECT_EQ(ShardsCommand(env_, flags), kExitOk) << err_.str();
  const std::string text = out_.str();
  // Not a terminal: frames follow one another, each under its title line.
  size_t first = text.find("psctl shards · every 10ms · ");
  ASSERT_NE(first, std::string::npos) << text;
  EXPECT_NE(text.find("psctl shards · every 10ms · ", first + 1), std::string::npos);
  EXPECT_THAT(text, Not(HasSubstr("\033[2J")));
  EXPECT_THAT(text, HasSubstr("[0,6144)"));

  // On a terminal each frame clears the screen; Ctrl-C ends the view with 0.
  out_.str("");
  env_.tty = true;
  int polls = 0;
  env_.interrupted = [&polls] { return ++polls > 3; };
  flags.count = 0;
  EXPECT_EQ(ShardsCommand(env_, flags), kExitOk);
  EXPECT_EQ(out_.str().rfind("\033[H\033[2J", 0), 0u);

  // --json --watch: one compact document per line.
  out_.str("");
  env_.tty = false;
  env_.interrupted = [] { return false; };
  flags.json = true;
  flags.count = 2;
  EXPECT_EQ(ShardsCommand(env_, flags), kExitOk);
  std::istringstream lines(out_.str());
  std::string line;
  int documents = 0;
  while (std::getline(lines, line)) {
    EXPECT_EQ(line.rfind("{\"servers\":[", 0), 0u) << line;
    ++documents;
  }
  EXPECT_EQ(documents, 2);
}

TEST_F(CommandsTest, TopOnce) {
  env_.timeout = absl::Seconds(2);
  TopFlags flags;
  flags.once = true;
  EXPECT_EQ(TopCommand(env_, flags), kExitOk) << err_.str();
  const std::string text = out_.str();
  EXPECT_THAT(text, HasSubstr("BUSIEST SHARDS"));
  EXPECT_THAT(text, HasSubstr("embedding"));
  EXPECT_THAT(text, HasSubstr("error: 127.0.0.1:1"));
  EXPECT_THAT(text, HasSubstr("SLOWEST WORKERS"));
  EXPECT_THAT(text, Not(HasSubstr("\033")));
  flags.limit = 0;
  EXPECT_EQ(TopCommand(env_, flags), kExitBadInput);
}

}  // namespace
}  // namespace psrv
