// Sampling text from a language model (sampling.h).
#include "worker/model/sampling.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>

namespace psrv {
namespace {

// Uniform double in [0, 1) from 53 random bits; unlike std::uniform_real_distribution its output is
// the same under every standard library.
double UniformDouble(std::mt19937_64& rng) { return static_cast<double>(rng() >> 11) * 0x1.0p-53; }

}  // namespace

std::vector<int32_t> Sample(LanguageModel& model, const float* params, std::vector<int32_t> prompt,
                            int length, float temperature, int top_k, uint64_t seed) {
  std::vector<int32_t> sampled;
  if (length <= 0) return sampled;
  sampled.reserve(length);
  const int V = model.vocab_size();
  if (prompt.empty()) prompt.push_back(0);
  std::vector<int32_t> context = std::move(prompt);  // Prompt and sampled tokens so far.
  context.reserve(context.size() + length);
  const int k = top_k <= 0 || top_k > V ? V : top_k;
  std::vector<float> logits(V);    // (V)
  std::vector<int32_t> order(V);   // (V) token ids, the k most likely first
  std::vector<double> weights(k);  // (k)
  std::mt19937_64 rng(seed);
  for (int i = 0; i < length; ++i) {
    const int take = std::min<int>(context.size(), model.max_context());
    model.NextTokenLogits(params, context.data() + context.size() - take, take, logits.data());
    // The k most likely tokens, most likely first; ties go to the smaller id.
    std::iota(order.begin(), order.end(), 0);
    std::partial_sort(order.begin(), order.begin() + k, order.end(), [&](int32_t a, int32_t b) {
      return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
    });
    int32_t next = order[0];
    if (temperature > 0.0f) {
      const double max = logits[order[0]];
      double sum = 0.0;
      for (int j = 0; j < k; ++j) {
        weights[j] = std::exp((logits[order[j]] - max) / temperature);
        sum += weights[j];
      }
      // Rounding can leave u just above the last cumulative sum; then `next` stays the argmax.
      double u = UniformDouble(rng) * sum;
      for (int j = 0; j < k; ++j) {
        u -= weights[j];
        if (u < 0.0) {
          next = order[j];
          break;
        }
      }
    }
    sampled.push_back(next);
    context.push_back(next);
  }
  return sampled;
}

}  // namespace psrv
