// The GPT's gradient in pieces for the tests that compare it with the CPU model's: each table, and
// q, k and v of each layer's qkv weight and bias apart.
#ifndef PSRV_WORKER_CUDA_GRADIENT_PARTS_H_
#define PSRV_WORKER_CUDA_GRADIENT_PARTS_H_

#include <cstddef>
#include <string>
#include <vector>

#include "worker/cuda/gpt_cuda.h"

namespace psrv {
namespace cuda {

// The gradient compared piece by piece: each table, and q, k and v of each layer's qkv weight and
// bias apart (the k part is small next to q and v when attention is near uniform, and would hide
// in the whole table's error).
struct GradientPart {
  std::string name;
  size_t offset, size;
};

inline std::vector<GradientPart> GradientParts(const GptCudaConfig& c) {
  std::vector<GradientPart> parts;
  const size_t C = c.width;
  for (const GptParamTable& table : GptCudaTables(c)) {
    parts.push_back({table.name, table.offset, table.size});
    const bool weight = table.name == "h.attn.qkv.weight", bias = table.name == "h.attn.qkv.bias";
    if (!weight && !bias) continue;
    const size_t part = weight ? C * C : C;  // one of q, k, v of one layer
    for (int l = 0; l < c.layers; ++l) {
      for (int j = 0; j < 3; ++j) {
        // The k bias's true gradient is 0 (it shifts a row's scores by one constant, which the
        // softmax ignores): both sides hold rounding noise, which has no relative error to check.
        if (bias && j == 1) continue;
        parts.push_back({table.name + "[" + std::to_string(l) + "]." + "qkv"[j],
                         table.offset + (3 * l + j) * part, part});
      }
    }
  }
  return parts;
}

}  // namespace cuda
}  // namespace psrv

#endif  // PSRV_WORKER_CUDA_GRADIENT_PARTS_H_
