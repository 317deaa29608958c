#include "common/utf8.h"

#include <gtest/gtest.h>

#include <string>

namespace psrv {
namespace {

TEST(Utf8SequenceLengthTest, ValidSequences) {
  EXPECT_EQ(Utf8SequenceLength("a"), 1u);
  EXPECT_EQ(Utf8SequenceLength("\xc3\xa9x"), 2u);          // U+00E9
  EXPECT_EQ(Utf8SequenceLength("\xe2\x82\xac"), 3u);       // U+20AC
  EXPECT_EQ(Utf8SequenceLength("\xf0\x9f\x98\x80"), 4u);   // U+1F600
  EXPECT_EQ(Utf8SequenceLength("\xf4\x8f\xbf\xbf"), 4u);   // U+10FFFF
}

TEST(Utf8SequenceLengthTest, InvalidSequences) {
  EXPECT_EQ(Utf8SequenceLength(""), 0u);
  EXPECT_EQ(Utf8SequenceLength("\x80"), 0u);               // A stray continuation byte.
  EXPECT_EQ(Utf8SequenceLength("\xc3"), 0u);               // Truncated.
  EXPECT_EQ(Utf8SequenceLength("\xc3("), 0u);              // Not a continuation byte.
  EXPECT_EQ(Utf8SequenceLength("\xc0\xaf"), 0u);           // Overlong.
  EXPECT_EQ(Utf8SequenceLength("\xed\xa0\x80"), 0u);       // A UTF-16 surrogate.
  EXPECT_EQ(Utf8SequenceLength("\xf4\x90\x80\x80"), 0u);   // Above U+10FFFF.
  EXPECT_EQ(Utf8SequenceLength("\xff"), 0u);
}

TEST(ToValidUtf8Test, KeepsValidTextReplacesInvalidBytes) {
  EXPECT_EQ(ToValidUtf8("caf\xc3\xa9\n\t"), "caf\xc3\xa9\n\t");  // Control characters stay.
  EXPECT_EQ(ToValidUtf8("\xff\xfe ok \xc3"), "?? ok ?");
  EXPECT_EQ(ToValidUtf8("\xed\xa0\x80"), "???");
  EXPECT_EQ(ToValidUtf8(std::string("a\0b", 3)), std::string("a\0b", 3));
  EXPECT_EQ(ToValidUtf8(""), "");
}

}  // namespace
}  // namespace psrv
