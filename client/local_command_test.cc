// psctl local's checks of its input, before it starts anything.
#include "client/local_command.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "client/command_env.h"
#include "client/job_spec_flags.h"

namespace psrv {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;

TEST(LocalCommandTest, BadInputBeforeStartingAnything) {
  std::ostringstream out, err;
  CommandEnv env;
  env.out = &out;
  env.err = &err;
  JobSpecFlags flags;
  flags.data = "/nonexistent/data.txt";
  LocalFlags local;
  local.bin_dir = "/nonexistent";
  EXPECT_EQ(LocalCommand(env, flags, local), kExitBadInput);
  EXPECT_THAT(err.str(), HasSubstr("cannot read the training data /nonexistent/data.txt"));

  err.str("");
  local.worker_args = {"cuda_attention=flash"};
  EXPECT_EQ(LocalCommand(env, flags, local), kExitBadInput);
  EXPECT_THAT(err.str(), HasSubstr("--worker-arg takes a ps_worker flag, --name=value"));
  err.str("");
  local.worker_args = {"--device=cpu", "--max_jobs=3"};
  EXPECT_EQ(LocalCommand(env, flags, local), kExitBadInput);
  EXPECT_THAT(err.str(), HasSubstr("--worker-arg --max_jobs is set by psctl local itself"));
  local.worker_args.clear();

  err.str("");
  local.servers = 65;
  EXPECT_EQ(LocalCommand(env, flags, local), kExitBadInput);
  EXPECT_THAT(err.str(), HasSubstr("--servers must be in [1, 64], got 65"));

  err.str("");
  local.servers.reset();
  const std::string data = ::testing::TempDir() + "/data.txt";
  std::ofstream(data) << "hello world\n";
  flags.data = data;
  EXPECT_EQ(LocalCommand(env, flags, local), kExitFailure);
  EXPECT_THAT(err.str(), HasSubstr("no executable ps_coordinator in --bin-dir /nonexistent"));

  // A char tokenizer reads the data file for its vocabulary first.
  err.str("");
  flags.data = "/nonexistent/data.txt";
  flags.tokenizer = "char";
  EXPECT_EQ(LocalCommand(env, flags, local), kExitBadInput);
  EXPECT_THAT(err.str(), AllOf(HasSubstr("model.tokenizer is \"char\""),
                               HasSubstr("/nonexistent/data.txt cannot be read")));
}

}  // namespace
}  // namespace psrv
