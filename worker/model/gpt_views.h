// Named views of a GPT's flat buffer (parameters or gradients), one per table, in the order of
// common/model_layout.h's GptTables. Shared by the CPU model and the CUDA model (host or device
// pointers alike): the layout is written down once.
#ifndef PSRV_WORKER_MODEL_GPT_VIEWS_H_
#define PSRV_WORKER_MODEL_GPT_VIEWS_H_

#include <cstddef>
#include <utility>
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
  // (V, C) the output head: wte itself (the same ref) when the embeddings are tied, else a table
  // of its own after lnf_bias.
  Ref lm_head;
};

template <typename Float>
using GptTableViews = GptTableRefs<Float*>;
using GptTableOffsets = GptTableRefs<size_t>;

// Which part of the GPT a buffer holds: the whole model, or one stage of a pipeline (a block of
// consecutive layers; the first stage also the embeddings, the last the final LayerNorm and the
// head, which reads the token embedding wte again).
struct GptPart {
  size_t first_layer = 0;
  size_t layers = 0;        // Of this part; the whole model: L.
  bool embeddings = true;   // wte and wpe, and the embedding of the tokens.
  bool head = true;         // lnf and the logits lnf @ wte^T (needs wte too).
};

// The whole model of L layers as a part.
inline GptPart WholeGpt(size_t L) { return GptPart{0, L, true, true}; }

// The tables of `part` one after another from `start`, for width C, context T and vocabulary V:
// wte (if the part has the embeddings or the head), wpe (embeddings), the 12 per-layer tables of
// its layers (each (part.layers, ...)), lnf (head). A table the part lacks is empty (it takes no
// room; its ref points where the next table starts).
template <typename Ref>
GptTableRefs<Ref> GptPartLayout(Ref start, const GptPart& part, size_t C, size_t T, size_t V,
                                bool tied = true) {
  GptTableRefs<Ref> t;
  Ref p = start;
  auto take = [&p](size_t n) {
    Ref view = p;
    p += n;
    return view;
  };
  const size_t L = part.layers;
  t.wte = take(part.embeddings || part.head ? V * C : 0);
  t.wpe = take(part.embeddings ? T * C : 0);
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
  t.lnf_weight = take(part.head ? C : 0);
  t.lnf_bias = take(part.head ? C : 0);
  t.lm_head = tied ? t.wte : take(part.head ? V * C : 0);
  return t;
}

// The whole model's tables one after another from `start`, for L layers, width C, context T and
// vocabulary V.
template <typename Ref>
GptTableRefs<Ref> GptLayout(Ref start, size_t L, size_t C, size_t T, size_t V, bool tied = true) {
  return GptPartLayout<Ref>(start, WholeGpt(L), C, T, V, tied);
}

// Elements of `part`'s buffer.
inline size_t GptPartSize(const GptPart& part, size_t C, size_t T, size_t V, bool tied = true) {
  const GptTableOffsets t = GptPartLayout<size_t>(0, part, C, T, V, tied);
  return t.lnf_bias + (part.head ? C : 0) + (!tied && part.head ? V * C : 0);
}

// Where each range of `part`'s buffer lies in the whole model's buffer (of L layers): pairs
// (range in the part, its offset in the whole model), one per table it holds.
inline std::vector<std::pair<FlatRange, size_t>> GptPartInWhole(const GptPart& part, size_t L,
                                                                 size_t C, size_t T, size_t V) {
  const GptTableOffsets in = GptPartLayout<size_t>(0, part, C, T, V);
  const GptTableOffsets whole = GptLayout<size_t>(0, L, C, T, V);
  std::vector<std::pair<FlatRange, size_t>> ranges;
  auto add = [&](size_t part_offset, size_t count, size_t whole_offset) {
    if (count > 0) ranges.push_back({FlatRange{part_offset, count}, whole_offset});
  };
  if (part.embeddings || part.head) add(in.wte, V * C, whole.wte);
  if (part.embeddings) add(in.wpe, T * C, whole.wpe);
  const size_t f = part.first_layer, n = part.layers;
  // Per-layer tables are stacked (L, ...): layers [f, f + n) are one contiguous block of each.
  const size_t rows[12] = {C, C, 3 * C * C, 3 * C, C * C, C, C, C, 4 * C * C, 4 * C, 4 * C * C, C};
  const size_t in_at[12] = {in.ln1_weight, in.ln1_bias, in.qkv_weight, in.qkv_bias,
                            in.proj_weight, in.proj_bias, in.ln2_weight, in.ln2_bias,
                            in.fc_weight,  in.fc_bias,   in.mlp_proj_weight, in.mlp_proj_bias};
  const size_t whole_at[12] = {whole.ln1_weight, whole.ln1_bias, whole.qkv_weight,
                               whole.qkv_bias,   whole.proj_weight, whole.proj_bias,
                               whole.ln2_weight, whole.ln2_bias, whole.fc_weight,
                               whole.fc_bias,    whole.mlp_proj_weight, whole.mlp_proj_bias};
  for (int i = 0; i < 12; ++i) add(in_at[i], n * rows[i], whole_at[i] + f * rows[i]);
  if (part.head) {
    add(in.lnf_weight, C, whole.lnf_weight);
    add(in.lnf_bias, C, whole.lnf_bias);
  }
  return ranges;
}

// Views into `buffer`.
template <typename Float>
GptTableViews<Float> GptViews(Float* buffer, size_t L, size_t C, size_t T, size_t V,
                              bool tied = true) {
  return GptLayout<Float*>(buffer, L, C, T, V, tied);
}

// `part`'s parameters in the order forward reads them, as flat ranges of its buffer: the
// embeddings {wte, wpe} (if it has them), then each of its layers' slices of the 12 per-layer
// tables, then {lnf weight, lnf bias} (head), with wte if the part has the head but not the
// embeddings (the head reads it). Backward finishes them in the opposite order: the final LayerNorm
// first, the embeddings last (the whole model's wte gradient gets the head's part first and the
// embedding's at the very end). Untied, the head's group holds lm_head instead.
inline std::vector<ParameterGroup> GptPartParameterGroups(const GptPart& part, size_t C, size_t T,
                                                          size_t V, bool tied = true) {
  const GptTableOffsets t = GptPartLayout<size_t>(0, part, C, T, V, tied);
  auto at = [](size_t offset, size_t count) { return FlatRange{offset, count}; };
  std::vector<ParameterGroup> groups;
  if (part.embeddings) groups.push_back({at(t.wte, V * C), at(t.wpe, T * C)});
  for (size_t l = 0; l < part.layers; ++l) {
    groups.push_back({
        at(t.ln1_weight + l * C, C), at(t.ln1_bias + l * C, C),
        at(t.qkv_weight + l * 3 * C * C, 3 * C * C), at(t.qkv_bias + l * 3 * C, 3 * C),
        at(t.proj_weight + l * C * C, C * C), at(t.proj_bias + l * C, C),
        at(t.ln2_weight + l * C, C), at(t.ln2_bias + l * C, C),
        at(t.fc_weight + l * 4 * C * C, 4 * C * C), at(t.fc_bias + l * 4 * C, 4 * C),
        at(t.mlp_proj_weight + l * 4 * C * C, 4 * C * C), at(t.mlp_proj_bias + l * C, C),
    });
  }
  if (part.head) {
    groups.push_back({at(t.lnf_weight, C), at(t.lnf_bias, C)});
    if (!tied) {
      groups.back().push_back(at(t.lm_head, V * C));
    } else if (!part.embeddings) {
      groups.back().push_back(at(t.wte, V * C));
    }
  }
  return groups;
}

// The whole model's parameter groups: L + 2 of them (GptPartParameterGroups of WholeGpt(L)).
inline std::vector<ParameterGroup> GptParameterGroups(size_t L, size_t C, size_t T, size_t V,
                                                      bool tied = true) {
  return GptPartParameterGroups(WholeGpt(L), C, T, V, tied);
}

}  // namespace psrv

#endif  // PSRV_WORKER_MODEL_GPT_VIEWS_H_
