#include "common/files.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <iterator>
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

class ResolvePathUnderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    base_ = ::testing::TempDir() + "/resolve_test";
    root_ = base_ + "/root";
    std::filesystem::create_directories(root_ + "/jobs");
    std::filesystem::create_directories(base_ + "/outside");
    std::filesystem::create_directories(base_ + "/root-sibling");
    std::error_code ignored;
    std::filesystem::create_directory_symlink(base_ + "/outside", root_ + "/escape", ignored);
  }
  std::string base_;
  std::string root_;
};

TEST_F(ResolvePathUnderTest, AcceptsPathsUnderTheRootExistingOrNot) {
  absl::StatusOr<std::string> jobs = ResolvePathUnder(root_, root_ + "/jobs");
  ASSERT_TRUE(jobs.ok()) << jobs.status();
  EXPECT_EQ(*jobs, std::filesystem::canonical(root_ + "/jobs").string());
  EXPECT_TRUE(ResolvePathUnder(root_, root_ + "/new/folder/").ok());
  EXPECT_TRUE(ResolvePathUnder(root_, root_).ok());
  EXPECT_TRUE(ResolvePathUnder(root_ + "/", root_ + "/jobs/./x/../y").ok());
  EXPECT_TRUE(ResolvePathUnder("/", "/anything/at/all").ok());
}

TEST_F(ResolvePathUnderTest, RelativePathsAreInvalid) {
  EXPECT_EQ(ResolvePathUnder(root_, "jobs").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ResolvePathUnder(root_, "").status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(ResolvePathUnderTest, EscapesAreDenied) {
  for (const std::string& path :
       {root_ + "/../outside", root_ + "/jobs/../../outside/x", root_ + "/escape",
        root_ + "/escape/new", base_ + "/root-sibling", std::string("/etc/passwd"),
        root_ + "/not-yet/../../outside"}) {
    absl::StatusOr<std::string> resolved = ResolvePathUnder(root_, path);
    EXPECT_EQ(resolved.status().code(), absl::StatusCode::kPermissionDenied) << path;
    EXPECT_NE(resolved.status().message().find("outside the root"), std::string::npos)
        << resolved.status();
  }
}

TEST(WriteFileAtomicallyTest, WritesWholeFilesAndReportsFailures) {
  const std::string path = ::testing::TempDir() + "/atomic.bin";
  const std::string bytes("a\0b\xff", 4);
  ASSERT_TRUE(WriteFileAtomically(path, bytes).ok());
  ASSERT_TRUE(WriteFileAtomically(path, bytes + bytes).ok());  // Replaced whole.
  std::ifstream in(path, std::ios::binary);
  const std::string read((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(read, bytes + bytes);
  EXPECT_FALSE(std::filesystem::exists(path + ".partial"));
  const absl::Status missing = WriteFileAtomically("/nonexistent-dir/x.bin", bytes);
  EXPECT_EQ(missing.code(), absl::StatusCode::kInternal);
  EXPECT_NE(missing.message().find("cannot write /nonexistent-dir/x.bin"), std::string::npos);
}

}  // namespace
}  // namespace psrv
