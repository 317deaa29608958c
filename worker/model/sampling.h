// Sampling text from any LanguageModel, the same on every platform.
#ifndef PSRV_WORKER_MODEL_SAMPLING_H_
#define PSRV_WORKER_MODEL_SAMPLING_H_

#include <cstdint>
#include <vector>

#include "worker/model/language_model.h"

namespace psrv {

// Samples `length` tokens one at a time after `prompt` from softmax(logits / temperature)
// restricted to the top_k most likely tokens (top_k = 0 or >= vocab_size: all of them); returns
// only the sampled tokens. temperature > 0 (a temperature <= 0 picks the most likely token). An
// empty prompt starts from token 0. The same (model, params, prompt, length, temperature, top_k,
// seed) give the same tokens on every platform.
std::vector<int32_t> Sample(LanguageModel& model, const float* params, std::vector<int32_t> prompt,
                            int length, float temperature, int top_k, uint64_t seed);

}  // namespace psrv

#endif  // PSRV_WORKER_MODEL_SAMPLING_H_
