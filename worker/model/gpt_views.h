// Named views of a GPT's flat buffer (parameters or gradients), one per table, in the order of
// common/model_layout.h's GptTables. Shared by the CPU model and the CUDA model (host or device
// pointers alike): the layout is written down once.
#ifndef PSRV_WORKER_MODEL_GPT_VIEWS_H_
#define PSRV_WORKER_MODEL_GPT_VIEWS_H_

#include <cstddef>
#include <vector>

#include "worker/model/parameter_stream.h"

namespace psrv {

// One member per table: a pointer into a buffer (GptTableViews) or an offset (GptTableOffsets).
template <typename Ref>
struct GptTableRefs {
  Ref wte;              // (V, C)
  Ref wpe;              // (T, C)
  Ref ln1_weight;       // (L, C)
  Ref ln1_bias;         // (L, C)
  Ref qkv_weight;       // (L, 3C, C)
  Ref qkv_bias;         // (L, 3C)
  Ref proj_weight;      // (L, C, C)
  Ref proj_bias;        // (L, C)
  Ref ln2_weight;       // (L, C)
  Ref ln2_bias;         // (L, C)
  Ref fc_weight;        // (L, 4C, C)
  Ref fc_bias;          // (L, 4C)
  Ref mlp_proj_weight;  // (L, C, 4C)
  Ref mlp_proj_bias;    // (L, C)
  Ref lnf_weight;       // (C)
  Ref lnf_bias;         // (C)
};

template <typename Float>
using GptTableViews = GptTableRefs<Float*>;
using GptTableOffsets = GptTableRefs<size_t>;

// The tables one after another from `start`, for L layers, width C, context T and vocabulary V.
template <typename Ref>
GptTableRefs<Ref> GptLayout(Ref start, size_t L, size_t C, size_t T, size_t V) {
  GptTableRefs<Ref> t;
  Ref p = start;
  auto take = [&p](size_t n) {
    Ref view = p;
    p += n;
    return view;
  };
  t.wte = take(V * C);
  t.wpe = take(T * C);
  t.ln1_weight = take(L * C);
  t.ln1_bias = take(L * C);
  t.qkv_weight = take(L * 3 * C * C);
  t.qkv_bias = take(L * 3 * C);
  t.proj_weight = take(L * C * C);
  t.proj_bias = take(L * C);
  t.ln2_weight = take(L * C);
  t.ln2_bias = take(L * C);
  t.fc_weight = take(L * 4 * C * C);
  t.fc_bias = take(L * 4 * C);
  t.mlp_proj_weight = take(L * C * 4 * C);
  t.mlp_proj_bias = take(L * C);
  t.lnf_weight = take(C);
  t.lnf_bias = take(C);
  return t;
}

// Views into `buffer`.
template <typename Float>
GptTableViews<Float> GptViews(Float* buffer, size_t L, size_t C, size_t T, size_t V) {
  return GptLayout<Float*>(buffer, L, C, T, V);
}

// The GPT's parameters in the order forward reads them, as flat ranges (views of offset 0): the
// embeddings {wte, wpe}, then each layer's slices of its 12 per-layer tables, then {lnf weight,
// lnf bias}: L + 2 groups. (The head reads wte again, which the first group has.) Backward
// finishes them in the opposite order: the final LayerNorm first, the embeddings last (wte's
// gradient gets the head's part first and the embedding's at the very end).
inline std::vector<ParameterGroup> GptParameterGroups(size_t L, size_t C, size_t T, size_t V) {
  const GptTableOffsets t = GptLayout<size_t>(0, L, C, T, V);
  auto at = [](size_t offset, size_t count) { return FlatRange{offset, count}; };
  std::vector<ParameterGroup> groups;
  groups.push_back({at(t.wte, V * C), at(t.wpe, T * C)});
  for (size_t l = 0; l < L; ++l) {
    groups.push_back({
        at(t.ln1_weight + l * C, C), at(t.ln1_bias + l * C, C),
        at(t.qkv_weight + l * 3 * C * C, 3 * C * C), at(t.qkv_bias + l * 3 * C, 3 * C),
        at(t.proj_weight + l * C * C, C * C), at(t.proj_bias + l * C, C),
        at(t.ln2_weight + l * C, C), at(t.ln2_bias + l * C, C),
        at(t.fc_weight + l * 4 * C * C, 4 * C * C), at(t.fc_bias + l * 4 * C, 4 * C),
        at(t.mlp_proj_weight + l * 4 * C * C, 4 * C * C), at(t.mlp_proj_bias + l * C, C),
    });
  }
  groups.push_back({at(t.lnf_weight, C), at(t.lnf_bias, C)});
  return groups;
}

}  // namespace psrv

#endif  // PSRV_WORKER_MODEL_GPT_VIEWS_H_
