#include "common/format.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>

namespace psrv {
namespace {

TEST(HumanBytesTest, Units) {
  EXPECT_EQ(HumanBytes(0), "0 B");
  EXPECT_EQ(HumanBytes(1023), "1023 B");
  EXPECT_EQ(HumanBytes(1024), "1.0 KiB");
  EXPECT_EQ(HumanBytes(1536), "1.5 KiB");
  EXPECT_EQ(HumanBytes(10 * 1024 * 1024 + 300 * 1024), "10.3 MiB");
  EXPECT_EQ(HumanBytes(1024ull * 1024 * 1024), "1.0 GiB");
  EXPECT_EQ(HumanBytes(3ull << 40), "3.0 TiB");
  // Just below a unit boundary rounds up into the next unit, not to "1024.0 KiB".
  EXPECT_EQ(HumanBytes(1024 * 1024 - 1), "1.0 MiB");
  EXPECT_EQ(HumanBytes(std::numeric_limits<uint64_t>::max()), "16384.0 PiB");
}

TEST(HumanCountTest, Suffixes) {
  EXPECT_EQ(HumanCount(0), "0.0");
  EXPECT_EQ(HumanCount(3.14), "3.1");
  EXPECT_EQ(HumanCount(812), "812");
  EXPECT_EQ(HumanCount(45123.4), "45.1k");
  EXPECT_EQ(HumanCount(999999), "1.0M");
  EXPECT_EQ(HumanCount(1.2e6), "1.2M");
  EXPECT_EQ(HumanCount(3.5e9), "3.5G");
  EXPECT_EQ(HumanCount(std::nan("")), "-");
}

TEST(DurationTest, Clock) {
  EXPECT_EQ(FormatClock(absl::ZeroDuration()), "0:00");
  EXPECT_EQ(FormatClock(absl::Seconds(32)), "0:32");
  EXPECT_EQ(FormatClock(absl::Seconds(754)), "12:34");
  EXPECT_EQ(FormatClock(absl::Seconds(3723)), "1:02:03");
  EXPECT_EQ(FormatClock(absl::Hours(100)), "100:00:00");
  EXPECT_EQ(FormatClock(absl::Seconds(-5)), "0:00");
  EXPECT_EQ(FormatClock(absl::Milliseconds(59999)), "0:59");
}

TEST(DurationTest, Age) {
  EXPECT_EQ(FormatAge(absl::ZeroDuration()), "0s");
  EXPECT_EQ(FormatAge(absl::Seconds(45)), "45s");
  EXPECT_EQ(FormatAge(absl::Seconds(125)), "2m05s");
  EXPECT_EQ(FormatAge(absl::Minutes(187)), "3h07m");
  EXPECT_EQ(FormatAge(absl::Hours(52)), "2d04h");
  EXPECT_EQ(FormatAge(absl::Seconds(-3)), "0s");
}

TEST(DurationTest, AgeSince) {
  const absl::Time now = absl::FromUnixSeconds(1700000000);
  EXPECT_EQ(FormatAgeSince(0, now), "-");
  EXPECT_EQ(FormatAgeSince(1700000000LL * 1000 - 90 * 1000, now), "1m30s");
}

TEST(FormatLossTest, Values) {
  EXPECT_EQ(FormatLoss(2.31449f), "2.314");
  EXPECT_EQ(FormatLoss(0.0f, false), "-");
  EXPECT_EQ(FormatLoss(std::nanf("")), "-");
}

TEST(ProgressLineTest, Example) {
  ProgressInfo info;
  info.step = 120;
  info.steps = 500;
  info.loss = 2.314f;
  info.tokens_per_sec = 45100;
  info.eta = absl::Seconds(32);
  EXPECT_EQ(ProgressLine(info, 12), "[##..........] 120/500 24% loss 2.314 tok/s 45.1k eta 0:32");
  EXPECT_EQ(ProgressLine(info, 30),
            "[#######.......................] 120/500 24% loss 2.314 tok/s 45.1k eta 0:32");
}

TEST(ProgressLineTest, ValidationLossOnceThereIsOne) {
  ProgressInfo info;
  info.step = 120;
  info.steps = 500;
  info.loss = 2.314f;
  info.val_loss = 1.9124f;
  EXPECT_EQ(ProgressLine(info, 4), "[....] 120/500 24% loss 2.314 val 1.912 tok/s - eta -");
}

TEST(ProgressLineTest, StartEndAndUnknowns) {
  ProgressInfo info;
  info.steps = 200;
  EXPECT_EQ(ProgressLine(info, 10), "[..........] 0/200 0% loss - tok/s - eta -");
  info.step = 200;
  info.loss = 1.5f;
  info.tokens_per_sec = 812;
  info.eta = absl::ZeroDuration();
  EXPECT_EQ(ProgressLine(info, 10), "[##########] 200/200 100% loss 1.500 tok/s 812 eta 0:00");
  // Past the end (lowest worker step can exceed a stale total): capped at 100%.
  info.step = 250;
  EXPECT_EQ(ProgressLine(info, 4), "[####] 250/200 100% loss 1.500 tok/s 812 eta 0:00");
  ProgressInfo unknown_total;
  unknown_total.step = 7;
  EXPECT_EQ(ProgressLine(unknown_total, 3), "[...] 7/? -% loss - tok/s - eta -");
}

TEST(PrintableTextTest, KeepsTextReplacesControlAndBrokenUtf8) {
  EXPECT_EQ(PrintableText("Hello,\tworld\n"), "Hello,\tworld\n");
  EXPECT_EQ(PrintableText("caf\xc3\xa9"), "caf\xc3\xa9");  // Valid UTF-8 stays.
  EXPECT_EQ(PrintableText(std::string("a\x1b[2Jb\x00"
                                      "c",
                                      8)),
            "a?[2Jb?c");
  EXPECT_EQ(PrintableText("\xff\xfe ok \xc3"), "?? ok ?");
  EXPECT_EQ(PrintableText("\xed\xa0\x80"), "???");  // A UTF-16 surrogate is not valid UTF-8.
}

TEST(JsonQuoteTest, Escapes) {
  EXPECT_EQ(JsonQuote("plain"), "\"plain\"");
  EXPECT_EQ(JsonQuote("a\"b\\c\nd\x01"), "\"a\\\"b\\\\c\\nd\\u0001\"");
}

TEST(TableTest, AlignsColumns) {
  Table table({"ID", "NAME", "STEP"});
  table.SetRightAligned(2);
  table.AddRow({"j-1", "tiny", "120/500"});
  table.AddRow({"j-22", "a-longer-name", "5/10"});
  EXPECT_EQ(table.Render(),
            "ID    NAME              STEP\n"
            "j-1   tiny           120/500\n"
            "j-22  a-longer-name     5/10\n");
}

TEST(TableTest, NoTrailingBlanksAndMissingCells) {
  Table table({"A", "B", "C"});
  table.AddRow({"x"});
  table.AddRow({"long", "y", ""});
  EXPECT_EQ(table.Render(),
            "A     B  C\n"
            "x\n"
            "long  y\n");
}

TEST(TableTest, SpanningRowDoesNotWidenColumns) {
  Table table({"SERVER", "JOB", "TABLE"});
  table.AddRow({"127.0.0.1:5001", "j-1", "embedding"});
  table.AddSpanningRow("127.0.0.1:5002", "error: UNAVAILABLE: connection refused");
  EXPECT_EQ(table.Render(),
            "SERVER          JOB  TABLE\n"
            "127.0.0.1:5001  j-1  embedding\n"
            "127.0.0.1:5002  error: UNAVAILABLE: connection refused\n");
}

TEST(TableTest, CountsUtf8AsOneColumn) {
  Table table({"N", "X"});
  table.AddRow({"caf\xc3\xa9", "1"});
  table.AddRow({"ab", "2"});
  EXPECT_EQ(table.Render(),
            "N     X\n"
            "caf\xc3\xa9  1\n"
            "ab    2\n");
}

TEST(TableTest, HeaderOnly) {
  Table table({"ID", "STATE"});
  EXPECT_TRUE(table.empty());
  EXPECT_EQ(table.Render(), "ID  STATE\n");
}

TEST(StalenessTextTest, ShowsClocksBoundBlockedPullsAndPushStaleness) {
  StalenessInfo info;
  EXPECT_EQ(StalenessText(info), "");
  info.clocks = {12, 10, 11, 12};
  info.bound = 2;
  EXPECT_EQ(StalenessText(info), "clocks 12,10,11,12 (bound 2)");
  info.blocked_pulls = 1;
  info.mean_push_staleness = 5.24;
  info.max_push_staleness = 14;
  EXPECT_EQ(StalenessText(info),
            "clocks 12,10,11,12 (bound 2, 1 pull blocked); push staleness 5.2 (max 14)");
  info.clocks.clear();  // ASYNC: no clocks.
  EXPECT_EQ(StalenessText(info), "push staleness 5.2 (max 14)");
}

}  // namespace
}  // namespace psrv
