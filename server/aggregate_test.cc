#include "server/aggregate.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <utility>
#include <vector>

#include "common/bf16.h"
#include "gtest/gtest.h"

namespace psrv {
namespace {

TEST(SyncAggregatorTest, MeanOfExactlyTheWorkersPushes) {
  SyncAggregator agg(2, 3);
  const float a[2] = {1, 2}, b[2] = {3, 4}, c[2] = {5, 9};
  ASSERT_TRUE(agg.Check(0, 1, 0, 0, 2).ok());
  EXPECT_FALSE(agg.Add(0, 1, 0, 2, a));
  ASSERT_TRUE(agg.Check(2, 1, 0, 0, 2).ok());
  EXPECT_FALSE(agg.Add(2, 1, 0, 2, c));
  EXPECT_EQ(agg.pending(), 2u);
  ASSERT_TRUE(agg.Check(1, 1, 0, 0, 2).ok());
  EXPECT_TRUE(agg.Add(1, 1, 0, 2, b));
  const float* mean = agg.Mean();
  EXPECT_FLOAT_EQ(mean[0], 3.0f);
  EXPECT_FLOAT_EQ(mean[1], 5.0f);
  agg.Reset();
  EXPECT_EQ(agg.pending(), 0u);
  // The next step starts from zero, not from the previous sum.
  ASSERT_TRUE(agg.Check(0, 2, 1, 0, 2).ok());
  agg.Add(0, 2, 0, 2, a);
  agg.Add(1, 2, 0, 2, a);
  EXPECT_TRUE(agg.Add(2, 2, 0, 2, a));
  EXPECT_FLOAT_EQ(agg.Mean()[1], 2.0f);
}

TEST(SyncAggregatorTest, ChunksCompleteAWorkersPush) {
  SyncAggregator agg(4, 2);
  const float ones[4] = {1, 1, 1, 1}, threes[4] = {3, 3, 3, 3};
  ASSERT_TRUE(agg.Check(0, 1, 0, 2, 2).ok());
  EXPECT_FALSE(agg.Add(0, 1, 2, 2, ones));
  EXPECT_FALSE(agg.Add(1, 1, 0, 4, threes));  // Worker 1 done; worker 0 has half.
  // Overlapping chunks are refused, adjacent ones are fine.
  EXPECT_EQ(agg.Check(0, 1, 0, 1, 2).code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(agg.Check(0, 1, 0, 3, 1).code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(agg.Check(1, 1, 0, 0, 1).code(), absl::StatusCode::kAlreadyExists);
  ASSERT_TRUE(agg.Check(0, 1, 0, 0, 2).ok());
  EXPECT_TRUE(agg.Add(0, 1, 0, 2, ones));
  const float* mean = agg.Mean();
  for (int i = 0; i < 4; ++i) EXPECT_FLOAT_EQ(mean[i], 2.0f);
  EXPECT_EQ(agg.pending(), 3u);
}

TEST(SyncAggregatorTest, RejectsStaleFutureAndDuplicatePushes) {
  SyncAggregator agg(1, 2);
  EXPECT_EQ(agg.Check(0, 3, 3, 0, 1).code(), absl::StatusCode::kAlreadyExists);  // applied
  EXPECT_EQ(agg.Check(0, 2, 3, 0, 1).code(), absl::StatusCode::kAlreadyExists);  // applied
  EXPECT_EQ(agg.Check(0, 0, 3, 0, 1).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(agg.Check(0, 5, 3, 0, 1).code(), absl::StatusCode::kFailedPrecondition);  // ahead
  const float g = 1;
  ASSERT_TRUE(agg.Check(0, 4, 3, 0, 1).ok());
  agg.Add(0, 4, 0, 1, &g);
  EXPECT_EQ(agg.Check(0, 4, 3, 0, 1).code(), absl::StatusCode::kAlreadyExists);
  EXPECT_TRUE(agg.Check(1, 4, 3, 0, 1).ok());
}

TEST(SyncAggregatorTest, SingleWorkerAppliesEveryPush) {
  SyncAggregator agg(1, 1);
  const float g = 7;
  EXPECT_TRUE(agg.Add(0, 1, 0, 1, &g));
  EXPECT_FLOAT_EQ(agg.Mean()[0], 7.0f);
}

TEST(SyncAggregatorTest, AWorkerLeavingMidStepCompletesItWithoutIt) {
  SyncAggregator agg(4, 3);
  const float a[4] = {3, 3, 3, 3}, c[2] = {6, 6};
  agg.Add(0, 1, 0, 4, a);
  EXPECT_FALSE(agg.Add(2, 1, 0, 2, c));  // Rank 2 pushed half its keys, then died.
  EXPECT_EQ(agg.IncompleteWorkers(), (std::vector<uint32_t>{1, 2}));
  // Rank 1 never pushed: removing it alone leaves rank 2 incomplete.
  const uint64_t never = SyncAggregator::kNever;
  EXPECT_FALSE(*agg.SetWorkers({0, never, 0}, 1));
  EXPECT_EQ(agg.IncompleteWorkers(), (std::vector<uint32_t>{2}));
  // Rank 2 removed too: the step completes; its keys count where it pushed them.
  EXPECT_TRUE(*agg.SetWorkers({0, never, never}, 1));
  const float* mean = agg.Mean();
  EXPECT_FLOAT_EQ(mean[0], 4.5f);  // (3 + 6) / 2
  EXPECT_FLOAT_EQ(mean[1], 4.5f);
  EXPECT_FLOAT_EQ(mean[2], 3.0f);  // Rank 0 alone.
  EXPECT_FLOAT_EQ(mean[3], 3.0f);
  agg.Reset();
  // Removed ranks' pushes are refused; the next step is rank 0's alone.
  EXPECT_EQ(agg.Check(1, 2, 1, 0, 4).code(), absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE(agg.Check(0, 2, 1, 0, 4).ok());
  EXPECT_TRUE(agg.Add(0, 2, 0, 4, a));
  EXPECT_FLOAT_EQ(agg.Mean()[3], 3.0f);
}

TEST(SyncAggregatorTest, AJoiningWorkerCountsFromItsFirstStep) {
  SyncAggregator agg(1, 2);
  const uint64_t never = SyncAggregator::kNever;
  ASSERT_TRUE(agg.SetWorkers({0, never}, 1).ok());
  ASSERT_TRUE(agg.SetWorkers({0, 3}, 1).ok());  // Rank 1 (a new worker) joins at step 3.
  const float g = 2, h = 4;
  EXPECT_EQ(agg.Check(1, 2, 1, 0, 1).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(agg.Add(0, 2, 0, 1, &g));  // Step 2: rank 0 alone.
  agg.Reset();
  EXPECT_FALSE(agg.Add(0, 3, 0, 1, &g));  // Step 3 waits for rank 1.
  EXPECT_TRUE(agg.Add(1, 3, 0, 1, &h));
  EXPECT_FLOAT_EQ(agg.Mean()[0], 3.0f);
  EXPECT_EQ(agg.SetWorkers({never, never}, 4).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(agg.SetWorkers({0}, 4).status().code(), absl::StatusCode::kInvalidArgument);
}

// What a worker that clipped before pushing would send: g * s, rounded to float.
std::vector<float> Scaled(const std::vector<float>& g, float s) {
  std::vector<float> out(g.size());
  for (size_t i = 0; i < g.size(); ++i) out[i] = g[i] * s;
  return out;
}

TEST(SyncAggregatorTest, ScaledLaterEqualsScaledBeforeBitForBitInAnyArrivalOrder) {
  const std::vector<float> g0 = {0.1f, -3.7f, 1e-7f, 12.5f}, g1 = {2.2f, 0.3f, -1e-3f, 7.0f};
  const float s0 = 0.3141f, s1 = 1.0f;
  // Workers that scaled before pushing.
  SyncAggregator before(4, 2);
  before.Add(0, 1, 0, 4, Scaled(g0, s0).data());
  EXPECT_TRUE(before.Add(1, 1, 0, 4, Scaled(g1, s1).data()));
  const std::vector<float> expected(before.Mean(), before.Mean() + 4);
  // Pushes with scale_follows, in chunks, commits and pushes interleaved both ways.
  for (int order = 0; order < 2; ++order) {
    SyncAggregator later(4, 2);
    ASSERT_TRUE(later.Check(1, 1, 0, 2, 2, true).ok());
    EXPECT_FALSE(later.Add(1, 1, 2, 2, g1.data() + 2, FP32, true));
    if (order == 0) {
      EXPECT_FALSE(later.Commit(1, 1, s1));  // A commit may come before the rest of the pushes.
      EXPECT_FALSE(later.Add(1, 1, 0, 2, g1.data(), FP32, true));
      EXPECT_FALSE(later.Add(0, 1, 0, 4, g0.data(), FP32, true));
      EXPECT_EQ(later.IncompleteWorkers(), std::vector<uint32_t>{0});  // Not committed yet.
      EXPECT_TRUE(later.Commit(0, 1, s0));
    } else {
      EXPECT_FALSE(later.Add(0, 1, 0, 4, g0.data(), FP32, true));
      EXPECT_FALSE(later.Commit(0, 1, s0));
      EXPECT_FALSE(later.Add(1, 1, 0, 2, g1.data(), FP32, true));
      EXPECT_TRUE(later.Commit(1, 1, s1));
    }
    const SyncAggregator::MeanGradient mean = later.Result();
    for (int i = 0; i < 4; ++i) EXPECT_EQ(mean.grad[i] * mean.scale, expected[i]) << i;
  }
}

TEST(SyncAggregatorTest, ASingleWorkersScaleIsFoldedIntoTheResult) {
  const std::vector<float> g = {0.1f, -3.7f, 1e-7f};
  const float s = 0.77f;
  SyncAggregator agg(3, 1);
  EXPECT_FALSE(agg.Add(0, 1, 0, 3, g.data(), FP32, true));
  EXPECT_TRUE(agg.Commit(0, 1, s));
  const SyncAggregator::MeanGradient mean = agg.Result();
  const std::vector<float> expected = Scaled(g, s);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(mean.grad[i] * mean.scale, expected[i]);
  EXPECT_EQ(agg.Mean()[1], expected[1]);  // Multiplied out.
}

TEST(SyncAggregatorTest, Bf16PushesAreWidenedExactly) {
  // bfloat16 of 1.5 and -2.0: the upper halves of their fp32 bits.
  const uint16_t g[2] = {0x3fc0, 0xc000};
  SyncAggregator agg(2, 1);
  EXPECT_TRUE(agg.Add(0, 1, 0, 2, g, BF16, false));
  EXPECT_EQ(agg.Mean()[0], 1.5f);
  EXPECT_EQ(agg.Mean()[1], -2.0f);
}

// BF16 pushes that wait (for their worker's scale, or with backup workers to know who completes
// the step first) are kept in the payload buffers they came in when those are given, instead of
// widened into staging buffers: the same mean, bit for bit, in every mode that waits, with
// chunked pushes, a worker leaving mid-step after its commit, and buffers going back at Reset.
// The mean is also checked against the formula, key by key.
TEST(SyncAggregatorTest, Bf16PushesKeptInTheirPayloadsGiveTheSameMeanAsStagedOnes) {
  constexpr size_t kSize = 1037;
  constexpr size_t kCut = 500;
  constexpr uint32_t kWorkers = 3;
  // Worker r's gradient: varied bfloat16 values (16 exponents, both signs, not exact in sums).
  auto gradient = [](uint32_t r) {
    std::vector<uint16_t> g(kSize);
    for (size_t i = 0; i < kSize; ++i) {
      const size_t magnitude = 0x3c00 + (37 * i + 1013 * r) % 0x800;
      g[i] = static_cast<uint16_t>(magnitude + ((i + r) % 2 ? 0x8000 : 0));
    }
    return g;
  };
  // Pushes each worker's gradient in two chunks [0, kCut) and [kCut, kSize) (worker 1: the second
  // chunk first), commits where scales follow, and returns the mean. With `held`, each chunk is
  // given as its own payload buffer.
  struct Mode {
    uint32_t aggregate_first;
    bool scale_follows;
    bool leave;  // Worker 2 commits, then leaves before the others complete.
  };
  auto run = [&](const Mode& mode, bool held, size_t* bytes_before_apply) {
    SyncAggregator agg(kSize, kWorkers, mode.aggregate_first);
    bool complete = false;
    for (uint32_t r : {2u, 0u, 1u}) {
      const std::vector<uint16_t> g = gradient(r);
      std::vector<std::pair<size_t, size_t>> chunks = {{0, kCut}, {kCut, kSize}};
      if (r == 1) std::swap(chunks[0], chunks[1]);
      for (const auto& [begin, end] : chunks) {
        EXPECT_TRUE(agg.Check(r, 1, 0, begin, end - begin, mode.scale_follows).ok());
        std::shared_ptr<PooledBuffer> payload;
        const void* values = g.data() + begin;
        if (held) {
          payload = std::make_shared<PooledBuffer>(
              BufferPool::Global()->Acquire((end - begin) * sizeof(uint16_t)));
          std::memcpy(payload->data(), g.data() + begin, payload->size());
          values = payload->data();
        }
        complete = agg.Add(r, 1, begin, end - begin, values, BF16, mode.scale_follows, payload);
      }
      if (mode.scale_follows) {
        EXPECT_TRUE(agg.CheckCommit(r, 1, 0, 0.25f + 0.125f * r).ok());
        complete = agg.Commit(r, 1, 0.25f + 0.125f * r);
      }
      if (mode.leave && r == 2) {
        const absl::StatusOr<bool> left = agg.SetWorkers({0, 0, SyncAggregator::kNever}, 1);
        EXPECT_TRUE(left.ok()) << left.status();
      }
    }
    EXPECT_TRUE(complete);
    *bytes_before_apply = agg.bytes();
    const float* mean = agg.Mean();
    std::vector<float> out(mean, mean + kSize);
    agg.Reset();
    return out;
  };
  for (const Mode& mode : {Mode{0, true, false}, Mode{0, true, true}, Mode{2, true, false},
                           Mode{2, false, false}, Mode{0, false, false}}) {
    SCOPED_TRACE(::testing::Message() << "aggregate_first " << mode.aggregate_first
                                      << " scale_follows " << mode.scale_follows << " leave "
                                      << mode.leave);
    size_t staged_bytes = 0, held_bytes = 0;
    const std::vector<float> staged = run(mode, false, &staged_bytes);
    const std::vector<float> kept = run(mode, true, &held_bytes);
    ASSERT_EQ(staged.size(), kept.size());
    for (size_t i = 0; i < kSize; ++i) {
      ASSERT_EQ(std::memcmp(&staged[i], &kept[i], sizeof(float)), 0)
          << i << ": " << staged[i] << " vs " << kept[i];
      ASSERT_TRUE(std::isfinite(kept[i]));
    }
    if (mode.aggregate_first == 0 && mode.scale_follows && !mode.leave) {
      // ((g0 s0 + g1 s1) + g2 s2) / 3, each product and sum rounded to float, in rank order.
      for (size_t i = 0; i < kSize; ++i) {
        float sum = 0;
        for (uint32_t r = 0; r < kWorkers; ++r) {
          const float product = Bf16ToFloat(gradient(r)[i]) * (0.25f + 0.125f * r);
          sum = r == 0 ? product : sum + product;
        }
        const float expected = sum * (1.0f / kWorkers);
        ASSERT_EQ(std::memcmp(&expected, &kept[i], sizeof(float)), 0)
            << i << ": " << expected << " vs " << kept[i];
      }
    }
    if (mode.aggregate_first > 0 || (mode.scale_follows && !mode.leave)) {
      // Waiting pushes: kept in half the bytes of the FP32 staging buffers.
      EXPECT_LT(held_bytes, staged_bytes);
    }
  }
}

// A single worker's pushes that came with their payload buffers are read where they are (the
// result's parts; no FP32 sum is written): block by block, BF16 widened and FP32 as it is, the
// same values and scale, bit for bit, as the sum of the same pushes without payloads, and Mean()
// multiplies them out the same. One push without its payload among them: the sum, as before.
TEST(SyncAggregatorTest, ASingleWorkersPushesAreReadFromTheirPayloadBuffers) {
  constexpr size_t kSize = 1037;
  struct Chunk {
    size_t begin, end;
    DType dtype;
  };
  // Out of key order, BF16 and FP32.
  const std::vector<Chunk> chunks = {{700, kSize, BF16}, {0, 300, BF16}, {300, 700, FP32}};
  auto value = [](size_t i) {  // Varied exponents and signs, exact in bfloat16.
    const uint16_t bits = static_cast<uint16_t>(0x3c00 + (37 * i) % 0x800 + (i % 2 ? 0x8000 : 0));
    return Bf16ToFloat(bits);
  };
  // Pushes the chunks into `agg`, with payload buffers where `with_payload(chunk index)`.
  auto push = [&](SyncAggregator& agg, bool scale_follows, auto with_payload) {
    bool complete = false;
    for (size_t c = 0; c < chunks.size(); ++c) {
      const Chunk& chunk = chunks[c];
      const size_t n = chunk.end - chunk.begin;
      const size_t bytes = n * (chunk.dtype == BF16 ? sizeof(uint16_t) : sizeof(float));
      auto payload = std::make_shared<PooledBuffer>(BufferPool::Global()->Acquire(bytes));
      for (size_t i = 0; i < n; ++i) {
        if (chunk.dtype == BF16) {
          const uint16_t bits = FloatToBf16(value(chunk.begin + i));
          std::memcpy(payload->data() + i * sizeof(uint16_t), &bits, sizeof(bits));
        } else {
          const float v = value(chunk.begin + i) * 1.001f;  // Not exact in bfloat16.
          std::memcpy(payload->data() + i * sizeof(float), &v, sizeof(v));
        }
      }
      EXPECT_TRUE(agg.Check(0, 1, 0, chunk.begin, n, scale_follows).ok());
      complete = agg.Add(0, 1, chunk.begin, n, payload->data(), chunk.dtype, scale_follows,
                         with_payload(c) ? payload : nullptr);
      // (Without its payload, the values must be taken now: the buffer goes back here.)
    }
    if (scale_follows) complete = agg.Commit(0, 1, 0.3f);
    EXPECT_TRUE(complete);
  };
  auto same_bits = [](const float* a, const float* b, size_t n) {
    return std::memcmp(a, b, n * sizeof(float)) == 0;
  };
  for (bool scale_follows : {false, true}) {
    SCOPED_TRACE(scale_follows ? "scale follows" : "scaled before");
    SyncAggregator held(kSize, 1), summed(kSize, 1), mixed(kSize, 1);
    push(held, scale_follows, [](size_t) { return true; });
    push(summed, scale_follows, [](size_t) { return false; });
    push(mixed, scale_follows, [](size_t c) { return c != 1; });
    const Gradient from_payloads = held.Result(), sum = summed.Result();
    EXPECT_EQ(from_payloads.grad, nullptr);
    ASSERT_EQ(from_payloads.parts.size(), 3u);
    ASSERT_NE(sum.grad, nullptr);
    EXPECT_EQ(from_payloads.scale, sum.scale);
    EXPECT_EQ(sum.scale, scale_follows ? 0.3f : 1.0f);
    EXPECT_LT(held.bytes(), summed.bytes());  // Half-size BF16 buffers, no FP32 sum.
    std::vector<float> scratch(kSize);
    for (size_t block : {size_t{1}, size_t{64}, size_t{299}, size_t{400}, kSize}) {
      for (size_t begin = 0; begin < kSize; begin += block) {
        const size_t n = std::min(block, kSize - begin);
        ASSERT_TRUE(same_bits(from_payloads.Values(begin, n, scratch.data()), sum.grad + begin, n))
            << "block " << block << " at " << begin;
      }
    }
    // A block inside the FP32 push is read where it is.
    EXPECT_EQ(from_payloads.Values(310, 20, scratch.data()),
              static_cast<const float*>(from_payloads.parts[1].values) + 10);
    const Gradient partly = mixed.Result();
    ASSERT_NE(partly.grad, nullptr);
    EXPECT_TRUE(same_bits(partly.grad, sum.grad, kSize));
    EXPECT_EQ(partly.scale, sum.scale);
    const std::vector<float> expected(summed.Mean(), summed.Mean() + kSize);
    EXPECT_TRUE(same_bits(held.Mean(), expected.data(), kSize));
    EXPECT_TRUE(same_bits(held.Mean(), expected.data(), kSize));  // Again: the same.
    EXPECT_TRUE(same_bits(mixed.Mean(), expected.data(), kSize));
    held.Reset();
    EXPECT_EQ(held.bytes(), kSize * sizeof(float));  // Mean() wrote the sum; the buffers went back.
  }
}

TEST(SyncAggregatorTest, CommitsAreCheckedAndResendsRecognised) {
  SyncAggregator agg(2, 2);
  const float g[2] = {1, 2};
  EXPECT_EQ(agg.CheckCommit(0, 1, 0, 0.0f).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(agg.CheckCommit(0, 1, 0, NAN).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(agg.CheckCommit(0, 1, 1, 0.5f).code(), absl::StatusCode::kAlreadyExists);  // applied
  EXPECT_EQ(agg.CheckCommit(0, 3, 1, 0.5f).code(), absl::StatusCode::kFailedPrecondition);
  agg.Add(1, 2, 0, 2, g);  // Rank 1's pushes of step 2 are final: nothing to scale.
  EXPECT_EQ(agg.CheckCommit(1, 2, 1, 0.5f).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(agg.Check(1, 2, 1, 0, 2, true).code(), absl::StatusCode::kAlreadyExists);  // resend
  ASSERT_TRUE(agg.CheckCommit(0, 2, 1, 0.5f).ok());
  agg.Commit(0, 2, 0.5f);
  EXPECT_EQ(agg.CheckCommit(0, 2, 1, 0.5f).code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(agg.CheckCommit(0, 2, 1, 0.25f).code(), absl::StatusCode::kInvalidArgument);
  // Once committed, its pushes must carry scale_follows.
  EXPECT_EQ(agg.Check(0, 2, 1, 0, 2, false).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(agg.Check(0, 2, 1, 0, 2, true).ok());
  const uint64_t never = SyncAggregator::kNever;
  EXPECT_EQ(agg.CheckCommit(0, 2, 1, 0.5f).code(), absl::StatusCode::kAlreadyExists);
  ASSERT_TRUE(agg.SetWorkers({0, never}, 2).ok());
  EXPECT_EQ(agg.CheckCommit(1, 2, 1, 0.5f).code(), absl::StatusCode::kFailedPrecondition);
}

TEST(SyncAggregatorTest, AWorkerLeavingBeforeItsCommitIsLeftOut) {
  SyncAggregator agg(2, 2);
  const float a[2] = {1, 1}, b[2] = {100, 100};
  EXPECT_FALSE(agg.Add(0, 1, 0, 2, a, FP32, true));
  EXPECT_FALSE(agg.Commit(0, 1, 1.0f));
  EXPECT_FALSE(agg.Add(1, 1, 0, 2, b, FP32, true));  // Then rank 1 dies before committing.
  EXPECT_TRUE(*agg.SetWorkers({0, SyncAggregator::kNever}, 1));
  EXPECT_EQ(agg.Mean()[0], 1.0f);  // Rank 0's gradient alone: rank 1's was never scaled.
}

TEST(SyncAggregatorTest, BackupWorkersTheFirstNToCompleteMakeTheMean) {
  SyncAggregator agg(4, 3, /*aggregate_first=*/2);
  ASSERT_TRUE(agg.backup_workers());
  const float a[4] = {1, 2, 3, 4}, b[4] = {9, 9, 9, 9}, c[4] = {3, 4, 5, 6};
  // Rank 1 pushes half of the shard first, then ranks 2 and 0 push all of it.
  EXPECT_FALSE(agg.Add(1, 1, 0, 2, b));
  EXPECT_FALSE(agg.Add(2, 1, 0, 4, c));
  ASSERT_TRUE(agg.Check(0, 1, 0, 0, 4).ok());
  EXPECT_TRUE(agg.Add(0, 1, 0, 4, a));
  EXPECT_EQ(agg.Contributors(), (std::vector<uint32_t>{0, 2}));
  EXPECT_EQ(agg.DroppedPushes(), 1u);  // Rank 1's half.
  const float* mean = agg.Mean();
  for (int i = 0; i < 4; ++i) EXPECT_FLOAT_EQ(mean[i], (a[i] + c[i]) / 2) << i;
  agg.Reset();
  // The step is applied: rank 1's rest of it is refused as applied (the shard counts it late).
  EXPECT_EQ(agg.Check(1, 1, 1, 2, 2).code(), absl::StatusCode::kAlreadyExists);
  // Step 2: a worker's scale (clipping) still applies to its pushes.
  EXPECT_FALSE(agg.Add(0, 2, 0, 4, a, FP32, /*scale_follows=*/true));
  EXPECT_FALSE(agg.Add(1, 2, 0, 4, b));
  EXPECT_TRUE(agg.Commit(0, 2, 0.5f));
  const float* mean2 = agg.Mean();
  for (int i = 0; i < 4; ++i) EXPECT_FLOAT_EQ(mean2[i], (a[i] * 0.5f + b[i]) / 2) << i;
  EXPECT_EQ(agg.DroppedPushes(), 0u);
}

TEST(SyncAggregatorTest, BackupWorkersWithFewerTakingPartWaitForAllOfThem) {
  SyncAggregator agg(2, 3, /*aggregate_first=*/2);
  const float a[2] = {1, 2}, c[2] = {3, 6};
  // Ranks 1 and 2 left: only rank 0 takes part in step 1, and completes it alone.
  ASSERT_TRUE(agg.SetWorkers({1, SyncAggregator::kNever, SyncAggregator::kNever}, 1).ok());
  EXPECT_TRUE(agg.Add(0, 1, 0, 2, a));
  EXPECT_FLOAT_EQ(agg.Mean()[1], 2.0f);
  agg.Reset();
  // Rank 2 is back from step 2: two take part, both are needed.
  ASSERT_TRUE(agg.SetWorkers({1, SyncAggregator::kNever, 2}, 2).ok());
  EXPECT_FALSE(agg.Add(0, 2, 0, 2, a));
  EXPECT_TRUE(agg.Add(2, 2, 0, 2, c));
  EXPECT_FLOAT_EQ(agg.Mean()[1], 4.0f);
  // Without backup workers (aggregate_first 0 or num_workers), every worker is waited for.
  EXPECT_FALSE(SyncAggregator(2, 3, 0).backup_workers());
  EXPECT_FALSE(SyncAggregator(2, 3, 3).backup_workers());
}

}  // namespace
}  // namespace psrv
