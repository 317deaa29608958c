#include "worker/model/synthetic_model.h"

#include <vector>

#include <gtest/gtest.h>

#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "common/model_layout.h"

namespace psrv {
namespace {

ModelSpec Gpt() {
  ModelSpec spec;
  spec.set_kind("gpt");
  spec.set_layers(2);
  spec.set_heads(2);
  spec.set_width(16);
  spec.set_context(8);
  return spec;
}

// Records the order of the model's calls.
class RecordingStream : public ParameterStream {
 public:
  void AwaitParameters(const FlatRange& range) override {
    absl::MutexLock lock(&mu_);
    events.push_back({'A', range.offset, range.count});
  }
  void GradientsReady(const FlatRange& range) override {
    absl::MutexLock lock(&mu_);
    events.push_back({'R', range.offset, range.count});
  }
  struct Event {
    char kind;
    size_t offset, count;
  };
  std::vector<Event> events;

 private:
  absl::Mutex mu_;
};

TEST(SyntheticModelTest, TakesItsTimeAndWritesTheSameGradientEveryStep) {
  absl::StatusOr<std::unique_ptr<SyntheticModel>> model =
      SyntheticModel::Create(Gpt(), 10, absl::Milliseconds(30));
  ASSERT_TRUE(model.ok()) << model.status();
  const size_t n = (*model)->num_parameters();
  EXPECT_EQ(n, TotalElements(GptTables(2, 16, 8, 10, 0)));
  EXPECT_EQ((*model)->window(), 9);
  std::vector<float> params(n, 0.5f), grads(n, 7.0f), again(n);
  std::vector<int32_t> rows(2 * 9, 1);
  const absl::Time start = absl::Now();
  const float loss = (*model)->ForwardBackward(params.data(), rows.data(), 2, 1, grads.data());
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(29));
  EXPECT_FLOAT_EQ(loss, 3.5f);
  for (float g : grads) {
    EXPECT_LE(std::abs(g), 1e-3f);
  }
  (*model)->ForwardBackward(params.data(), rows.data(), 2, 2, again.data());
  EXPECT_EQ(grads, again);
  params[0] = 1024.5f;  // The loss follows the parameters (the first key is in the sample).
  EXPECT_FLOAT_EQ((*model)->Loss(params.data(), rows.data(), 2), 4.5f);
}

TEST(SyntheticModelTest, AwaitsInForwardOrderAndReportsInBackwardOrder) {
  absl::StatusOr<std::unique_ptr<SyntheticModel>> model =
      SyntheticModel::Create(Gpt(), 10, absl::ZeroDuration());
  ASSERT_TRUE(model.ok()) << model.status();
  RecordingStream stream;
  (*model)->set_parameter_stream(&stream);
  const size_t n = (*model)->num_parameters();
  std::vector<float> params(n), grads(n);
  std::vector<int32_t> rows(9, 1);
  (*model)->ForwardBackward(params.data(), rows.data(), 1, 1, grads.data());
  // Every key awaited once before any gradient is reported, then reported once; groups of
  // GptParameterGroups: embeddings, 2 layers, final LayerNorm.
  std::vector<int> awaited(n), reported(n);
  bool reporting = false;
  size_t first_reported = n, last_reported = n;
  for (const RecordingStream::Event& e : stream.events) {
    if (e.kind == 'R') {
      if (!reporting) first_reported = e.offset;
      last_reported = e.offset;
      reporting = true;
    }
    ASSERT_FALSE(e.kind == 'A' && reporting) << "an await after backward started";
    for (size_t i = e.offset; i < e.offset + e.count; ++i) ++(e.kind == 'A' ? awaited : reported)[i];
  }
  for (size_t i = 0; i < n; ++i) {
    ASSERT_EQ(awaited[i], 1) << i;
    ASSERT_EQ(reported[i], 1) << i;
  }
  EXPECT_EQ(stream.events.front().offset, 0u);  // wte first in forward...
  EXPECT_EQ(last_reported, 10 * 16u);           // ...and wpe (after wte) last in backward.
  EXPECT_EQ(first_reported, n - 2 * 16);        // The final LayerNorm's gradient first.
}

TEST(SyntheticModelTest, RefusesANegativeTime) {
  EXPECT_FALSE(SyntheticModel::Create(Gpt(), 10, absl::Milliseconds(-1)).ok());
}

}  // namespace
}  // namespace psrv
