// The GPT model: parameter tables, and forward/backward through the kernels of gpt_kernels.h in the
// order of llm.c's gpt2_forward and gpt2_backward.
#include "worker/model/gpt_model.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "absl/strings/str_cat.h"
#include "worker/model/gpt_kernels.h"

namespace psrv {
namespace {

using gpt_dropout::AttentionStream;
using gpt_dropout::AttnProjStream;
using gpt_dropout::EmbedStream;
using gpt_dropout::MlpProjStream;

}  // namespace

std::vector<TableSpec> GptTables(const GptConfig& config, uint64_t seed) {
  return GptTables(config.layers, config.width, config.context, config.vocab, seed,
                   config.tie_embeddings);
}

absl::StatusOr<std::unique_ptr<GptModel>> GptModel::Create(const GptConfig& config) {
  absl::Status status = ValidateGptConfig(config);
  if (!status.ok()) return status;
  return std::unique_ptr<GptModel>(new GptModel(config, WholeGpt(config.layers), 1));
}

absl::StatusOr<std::unique_ptr<GptModel>> GptModel::CreateStage(const GptConfig& config,
                                                                const GptPart& part, int slots) {
  absl::Status status = ValidateGptConfig(config);
  if (!status.ok()) return status;
  if (!config.tie_embeddings) {
    return absl::InvalidArgumentError(
        "pipeline stages need tied embeddings (untied ones are not split over stages yet)");
  }
  if (part.layers < 1 || part.first_layer + part.layers > static_cast<size_t>(config.layers)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "a GPT stage needs layers in [0, ", config.layers, "); got ", part.layers,
        " layer(s) from layer ", part.first_layer));
  }
  if (slots < 1 || slots > 4096) {
    return absl::InvalidArgumentError(
        absl::StrCat("micro-batches in flight must be in [1, 4096]; got ", slots));
  }
  return std::unique_ptr<GptModel>(new GptModel(config, part, slots));
}

absl::StatusOr<std::unique_ptr<LanguageModel>> CreateGptModel(const GptConfig& config) {
  absl::StatusOr<std::unique_ptr<GptModel>> model = GptModel::Create(config);
  if (!model.ok()) return model.status();
  return std::unique_ptr<LanguageModel>(std::move(*model));
}

GptModel::GptModel(const GptConfig& config, const GptPart& part, int slots)
    : config_(config),
      part_(part),
      num_parameters_(GptPartSize(part, config.width, config.context, config.vocab,
                                  config.tie_embeddings)),
      groups_(GptPartParameterGroups(part, config.width, config.context, config.vocab,
                                     config.tie_embeddings)),
      pool_(std::make_unique<ThreadPool>(config.threads)),
      dropout_(config.dropout > 0.0f),
      slots_(slots) {}

template <typename Float>
GptModel::Tables<Float> GptModel::View(Float* buffer) const {
  return GptPartLayout(buffer, part_, config_.width, config_.context, config_.vocab,
                       config_.tie_embeddings);
}

void GptModel::Reserve(Activations* a, int batch) {
  const size_t B = batch, L = part_.layers, C = config_.width, T = config_.context,
               NH = config_.heads, V = config_.vocab;
  const size_t BT = B * T;
  if (batch > a->capacity) {
    a->inputs.resize(BT);
    a->targets.resize(BT);
    a->encoded.resize(BT * C);
    a->ln1.resize(L * BT * C);
    a->ln1_mean.resize(L * BT);
    a->ln1_rstd.resize(L * BT);
    a->qkv.resize(L * BT * 3 * C);
    a->att.resize(L * B * NH * T * T);
    a->atty.resize(L * BT * C);
    a->residual2.resize(L * BT * C);
    a->ln2.resize(L * BT * C);
    a->ln2_mean.resize(L * BT);
    a->ln2_rstd.resize(L * BT);
    a->fch.resize(L * BT * 4 * C);
    a->fch_tanh.resize(L * BT * 4 * C);
    a->fch_gelu.resize(L * BT * 4 * C);
    a->residual3.resize(L * BT * C);
    if (part_.head) {
      a->lnf.resize(BT * C);
      a->lnf_mean.resize(BT);
      a->lnf_rstd.resize(BT);
      a->probs.resize(BT * V);
      a->losses.resize(BT);
    }
    if (dropout_) {
      a->att_dropped.resize(L * B * NH * T * T);
      if (part_.embeddings) a->embed_mask.resize(BT * C);
      a->att_mask.resize(L * B * NH * T * T);
      a->attn_proj_mask.resize(L * BT * C);
      a->mlp_proj_mask.resize(L * BT * C);
    }
    a->capacity = batch;
  }
  if (batch > scratch_batch_) {
    proj_.resize(BT * C);
    dresidual_.resize(BT * C);
    dbtc_.resize(BT * C);
    datty_.resize(BT * C);
    dqkv_.resize(BT * 3 * C);
    dfch_.resize(BT * 4 * C);
    datt_.resize(B * NH * T * T);
    scratch_batch_ = batch;
  }
}

size_t GptModel::ActivationBytes(int batch) const {
  const size_t B = batch, L = part_.layers, C = config_.width, T = config_.context,
               NH = config_.heads, V = config_.vocab;
  const size_t BT = B * T;
  size_t floats = BT * C + L * (BT * C * 6 + BT * 4 + BT * 3 * C + B * NH * T * T + BT * 4 * C * 3);
  if (part_.head) floats += BT * C + 2 * BT + BT * V + BT;
  if (dropout_) {
    floats += L * (2 * B * NH * T * T + 2 * BT * C) + (part_.embeddings ? BT * C : 0);
  }
  return floats * sizeof(float) + 2 * BT * sizeof(int32_t);
}

bool GptModel::LoadRows(Activations* a, const int32_t* rows, int batch) {
  const int T = config_.context, V = config_.vocab;
  bool valid = true;
  for (int b = 0; b < batch; ++b) {
    const int32_t* row = rows + static_cast<size_t>(b) * (T + 1);  // (T+1)
    for (int j = 0; j <= T; ++j) valid &= row[j] >= 0 && row[j] < V;
    std::memcpy(&a->inputs[static_cast<size_t>(b) * T], row, T * sizeof(int32_t));
    std::memcpy(&a->targets[static_cast<size_t>(b) * T], row + 1, T * sizeof(int32_t));
  }
  return valid;
}

void GptModel::Forward(const Tables<const float>& p, Activations* a, int B, int T, bool training,
                       uint64_t seed) {
  const int L = part_.layers, C = config_.width, NH = config_.heads;
  const size_t BT = static_cast<size_t>(B) * T;
  const bool dropout = training && dropout_;
  const float rate = config_.dropout;
  size_t group = 0;  // The next of groups_ forward reads.
  a->batch = B;  // (The strides of Output and Backward.)
  a->positions = BT;

  if (part_.embeddings) {
    if (training) AwaitParameters(groups_[group]);
    ++group;
    EmbeddingForward(a->inputs.data(), p.wte, p.wpe, B, T, C, a->encoded.data(), pool_.get());
    if (dropout) {
      DropoutMask(seed, EmbedStream(), rate, BT * C, a->embed_mask.data(), pool_.get());
      Multiply(a->encoded.data(), a->embed_mask.data(), BT * C, a->encoded.data(), pool_.get());
    }
  }
  for (int l = 0; l < L; ++l) {
    if (training) AwaitParameters(groups_[group]);
    ++group;
    const int layer = static_cast<int>(part_.first_layer) + l;  // In the whole model.
    // This layer's parameters.
    const float* ln1w = p.ln1_weight + l * C;                                      // (C)
    const float* ln1b = p.ln1_bias + l * C;                                        // (C)
    const float* qkvw = p.qkv_weight + static_cast<size_t>(l) * 3 * C * C;         // (3C, C)
    const float* qkvb = p.qkv_bias + l * 3 * C;                                    // (3C)
    const float* projw = p.proj_weight + static_cast<size_t>(l) * C * C;           // (C, C)
    const float* projb = p.proj_bias + l * C;                                      // (C)
    const float* ln2w = p.ln2_weight + l * C;                                      // (C)
    const float* ln2b = p.ln2_bias + l * C;                                        // (C)
    const float* fcw = p.fc_weight + static_cast<size_t>(l) * 4 * C * C;           // (4C, C)
    const float* fcb = p.fc_bias + l * 4 * C;                                      // (4C)
    const float* mprojw = p.mlp_proj_weight + static_cast<size_t>(l) * C * 4 * C;  // (C, 4C)
    const float* mprojb = p.mlp_proj_bias + l * C;                                 // (C)
    // This layer's activations; the strides use the current B and T.
    const float* residual = l == 0 ? a->encoded.data() : a->residual3.data() + (l - 1) * BT * C;
    float* ln1 = a->ln1.data() + l * BT * C;        // (B, T, C)
    float* ln1_mean = a->ln1_mean.data() + l * BT;  // (B, T)
    float* ln1_rstd = a->ln1_rstd.data() + l * BT;  // (B, T)
    float* qkv = a->qkv.data() + l * BT * 3 * C;    // (B, T, 3C)
    const size_t att_size = static_cast<size_t>(B) * NH * T * T;
    float* att = a->att.data() + l * att_size;              // (B, NH, T, T)
    float* atty = a->atty.data() + l * BT * C;              // (B, T, C)
    float* residual2 = a->residual2.data() + l * BT * C;    // (B, T, C)
    float* ln2 = a->ln2.data() + l * BT * C;                // (B, T, C)
    float* ln2_mean = a->ln2_mean.data() + l * BT;          // (B, T)
    float* ln2_rstd = a->ln2_rstd.data() + l * BT;          // (B, T)
    float* fch = a->fch.data() + l * BT * 4 * C;            // (B, T, 4C)
    float* fch_tanh = a->fch_tanh.data() + l * BT * 4 * C;  // (B, T, 4C)
    float* fch_gelu = a->fch_gelu.data() + l * BT * 4 * C;  // (B, T, 4C)
    float* residual3 = a->residual3.data() + l * BT * C;    // (B, T, C)
    float* proj = proj_.data();                             // (B, T, C)
    float* att_mask = nullptr;                              // (B, NH, T, T)
    float* att_dropped = nullptr;                           // (B, NH, T, T)
    float* attn_proj_mask = nullptr;                        // (B, T, C)
    float* mlp_proj_mask = nullptr;                         // (B, T, C)
    if (dropout) {
      att_mask = a->att_mask.data() + l * att_size;
      att_dropped = a->att_dropped.data() + l * att_size;
      attn_proj_mask = a->attn_proj_mask.data() + l * BT * C;
      mlp_proj_mask = a->mlp_proj_mask.data() + l * BT * C;
      DropoutMask(seed, AttentionStream(layer), rate, att_size, att_mask, pool_.get());
      DropoutMask(seed, AttnProjStream(layer), rate, BT * C, attn_proj_mask, pool_.get());
      DropoutMask(seed, MlpProjStream(layer), rate, BT * C, mlp_proj_mask, pool_.get());
    }

    LayerNormForward(residual, ln1w, ln1b, BT, C, ln1, ln1_mean, ln1_rstd, pool_.get());
    MatmulForward(ln1, qkvw, qkvb, BT, C, 3 * C, qkv, pool_.get());
    AttentionForward(qkv, att_mask, B, T, C, NH, att, att_dropped, atty, pool_.get());
    MatmulForward(atty, projw, projb, BT, C, C, proj, pool_.get());
    ResidualForward(residual, proj, attn_proj_mask, BT * C, residual2, pool_.get());
    LayerNormForward(residual2, ln2w, ln2b, BT, C, ln2, ln2_mean, ln2_rstd, pool_.get());
    MatmulForward(ln2, fcw, fcb, BT, C, 4 * C, fch, pool_.get());
    GeluForward(fch, BT * 4 * C, fch_gelu, fch_tanh, pool_.get());
    MatmulForward(fch_gelu, mprojw, mprojb, BT, 4 * C, C, proj, pool_.get());
    ResidualForward(residual2, proj, mlp_proj_mask, BT * C, residual3, pool_.get());
  }
  if (!part_.head) return;
  if (training) AwaitParameters(groups_[group]);
  LayerNormForward(Output(*a), p.lnf_weight, p.lnf_bias, BT, C, a->lnf.data(),
                   a->lnf_mean.data(), a->lnf_rstd.data(), pool_.get());
}

const float* GptModel::Output(const Activations& a) const {
  return a.residual3.data() + (part_.layers - 1) * a.positions * config_.width;
}

float GptModel::HeadLoss(const Tables<const float>& p, Activations* a, int B) {
  const int T = config_.context, C = config_.width, V = config_.vocab;
  const int BT = B * T;
  // logits (B, T, V) = lnf (B, T, C) @ lm_head^T (lm_head is wte when the embeddings are tied).
  MatmulForward(a->lnf.data(), p.lm_head, nullptr, BT, C, V, a->probs.data(), pool_.get());
  return SoftmaxCrossEntropyForward(a->probs.data(), a->targets.data(), BT, V, a->probs.data(),
                                    a->losses.data(), pool_.get());
}

float GptModel::Loss(const float* params, const int32_t* rows, int batch) {
  Activations* a = &slots_[0];
  Reserve(a, batch);
  if (!LoadRows(a, rows, batch)) return std::numeric_limits<float>::quiet_NaN();
  const Tables<const float> p = View(params);
  Forward(p, a, batch, config_.context, /*training=*/false, /*seed=*/0);
  return HeadLoss(p, a, batch);
}

void GptModel::NextTokenLogits(const float* params, const int32_t* tokens, int length,
                               float* logits) {
  Activations* a = &slots_[0];
  Reserve(a, 1);
  const int32_t start_token = 0;
  if (length < 1) {  // Outside the contract; read as the single token 0 rather than nothing.
    tokens = &start_token;
    length = 1;
  }
  const int T = std::min(length, config_.context), C = config_.width, V = config_.vocab;
  // Out-of-range ids are clamped rather than read out of bounds.
  for (int t = 0; t < T; ++t) {
    a->inputs[t] = std::clamp<int32_t>(tokens[length - T + t], 0, V - 1);
  }
  const Tables<const float> p = View(params);
  Forward(p, a, /*B=*/1, T, /*training=*/false, /*seed=*/0);
  // Only the last position's logits (V) = lnf[T-1] (C) @ lm_head^T.
  MatmulForward(a->lnf.data() + static_cast<size_t>(T - 1) * C, p.lm_head, nullptr, 1, C, V,
                logits, pool_.get());
}

float GptModel::ForwardBackward(const float* params, const int32_t* rows, int batch, uint64_t seed,
                                float* grads) {
  Activations* a = &slots_[0];
  Reserve(a, batch);
  if (!LoadRows(a, rows, batch)) {
    // (Nothing reported to a parameter stream: the step fails, nothing of it is pushed.)
    std::fill(grads, grads + num_parameters_, 0.0f);
    return std::numeric_limits<float>::quiet_NaN();
  }
  const Tables<const float> p = View(params);
  Forward(p, a, batch, config_.context, /*training=*/true, seed);
  const float loss = HeadLoss(p, a, batch);
  Backward(p, View(grads), a, /*doutput=*/nullptr);
  return loss;
}

float GptModel::StageForward(const float* params, int slot, const int32_t* rows,
                             const float* input, int batch, uint64_t seed, float* output,
                             bool training) {
  Activations* a = &slots_[slot];
  Reserve(a, batch);
  const size_t BTC = static_cast<size_t>(batch) * config_.context * config_.width;
  const bool valid = LoadRows(a, rows, batch);
  if (!part_.embeddings) std::memcpy(a->encoded.data(), input, BTC * sizeof(float));
  const Tables<const float> p = View(params);
  Forward(p, a, batch, config_.context, training, seed);
  if (!part_.head) {
    std::memcpy(output, Output(*a), BTC * sizeof(float));
    return valid ? 0.0f : std::numeric_limits<float>::quiet_NaN();
  }
  const float loss = HeadLoss(p, a, batch);
  return valid ? loss : std::numeric_limits<float>::quiet_NaN();
}

void GptModel::StageBackward(const float* params, int slot, const float* doutput, float* grads,
                             float* dinput) {
  Activations* a = &slots_[slot];
  const Tables<float> g = View(grads);
  // A part without the embeddings but with the head writes wte's gradient (the head's part)
  // itself; without either it has no wte. With the embeddings, EmbeddingBackward adds to it.
  if (part_.embeddings && !part_.head) std::fill(g.wte, g.wte + config_.vocab * config_.width, 0.0f);
  Backward(View(params), g, a, doutput);
  if (!part_.embeddings) {
    const size_t BTC = static_cast<size_t>(a->batch) * config_.context * config_.width;
    std::memcpy(dinput, dresidual_.data(), BTC * sizeof(float));
  }
}

void GptModel::Backward(const Tables<const float>& p, const Tables<float>& g, Activations* a,
                        const float* doutput) {
  // The strides use the batch the slot was last run with.
  const int B = a->batch, T = config_.context, L = part_.layers, C = config_.width,
            NH = config_.heads, V = config_.vocab;
  const size_t BT = static_cast<size_t>(B) * T;
  int group = static_cast<int>(groups_.size()) - 1;  // The last group forward read.
  float* dresidual = dresidual_.data();  // (B, T, C)

  // Untied, the head does not write wte's gradient: the embedding backward adds to zeros, and
  // the rows of tokens not in the batch stay exactly zero (the sparse rows a worker pushes).
  if (!config_.tie_embeddings && part_.embeddings) {
    std::fill(g.wte, g.wte + static_cast<size_t>(V) * C, 0.0f);
  }
  if (part_.head) {
    // Head: d(mean loss)/d(logits), then through logits = lnf @ lm_head^T. dlm_head is
    // overwritten here (tied: it is dwte, and the embedding backward adds to it at the end).
    float* dlogits = a->probs.data();  // (B, T, V)
    SoftmaxCrossEntropyBackward(a->probs.data(), a->targets.data(), BT, V, 1.0f / BT, dlogits,
                                pool_.get());
    float* dlnf = dbtc_.data();  // (B, T, C)
    MatmulBackward(dlogits, a->lnf.data(), p.lm_head, BT, C, V, /*accumulate_dinp=*/false, dlnf,
                   g.lm_head, /*dbias=*/nullptr, pool_.get());
    std::fill(dresidual, dresidual + BT * C, 0.0f);
    LayerNormBackward(dlnf, Output(*a), p.lnf_weight, a->lnf_mean.data(), a->lnf_rstd.data(), BT,
                      C, dresidual, g.lnf_weight, g.lnf_bias, pool_.get());
    GradientsReady(groups_[group--]);
  } else {
    std::memcpy(dresidual, doutput, BT * C * sizeof(float));
  }

  // dresidual holds d(loss)/d(layer l's output) on entry to each iteration and d(its input) after.
  for (int l = L - 1; l >= 0; --l) {
    const size_t l3cc = static_cast<size_t>(l) * 3 * C * C, lcc = static_cast<size_t>(l) * C * C,
                 l4cc = static_cast<size_t>(l) * 4 * C * C;
    const size_t att_size = static_cast<size_t>(B) * NH * T * T;
    const float* residual = l == 0 ? a->encoded.data() : a->residual3.data() + (l - 1) * BT * C;
    const float* ln1 = a->ln1.data() + l * BT * C;                // (B, T, C)
    const float* qkv = a->qkv.data() + l * BT * 3 * C;            // (B, T, 3C)
    const float* att = a->att.data() + l * att_size;              // (B, NH, T, T)
    const float* atty = a->atty.data() + l * BT * C;              // (B, T, C)
    const float* residual2 = a->residual2.data() + l * BT * C;    // (B, T, C)
    const float* ln2 = a->ln2.data() + l * BT * C;                // (B, T, C)
    const float* fch = a->fch.data() + l * BT * 4 * C;            // (B, T, 4C)
    const float* fch_tanh = a->fch_tanh.data() + l * BT * 4 * C;  // (B, T, 4C)
    const float* fch_gelu = a->fch_gelu.data() + l * BT * 4 * C;  // (B, T, 4C)
    const float* att_mask = dropout_ ? a->att_mask.data() + l * att_size : nullptr;
    const float* att_dropped = dropout_ ? a->att_dropped.data() + l * att_size : nullptr;
    float* dfch = dfch_.data();    // (B, T, 4C)
    float* dqkv = dqkv_.data();    // (B, T, 3C)
    float* datty = datty_.data();  // (B, T, C)

    // MLP: residual3 = residual2 + dropout(proj(gelu(fc(ln2(residual2))))).
    const float* dproj = dresidual;  // (B, T, C)
    if (dropout_) {
      Multiply(dresidual, a->mlp_proj_mask.data() + l * BT * C, BT * C, dbtc_.data(), pool_.get());
      dproj = dbtc_.data();
    }
    MatmulBackward(dproj, fch_gelu, p.mlp_proj_weight + l4cc, BT, 4 * C, C, false, dfch,
                   g.mlp_proj_weight + l4cc, g.mlp_proj_bias + l * C, pool_.get());
    GeluBackward(dfch, fch, fch_tanh, BT * 4 * C, dfch, pool_.get());
    float* dln2 = dbtc_.data();  // (B, T, C)
    MatmulBackward(dfch, ln2, p.fc_weight + l4cc, BT, C, 4 * C, false, dln2, g.fc_weight + l4cc,
                   g.fc_bias + l * 4 * C, pool_.get());
    LayerNormBackward(dln2, residual2, p.ln2_weight + l * C, a->ln2_mean.data() + l * BT,
                      a->ln2_rstd.data() + l * BT, BT, C, dresidual, g.ln2_weight + l * C,
                      g.ln2_bias + l * C, pool_.get());

    // Attention: residual2 = residual + dropout(proj(attention(ln1(residual)))).
    dproj = dresidual;
    if (dropout_) {
      Multiply(dresidual, a->attn_proj_mask.data() + l * BT * C, BT * C, dbtc_.data(),
               pool_.get());
      dproj = dbtc_.data();
    }
    MatmulBackward(dproj, atty, p.proj_weight + lcc, BT, C, C, false, datty, g.proj_weight + lcc,
                   g.proj_bias + l * C, pool_.get());
    AttentionBackward(datty, qkv, att, att_dropped, att_mask, B, T, C, NH, datt_.data(), dqkv,
                      pool_.get());
    float* dln1 = dbtc_.data();  // (B, T, C)
    MatmulBackward(dqkv, ln1, p.qkv_weight + l3cc, BT, C, 3 * C, false, dln1, g.qkv_weight + l3cc,
                   g.qkv_bias + l * 3 * C, pool_.get());
    LayerNormBackward(dln1, residual, p.ln1_weight + l * C, a->ln1_mean.data() + l * BT,
                      a->ln1_rstd.data() + l * BT, BT, C, dresidual, g.ln1_weight + l * C,
                      g.ln1_bias + l * C, pool_.get());
    GradientsReady(groups_[group--]);
  }

  if (!part_.embeddings) return;  // d(input) stays in dresidual_.
  // Embeddings: encoded = dropout(wte[inputs] + wpe).
  if (dropout_) Multiply(dresidual, a->embed_mask.data(), BT * C, dresidual, pool_.get());
  EmbeddingBackward(dresidual, a->inputs.data(), B, T, C, g.wte, g.wpe, pool_.get());
  GradientsReady(groups_[group]);
}

}  // namespace psrv
