// Counting sort of a minibatch's token positions by token id (see token_buckets.h).
#include "worker/cuda/token_buckets.h"

#include <algorithm>

namespace psrv {
namespace cuda {

void BuildTokenBuckets(const int32_t* tokens, int n, int vocab, std::vector<int32_t>* counts,
                       TokenBuckets* buckets) {
  counts->assign(vocab + 1, 0);
  for (int i = 0; i < n; ++i) ++(*counts)[tokens[i] + 1];
  buckets->token_ids.clear();
  buckets->starts.clear();
  buckets->starts.push_back(0);
  for (int v = 0; v < vocab; ++v) {
    const int32_t count = (*counts)[v + 1];
    if (count > 0) {
      buckets->token_ids.push_back(v);
      buckets->starts.push_back(buckets->starts.back() + count);
    }
  }
  // counts[v] becomes the next free slot of token v's run in positions.
  for (int v = 0; v < vocab; ++v) (*counts)[v + 1] += (*counts)[v];
  buckets->positions.resize(n);
  for (int i = 0; i < n; ++i) buckets->positions[(*counts)[tokens[i]]++] = i;
}

}  // namespace cuda
}  // namespace psrv
