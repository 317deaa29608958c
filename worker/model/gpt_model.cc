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
  return GptTables(config.layers, config.width, config.context, config.vocab, seed);
}

absl::StatusOr<std::unique_ptr<GptModel>> GptModel::Create(const GptConfig& config) {
  absl::Status status = ValidateGptConfig(config);
  if (!status.ok()) return status;
  return std::unique_ptr<GptModel>(new GptModel(config));
}

absl::StatusOr<std::unique_ptr<LanguageModel>> CreateGptModel(const GptConfig& config) {
  absl::StatusOr<std::unique_ptr<GptModel>> model = GptModel::Create(config);
  if (!model.ok()) return model.status();
  return std::unique_ptr<LanguageModel>(std::move(*model));
}

GptModel::GptModel(const GptConfig& config)
    : config_(config),
      pool_(std::make_unique<ThreadPool>(config.threads)),
      dropout_(config.dropout > 0.0f) {
  size_t total = 0;
  for (const TableSpec& table : GptTables(config, 0)) {
    size_t n = 1;
    for (uint64_t d : table.shape()) n *= d;
    total += n;
  }
  num_parameters_ = total;
  groups_ = GptParameterGroups(config.layers, config.width, config.context, config.vocab);
}

template <typename Float>
GptModel::Tables<Float> GptModel::View(Float* buffer) const {
  return GptViews(buffer, config_.layers, config_.width, config_.context, config_.vocab);
}

void GptModel::Reserve(int batch) {
  if (batch <= reserved_batch_) return;
  const size_t B = batch, L = config_.layers, C = config_.width, T = config_.context,
               NH = config_.heads, V = config_.vocab;
  const size_t BT = B * T;
  inputs_.resize(BT);
  targets_.resize(BT);
  encoded_.resize(BT * C);
  ln1_.resize(L * BT * C);
  ln1_mean_.resize(L * BT);
  ln1_rstd_.resize(L * BT);
  qkv_.resize(L * BT * 3 * C);
  att_.resize(L * B * NH * T * T);
  atty_.resize(L * BT * C);
  residual2_.resize(L * BT * C);
  ln2_.resize(L * BT * C);
  ln2_mean_.resize(L * BT);
  ln2_rstd_.resize(L * BT);
  fch_.resize(L * BT * 4 * C);
  fch_tanh_.resize(L * BT * 4 * C);
  fch_gelu_.resize(L * BT * 4 * C);
  residual3_.resize(L * BT * C);
  lnf_.resize(BT * C);
  lnf_mean_.resize(BT);
  lnf_rstd_.resize(BT);
  probs_.resize(BT * V);
  losses_.resize(BT);
  if (dropout_) {
    att_dropped_.resize(L * B * NH * T * T);
    embed_mask_.resize(BT * C);
    att_mask_.resize(L * B * NH * T * T);
    attn_proj_mask_.resize(L * BT * C);
    mlp_proj_mask_.resize(L * BT * C);
  }
  proj_.resize(BT * C);
  dresidual_.resize(BT * C);
  dbtc_.resize(BT * C);
  datty_.resize(BT * C);
  dqkv_.resize(BT * 3 * C);
  dfch_.resize(BT * 4 * C);
  datt_.resize(B * NH * T * T);
  reserved_batch_ = batch;
}

bool GptModel::LoadRows(const int32_t* rows, int batch) {
  const int T = config_.context, V = config_.vocab;
  bool valid = true;
  for (int b = 0; b < batch; ++b) {
    const int32_t* row = rows + static_cast<size_t>(b) * (T + 1);  // (T+1)
    for (int j = 0; j <= T; ++j) valid &= row[j] >= 0 && row[j] < V;
    std::memcpy(&inputs_[static_cast<size_t>(b) * T], row, T * sizeof(int32_t));
    std::memcpy(&targets_[static_cast<size_t>(b) * T], row + 1, T * sizeof(int32_t));
  }
  return valid;
}

void GptModel::Forward(const Tables<const float>& p, int B, int T, bool training, uint64_t seed) {
  const int L = config_.layers, C = config_.width, NH = config_.heads;
  const size_t BT = static_cast<size_t>(B) * T;
  const bool dropout = training && dropout_;
  const float rate = config_.dropout;

  if (training) AwaitParameters(groups_[0]);
  EmbeddingForward(inputs_.data(), p.wte, p.wpe, B, T, C, encoded_.data(), pool_.get());
  if (dropout) {
    DropoutMask(seed, EmbedStream(), rate, BT * C, embed_mask_.data(), pool_.get());
    Multiply(encoded_.data(), embed_mask_.data(), BT * C, encoded_.data(), pool_.get());
  }
  for (int l = 0; l < L; ++l) {
    if (training) AwaitParameters(groups_[1 + l]);
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
    const float* residual = l == 0 ? encoded_.data() : residual3_.data() + (l - 1) * BT * C;
    float* ln1 = ln1_.data() + l * BT * C;        // (B, T, C)
    float* ln1_mean = ln1_mean_.data() + l * BT;  // (B, T)
    float* ln1_rstd = ln1_rstd_.data() + l * BT;  // (B, T)
    float* qkv = qkv_.data() + l * BT * 3 * C;    // (B, T, 3C)
    const size_t att_size = static_cast<size_t>(B) * NH * T * T;
    float* att = att_.data() + l * att_size;              // (B, NH, T, T)
    float* atty = atty_.data() + l * BT * C;              // (B, T, C)
    float* residual2 = residual2_.data() + l * BT * C;    // (B, T, C)
    float* ln2 = ln2_.data() + l * BT * C;                // (B, T, C)
    float* ln2_mean = ln2_mean_.data() + l * BT;          // (B, T)
    float* ln2_rstd = ln2_rstd_.data() + l * BT;          // (B, T)
    float* fch = fch_.data() + l * BT * 4 * C;            // (B, T, 4C)
    float* fch_tanh = fch_tanh_.data() + l * BT * 4 * C;  // (B, T, 4C)
    float* fch_gelu = fch_gelu_.data() + l * BT * 4 * C;  // (B, T, 4C)
    float* residual3 = residual3_.data() + l * BT * C;    // (B, T, C)
    float* proj = proj_.data();                           // (B, T, C)
    float* att_mask = nullptr;                            // (B, NH, T, T)
    float* att_dropped = nullptr;                         // (B, NH, T, T)
    float* attn_proj_mask = nullptr;                      // (B, T, C)
    float* mlp_proj_mask = nullptr;                       // (B, T, C)
    if (dropout) {
      att_mask = att_mask_.data() + l * att_size;
      att_dropped = att_dropped_.data() + l * att_size;
      attn_proj_mask = attn_proj_mask_.data() + l * BT * C;
      mlp_proj_mask = mlp_proj_mask_.data() + l * BT * C;
      DropoutMask(seed, AttentionStream(l), rate, att_size, att_mask, pool_.get());
      DropoutMask(seed, AttnProjStream(l), rate, BT * C, attn_proj_mask, pool_.get());
      DropoutMask(seed, MlpProjStream(l), rate, BT * C, mlp_proj_mask, pool_.get());
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
  const float* last = residual3_.data() + (L - 1) * BT * C;  // (B, T, C)
  if (training) AwaitParameters(groups_[L + 1]);
  LayerNormForward(last, p.lnf_weight, p.lnf_bias, BT, C, lnf_.data(), lnf_mean_.data(),
                   lnf_rstd_.data(), pool_.get());
}

float GptModel::HeadLoss(const Tables<const float>& p, int B) {
  const int T = config_.context, C = config_.width, V = config_.vocab;
  const int BT = B * T;
  // logits (B, T, V) = lnf (B, T, C) @ wte^T: the output head shares the token embedding.
  MatmulForward(lnf_.data(), p.wte, nullptr, BT, C, V, probs_.data(), pool_.get());
  return SoftmaxCrossEntropyForward(probs_.data(), targets_.data(), BT, V, probs_.data(),
                                    losses_.data(), pool_.get());
}

float GptModel::Loss(const float* params, const int32_t* rows, int batch) {
  Reserve(batch);
  if (!LoadRows(rows, batch)) return std::numeric_limits<float>::quiet_NaN();
  const Tables<const float> p = View(params);
  Forward(p, batch, config_.context, /*training=*/false, /*seed=*/0);
  return HeadLoss(p, batch);
}

void GptModel::NextTokenLogits(const float* params, const int32_t* tokens, int length,
                               float* logits) {
  Reserve(1);
  const int32_t start_token = 0;
  if (length < 1) {  // Outside the contract; read as the single token 0 rather than nothing.
    tokens = &start_token;
    length = 1;
  }
  const int T = std::min(length, config_.context), C = config_.width, V = config_.vocab;
  // Out-of-range ids are clamped rather than read out of bounds.
  for (int t = 0; t < T; ++t) {
    inputs_[t] = std::clamp<int32_t>(tokens[length - T + t], 0, V - 1);
  }
  const Tables<const float> p = View(params);
  Forward(p, /*B=*/1, T, /*training=*/false, /*seed=*/0);
  // Only the last position's logits (V) = lnf[T-1] (C) @ wte^T.
  MatmulForward(lnf_.data() + static_cast<size_t>(T - 1) * C, p.wte, nullptr, 1, C, V, logits,
                pool_.get());
}

float GptModel::ForwardBackward(const float* params, const int32_t* rows, int batch, uint64_t seed,
                                float* grads) {
  Reserve(batch);
  if (!LoadRows(rows, batch)) {
    // (Nothing reported to a parameter stream: the step fails, nothing of it is pushed.)
    std::fill(grads, grads + num_parameters_, 0.0f);
    return std::numeric_limits<float>::quiet_NaN();
  }
  const int B = batch, T = config_.context, L = config_.layers, C = config_.width,
            NH = config_.heads, V = config_.vocab;
  const size_t BT = static_cast<size_t>(B) * T;
  const Tables<const float> p = View(params);
  const Tables<float> g = View(grads);
  Forward(p, B, T, /*training=*/true, seed);
  const float loss = HeadLoss(p, B);

  // Head: d(mean loss)/d(logits), then through logits = lnf @ wte^T. dwte is overwritten here and
  // the embedding backward adds to it at the end.
  float* dlogits = probs_.data();  // (B, T, V)
  SoftmaxCrossEntropyBackward(probs_.data(), targets_.data(), BT, V, 1.0f / BT, dlogits,
                              pool_.get());
  float* dlnf = dbtc_.data();  // (B, T, C)
  MatmulBackward(dlogits, lnf_.data(), p.wte, BT, C, V, /*accumulate_dinp=*/false, dlnf, g.wte,
                 /*dbias=*/nullptr, pool_.get());
  float* dresidual = dresidual_.data();  // (B, T, C)
  std::fill(dresidual, dresidual + BT * C, 0.0f);
  LayerNormBackward(dlnf, residual3_.data() + (L - 1) * BT * C, p.lnf_weight, lnf_mean_.data(),
                    lnf_rstd_.data(), BT, C, dresidual, g.lnf_weight, g.lnf_bias, pool_.get());
  GradientsReady(groups_[L + 1]);

  // dresidual holds d(loss)/d(layer l's output) on entry to each iteration and d(its input) after.
  for (int l = L - 1; l >= 0; --l) {
    const size_t l3cc = static_cast<size_t>(l) * 3 * C * C, lcc = static_cast<size_t>(l) * C * C,
                 l4cc = static_cast<size_t>(l) * 4 * C * C;
    const size_t att_size = static_cast<size_t>(B) * NH * T * T;
    const float* residual = l == 0 ? encoded_.data() : residual3_.data() + (l - 1) * BT * C;
    const float* ln1 = ln1_.data() + l * BT * C;                // (B, T, C)
    const float* qkv = qkv_.data() + l * BT * 3 * C;            // (B, T, 3C)
    const float* att = att_.data() + l * att_size;              // (B, NH, T, T)
    const float* atty = atty_.data() + l * BT * C;              // (B, T, C)
    const float* residual2 = residual2_.data() + l * BT * C;    // (B, T, C)
    const float* ln2 = ln2_.data() + l * BT * C;                // (B, T, C)
    const float* fch = fch_.data() + l * BT * 4 * C;            // (B, T, 4C)
    const float* fch_tanh = fch_tanh_.data() + l * BT * 4 * C;  // (B, T, 4C)
    const float* fch_gelu = fch_gelu_.data() + l * BT * 4 * C;  // (B, T, 4C)
    const float* att_mask = dropout_ ? att_mask_.data() + l * att_size : nullptr;
    const float* att_dropped = dropout_ ? att_dropped_.data() + l * att_size : nullptr;
    float* dfch = dfch_.data();    // (B, T, 4C)
    float* dqkv = dqkv_.data();    // (B, T, 3C)
    float* datty = datty_.data();  // (B, T, C)

    // MLP: residual3 = residual2 + dropout(proj(gelu(fc(ln2(residual2))))).
    const float* dproj = dresidual;  // (B, T, C)
    if (dropout_) {
      Multiply(dresidual, mlp_proj_mask_.data() + l * BT * C, BT * C, dbtc_.data(), pool_.get());
      dproj = dbtc_.data();
    }
    MatmulBackward(dproj, fch_gelu, p.mlp_proj_weight + l4cc, BT, 4 * C, C, false, dfch,
                   g.mlp_proj_weight + l4cc, g.mlp_proj_bias + l * C, pool_.get());
    GeluBackward(dfch, fch, fch_tanh, BT * 4 * C, dfch, pool_.get());
    float* dln2 = dbtc_.data();  // (B, T, C)
    MatmulBackward(dfch, ln2, p.fc_weight + l4cc, BT, C, 4 * C, false, dln2, g.fc_weight + l4cc,
                   g.fc_bias + l * 4 * C, pool_.get());
    LayerNormBackward(dln2, residual2, p.ln2_weight + l * C, ln2_mean_.data() + l * BT,
                      ln2_rstd_.data() + l * BT, BT, C, dresidual, g.ln2_weight + l * C,
                      g.ln2_bias + l * C, pool_.get());

    // Attention: residual2 = residual + dropout(proj(attention(ln1(residual)))).
    dproj = dresidual;
    if (dropout_) {
      Multiply(dresidual, attn_proj_mask_.data() + l * BT * C, BT * C, dbtc_.data(), pool_.get());
      dproj = dbtc_.data();
    }
    MatmulBackward(dproj, atty, p.proj_weight + lcc, BT, C, C, false, datty, g.proj_weight + lcc,
                   g.proj_bias + l * C, pool_.get());
    AttentionBackward(datty, qkv, att, att_dropped, att_mask, B, T, C, NH, datt_.data(), dqkv,
                      pool_.get());
    float* dln1 = dbtc_.data();  // (B, T, C)
    MatmulBackward(dqkv, ln1, p.qkv_weight + l3cc, BT, C, 3 * C, false, dln1, g.qkv_weight + l3cc,
                   g.qkv_bias + l * 3 * C, pool_.get());
    LayerNormBackward(dln1, residual, p.ln1_weight + l * C, ln1_mean_.data() + l * BT,
                      ln1_rstd_.data() + l * BT, BT, C, dresidual, g.ln1_weight + l * C,
                      g.ln1_bias + l * C, pool_.get());
    GradientsReady(groups_[1 + l]);
  }

  // Embeddings: encoded = dropout(wte[inputs] + wpe).
  if (dropout_) Multiply(dresidual, embed_mask_.data(), BT * C, dresidual, pool_.get());
  EmbeddingBackward(dresidual, inputs_.data(), B, T, C, g.wte, g.wpe, pool_.get());
  GradientsReady(groups_[0]);
  return loss;
}

}  // namespace psrv
