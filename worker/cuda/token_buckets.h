// The positions of each distinct token of a minibatch, for the embedding backward on the GPU
// (a gather per token instead of a scatter with atomics; embedding.cu).
#ifndef PSRV_WORKER_CUDA_TOKEN_BUCKETS_H_
#define PSRV_WORKER_CUDA_TOKEN_BUCKETS_H_

#include <cstdint>
#include <vector>

namespace psrv {
namespace cuda {

// Tokens in increasing order of id; bucket j holds positions[starts[j] .. starts[j+1]) in
// increasing order, the positions i of `tokens` with tokens[i] == token_ids[j].
struct TokenBuckets {
  std::vector<int32_t> token_ids;  // (num_buckets)
  std::vector<int32_t> starts;     // (num_buckets + 1)
  std::vector<int32_t> positions;  // (n)
  int num_buckets() const { return static_cast<int>(token_ids.size()); }
};

// Builds the buckets of tokens (n), each in [0, vocab), by a counting sort. `counts` is scratch
// (resized to vocab + 1) so that repeated calls allocate nothing once warm.
void BuildTokenBuckets(const int32_t* tokens, int n, int vocab, std::vector<int32_t>* counts,
                       TokenBuckets* buckets);

}  // namespace cuda
}  // namespace psrv

#endif  // PSRV_WORKER_CUDA_TOKEN_BUCKETS_H_
