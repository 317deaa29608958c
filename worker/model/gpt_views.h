// Named views of a GPT's flat buffer (parameters or gradients), one per table, in the order of
// common/model_layout.h's GptTables. Shared by the CPU model and the CUDA model (host or device
// pointers alike): the layout is written down once.
#ifndef PSRV_WORKER_MODEL_GPT_VIEWS_H_
#define PSRV_WORKER_MODEL_GPT_VIEWS_H_

#include <cstddef>

namespace psrv {

template <typename Float>
struct GptTableViews {
  Float* wte;              // (V, C)
  Float* wpe;              // (T, C)
  Float* ln1_weight;       // (L, C)
  Float* ln1_bias;         // (L, C)
  Float* qkv_weight;       // (L, 3C, C)
  Float* qkv_bias;         // (L, 3C)
  Float* proj_weight;      // (L, C, C)
  Float* proj_bias;        // (L, C)
  Float* ln2_weight;       // (L, C)
  Float* ln2_bias;         // (L, C)
  Float* fc_weight;        // (L, 4C, C)
  Float* fc_bias;          // (L, 4C)
  Float* mlp_proj_weight;  // (L, C, 4C)
  Float* mlp_proj_bias;    // (L, C)
  Float* lnf_weight;       // (C)
  Float* lnf_bias;         // (C)
};

// Views into `buffer` for L layers, width C, context T and vocabulary V.
template <typename Float>
GptTableViews<Float> GptViews(Float* buffer, size_t L, size_t C, size_t T, size_t V) {
  GptTableViews<Float> t;
  Float* p = buffer;
  auto take = [&p](size_t n) {
    Float* view = p;
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

}  // namespace psrv

#endif  // PSRV_WORKER_MODEL_GPT_VIEWS_H_
