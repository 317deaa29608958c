#include "common/files.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>

namespace psrv {
namespace {

TEST(CreateDirectoriesTest, CreatesParentsAndAcceptsAnExistingFolder) {
  const std::string dir = ::testing::TempDir() + "/files_test/a/b";
  EXPECT_TRUE(CreateDirectories(dir).ok());
  EXPECT_TRUE(std::filesystem::is_directory(dir));
  EXPECT_TRUE(CreateDirectories(dir).ok());
}

TEST(CreateDirectoriesTest, NamesTheFolderInTheError) {
  const std::string file = ::testing::TempDir() + "/files_test_plain_file";
  std::ofstream(file) << "x";
  const absl::Status status = CreateDirectories(file + "/sub");
  EXPECT_EQ(status.code(), absl::StatusCode::kInternal);
  EXPECT_EQ(status.message().rfind("cannot create " + file + "/sub: ", 0), 0u) << status;
  const absl::Status named = CreateDirectories(file + "/sub", "--log-dir " + file);
  EXPECT_EQ(named.message().rfind("cannot create --log-dir " + file + ": ", 0), 0u) << named;
}

}  // namespace
}  // namespace psrv
