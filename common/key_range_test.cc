#include "common/key_range.h"

#include <algorithm>
#include <map>

#include "gtest/gtest.h"

namespace psrv {
namespace {

TableSpec Table(const std::string& name, std::vector<uint64_t> shape) {
  TableSpec t;
  t.set_name(name);
  for (uint64_t d : shape) t.add_shape(d);
  return t;
}

std::vector<ServerSlot> Servers(int n) {
  std::vector<ServerSlot> s;
  for (int i = 0; i < n; ++i) s.push_back({"s" + std::to_string(i), "addr" + std::to_string(i)});
  return s;
}

// Every key of every table is covered exactly once, by contiguous ascending ranges.
void ExpectExactCover(const std::vector<TableSpec>& tables,
                      const std::vector<ShardAssignment>& shards) {
  for (const TableSpec& t : tables) {
    uint64_t size = 1;
    for (uint64_t d : t.shape()) size *= d;
    uint64_t next = 0;
    for (const ShardAssignment& s : shards) {
      if (s.table() != t.name()) continue;
      EXPECT_EQ(s.range().begin(), next) << t.name();
      EXPECT_GT(s.range().end(), s.range().begin()) << t.name();
      next = s.range().end();
    }
    EXPECT_EQ(next, size) << t.name();
  }
}

TEST(PlanShardsTest, OneServerHoldsEverythingWhole) {
  std::vector<TableSpec> tables = {Table("a", {100, 10}), Table("b", {7})};
  auto shards = PlanShards(tables, Servers(1));
  ASSERT_EQ(shards.size(), 2u);
  ExpectExactCover(tables, shards);
  for (const auto& s : shards) EXPECT_EQ(s.server_id(), "s0");
}

TEST(PlanShardsTest, BigTablesAreSplitEvenlyAndSmallOnesBalanced) {
  std::vector<TableSpec> tables = {Table("emb", {256, 24}), Table("w1", {192, 256}),
                                   Table("b1", {256}), Table("w2", {256, 256}), Table("b2", {256})};
  for (int n : {2, 3, 5}) {
    auto shards = PlanShards(tables, Servers(n), /*min_shard_elements=*/1024);
    ExpectExactCover(tables, shards);
    std::map<std::string, uint64_t> load;
    for (const auto& s : shards) load[s.server_id()] += RangeSize(s.range());
    ASSERT_EQ(load.size(), static_cast<size_t>(n));
    uint64_t lo = UINT64_MAX, hi = 0;
    for (const auto& [id, l] : load) lo = std::min(lo, l), hi = std::max(hi, l);
    // The imbalance is at most one small table plus rounding.
    EXPECT_LE(hi - lo, 256u + 5u) << "servers=" << n;
  }
}

TEST(PlanShardsTest, SparseTablesAreCutAtRowBoundaries) {
  TableSpec embedding = Table("wte", {1001, 24});  // 1001 rows: not divisible by 3 servers.
  embedding.set_sparse_row_width(24);
  std::vector<TableSpec> tables = {embedding};
  for (int n : {2, 3, 7}) {
    auto shards = PlanShards(tables, Servers(n), /*min_shard_elements=*/1024);
    ExpectExactCover(tables, shards);
    ASSERT_EQ(shards.size(), static_cast<size_t>(n));
    for (const auto& s : shards) {
      EXPECT_EQ(s.range().begin() % 24, 0u) << n << " servers";
      EXPECT_EQ(RangeSize(s.range()) % 24, 0u) << n << " servers";
      EXPECT_LE(RangeSize(s.range()), (1001 / n + 1) * 24u);
    }
  }
}

TEST(PlanShardsTest, SmallTableIsNotSplit) {
  std::vector<TableSpec> tables = {Table("small", {100})};
  auto shards = PlanShards(tables, Servers(4), 4096);
  ASSERT_EQ(shards.size(), 1u);
  EXPECT_EQ(RangeSize(shards[0].range()), 100u);
}

TEST(PlanShardsTest, AddressesTravelWithAssignments) {
  auto shards = PlanShards({Table("t", {10000})}, Servers(2), 10);
  ASSERT_EQ(shards.size(), 2u);
  EXPECT_EQ(shards[0].server_address(), "addr0");
  EXPECT_EQ(shards[1].server_address(), "addr1");
  EXPECT_EQ(RangeSize(shards[0].range()), 5000u);
}

TEST(PlanShardsTest, BigLayerStackedTablesAreCutAtLayerBoundaries) {
  TableSpec stacked = Table("h.fc", {6, 512, 128});  // 6 layers of 64K keys.
  stacked.set_layers(6);
  TableSpec small = Table("h.bias", {6, 128});  // Slices too small to cut.
  small.set_layers(6);
  const std::vector<TableSpec> tables = {Table("wte", {65, 128}), stacked, small};
  for (int n : {1, 2, 3}) {
    auto shards = PlanShards(tables, Servers(n));
    ExpectExactCover(tables, shards);
    std::map<std::string, uint64_t> load;
    int stacked_shards = 0;
    for (const auto& s : shards) {
      load[s.server_id()] += RangeSize(s.range());
      if (s.table() != "h.fc") continue;
      ++stacked_shards;
      EXPECT_EQ(RangeSize(s.range()), 512u * 128u);  // One layer each.
    }
    EXPECT_EQ(stacked_shards, 6) << n;
    EXPECT_EQ(load.size(), static_cast<size_t>(n));  // Layers spread over every server.
  }
  // Below min_layer_elements a stacked table is planned like any other.
  EXPECT_EQ(PlanShards({stacked}, Servers(1), 4096, 1 << 20).size(), 1u);
}

TEST(KeyRangeTest, Contains) {
  EXPECT_TRUE(RangeContains(MakeRange(0, 10), MakeRange(2, 5)));
  EXPECT_TRUE(RangeContains(MakeRange(0, 10), MakeRange(0, 10)));
  EXPECT_FALSE(RangeContains(MakeRange(0, 10), MakeRange(5, 11)));
  EXPECT_FALSE(RangeContains(MakeRange(0, 10), MakeRange(3, 3)));  // empty
}

}  // namespace
}  // namespace psrv
