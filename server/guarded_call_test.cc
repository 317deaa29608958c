#include "server/guarded_call.h"

#include <new>
#include <stdexcept>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace psrv {
namespace {

TEST(CatchExceptionsTest, ReturnsOkWhenNothingThrows) {
  bool ran = false;
  EXPECT_TRUE(CatchExceptions("Pull", [&] { ran = true; }).ok());
  EXPECT_TRUE(ran);
}

// What escaped CreateShards before: a vector too long for the allocator.
TEST(CatchExceptionsTest, AnExceptionBecomesInternalNamingTheMethodAndWhat) {
  absl::Status status = CatchExceptions("CreateShards", [] {
    std::vector<float> huge;
    huge.reserve(huge.max_size() + 1);
  });
  EXPECT_EQ(status.code(), absl::StatusCode::kInternal);
  EXPECT_EQ(status.message().rfind("CreateShards: ", 0), 0u) << status;
  EXPECT_GT(status.message().size(), std::string("CreateShards: ").size());
}

TEST(CatchExceptionsTest, AnythingThrownIsCaught) {
  absl::Status status = CatchExceptions("Push", [] { throw 42; });
  EXPECT_EQ(status.code(), absl::StatusCode::kInternal);
  EXPECT_EQ(status.message(), "Push: unknown exception");
}

}  // namespace
}  // namespace psrv
