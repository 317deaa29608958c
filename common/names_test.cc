#include "common/names.h"

#include <string>

#include "gtest/gtest.h"

namespace psrv {
namespace {

TEST(NamesTest, AcceptsTheAllowedCharacters) {
  EXPECT_TRUE(CheckName("job_id", "job-12").ok());
  EXPECT_TRUE(CheckName("table name", "h.attn_qkv.weight").ok());
  EXPECT_TRUE(CheckName("name", std::string(128, 'a')).ok());
}

TEST(NamesTest, RefusesWhatCouldLeaveAFolder) {
  for (const std::string& bad :
       {std::string(""), std::string(129, 'a'), std::string("../x"), std::string("a/b"),
        std::string("."), std::string(".."), std::string("a b"), std::string("a\0b", 3),
        std::string("caf\xc3\xa9")}) {
    absl::Status status = CheckName("job_id", bad);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_NE(status.message().find("job_id"), std::string::npos) << status;
  }
}

}  // namespace
}  // namespace psrv
