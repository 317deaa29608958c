// TokenBuckets: every position in exactly one bucket, buckets by increasing token id, positions in
// increasing order, scratch reused across calls.
#include "worker/cuda/token_buckets.h"

#include <random>
#include <vector>

#include "gtest/gtest.h"

namespace psrv {
namespace cuda {
namespace {

TEST(TokenBucketsTest, SmallExample) {
  const std::vector<int32_t> tokens = {3, 1, 3, 0, 3, 1};
  std::vector<int32_t> counts;
  TokenBuckets buckets;
  BuildTokenBuckets(tokens.data(), tokens.size(), 5, &counts, &buckets);
  EXPECT_EQ(buckets.token_ids, (std::vector<int32_t>{0, 1, 3}));
  EXPECT_EQ(buckets.starts, (std::vector<int32_t>{0, 1, 3, 6}));
  EXPECT_EQ(buckets.positions, (std::vector<int32_t>{3, 1, 5, 0, 2, 4}));
  EXPECT_EQ(buckets.num_buckets(), 3);
}

TEST(TokenBucketsTest, RandomBatchesPartitionThePositions) {
  std::mt19937_64 rng(7);
  std::vector<int32_t> counts;
  TokenBuckets buckets;
  for (int trial = 0; trial < 20; ++trial) {
    const int vocab = 1 + static_cast<int>(rng() % 300);
    const int n = static_cast<int>(rng() % 2000);
    std::vector<int32_t> tokens(n);
    for (int32_t& t : tokens) t = static_cast<int32_t>(rng() % vocab);
    BuildTokenBuckets(tokens.data(), n, vocab, &counts, &buckets);
    ASSERT_EQ(buckets.starts.size(), buckets.token_ids.size() + 1);
    ASSERT_EQ(buckets.starts.back(), n);
    ASSERT_EQ(static_cast<int>(buckets.positions.size()), n);
    std::vector<int> seen(n, 0);
    for (int j = 0; j < buckets.num_buckets(); ++j) {
      if (j > 0) {
        ASSERT_LT(buckets.token_ids[j - 1], buckets.token_ids[j]);
      }
      ASSERT_LT(buckets.starts[j], buckets.starts[j + 1]) << "empty bucket";
      for (int k = buckets.starts[j]; k < buckets.starts[j + 1]; ++k) {
        const int32_t position = buckets.positions[k];
        if (k > buckets.starts[j]) {
          ASSERT_LT(buckets.positions[k - 1], position);
        }
        ASSERT_EQ(tokens[position], buckets.token_ids[j]);
        ++seen[position];
      }
    }
    for (int i = 0; i < n; ++i) ASSERT_EQ(seen[i], 1) << "position " << i;
  }
}

}  // namespace
}  // namespace cuda
}  // namespace psrv
