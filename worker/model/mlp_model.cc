// Forward, backward and sampling of the MLP language model, with OpenBLAS matrix products.
#include "worker/model/mlp_model.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>

#include "absl/strings/str_cat.h"
#include "worker/model/vector_math.h"

namespace psrv {
namespace {

constexpr int kByteVocab = 256;

absl::Status CheckRange(const char* name, uint32_t value, uint32_t max) {
  if (value < 1 || value > max) {
    return absl::InvalidArgumentError(
        absl::StrCat("model.", name, " = ", value, ", want 1..", max));
  }
  return absl::OkStatus();
}

// out (rows, cols) = each row a copy of bias (cols).
void BroadcastRows(const float* bias, int rows, int cols, float* out) {
  for (int r = 0; r < rows; ++r) std::memcpy(out + static_cast<size_t>(r) * cols, bias, cols * sizeof(float));
}

// out (cols) = sum over rows of m (rows, cols).
void SumRows(const float* m, int rows, int cols, float* out) {
  std::fill(out, out + cols, 0.0f);
  for (int r = 0; r < rows; ++r) {
    const float* row = m + static_cast<size_t>(r) * cols;
    for (int c = 0; c < cols; ++c) out[c] += row[c];
  }
}

// Uniform double in [0, 1) from 53 random bits; unlike std::uniform_real_distribution its output is
// the same under every standard library.
double UniformDouble(std::mt19937_64& rng) { return static_cast<double>(rng() >> 11) * 0x1.0p-53; }

}  // namespace

absl::StatusOr<MlpModel> MlpModel::Create(const ModelSpec& spec) {
  return Create(spec, kByteVocab);
}

absl::StatusOr<MlpModel> MlpModel::Create(const ModelSpec& spec, int vocab_size) {
  if (spec.kind() != "mlp") {
    return absl::InvalidArgumentError(
        absl::StrCat("MlpModel needs model kind \"mlp\", got \"", spec.kind(), "\""));
  }
  absl::Status status = CheckRange("context", spec.context(), 64);
  if (status.ok()) status = CheckRange("embedding_dim", spec.embedding_dim(), 1024);
  if (status.ok()) status = CheckRange("hidden_dim", spec.hidden_dim(), 16384);
  if (status.ok() && (vocab_size < 1 || vocab_size > (1 << 24))) {
    status = absl::InvalidArgumentError(
        absl::StrCat("vocab_size = ", vocab_size, ", want 1..", 1 << 24));
  }
  if (!status.ok()) return status;

  // Offsets of the tables of MlpTables, in order.
  size_t offsets[5];
  size_t total = 0;
  const std::vector<TableSpec> tables = MlpTables(spec, vocab_size, /*seed=*/0);
  for (int i = 0; i < 5; ++i) {
    offsets[i] = total;
    size_t n = 1;
    for (uint64_t d : tables[i].shape()) n *= d;
    total += n;
  }
  Layout layout{offsets[0], offsets[1], offsets[2], offsets[3], offsets[4]};
  return MlpModel(static_cast<int>(spec.context()), static_cast<int>(spec.embedding_dim()),
                  static_cast<int>(spec.hidden_dim()), vocab_size, layout, total);
}

MlpModel::MlpModel(int context, int embedding_dim, int hidden_dim, int vocab, const Layout& layout,
                   size_t num_parameters)
    : context_(context),
      embedding_dim_(embedding_dim),
      hidden_dim_(hidden_dim),
      vocab_(vocab),
      input_dim_(context * embedding_dim),
      layout_(layout),
      num_parameters_(num_parameters) {}

void MlpModel::Reserve(int batch) {
  if (batch <= reserved_batch_) return;
  const size_t b = batch;
  x_.resize(b * input_dim_);
  h_.resize(b * hidden_dim_);
  logits_.resize(b * vocab_);
  dh_.resize(b * hidden_dim_);
  dx_.resize(b * input_dim_);
  reserved_batch_ = batch;
}

template <typename Token>
bool MlpModel::ValidTokens(const Token* windows, int batch) const {
  bool valid = true;
  for (size_t i = 0, n = static_cast<size_t>(batch) * (context_ + 1); i < n; ++i) {
    valid &= static_cast<int64_t>(windows[i]) >= 0 && static_cast<int64_t>(windows[i]) < vocab_;
  }
  return valid;
}

template <typename Token>
void MlpModel::ComputeLogits(const float* params, const Token* windows, int window_stride,
                             int batch) {
  const int B = batch, D = input_dim_, E = embedding_dim_, H = hidden_dim_, V = vocab_;
  const float* embedding = params + layout_.embedding;   // (V, E)
  const float* wh = params + layout_.hidden_weight;      // (D, H)
  const float* bh = params + layout_.hidden_bias;        // (H)
  const float* wo = params + layout_.output_weight;      // (H, V)
  const float* bo = params + layout_.output_bias;        // (V)
  float* x = x_.data();            // (B, D)
  float* h = h_.data();            // (B, H)
  float* logits = logits_.data();  // (B, V)

  for (int b = 0; b < B; ++b) {
    const Token* window = windows + static_cast<size_t>(b) * window_stride;
    for (int j = 0; j < context_; ++j) {
      std::memcpy(x + static_cast<size_t>(b) * D + j * E,
                  embedding + static_cast<size_t>(window[j]) * E,
                  E * sizeof(float));
    }
  }
  // h = tanh(x @ Wh + bh)
  BroadcastRows(bh, B, H, h);
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, B, H, D, 1.0f, x, D, wh, H, 1.0f, h, H);
  TanhInPlace(h, static_cast<size_t>(B) * H);
  // logits = h @ Wo + bo
  BroadcastRows(bo, B, V, logits);
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, B, V, H, 1.0f, h, H, wo, V, 1.0f, logits,
              V);
}

template <typename Token>
float MlpModel::SoftmaxLoss(const Token* windows, int batch) {
  const int stride = context_ + 1, V = vocab_;
  double total = 0.0;
  for (int b = 0; b < batch; ++b) {
    float* row = logits_.data() + static_cast<size_t>(b) * V;  // (V)
    const float target_logit = row[windows[static_cast<size_t>(b) * stride + context_]];
    const float max = *std::max_element(row, row + V);
    const float sum = ExpShiftedInPlace(row, V, max);
    const float inv_sum = 1.0f / sum;
    for (int v = 0; v < V; ++v) row[v] *= inv_sum;
    // -log p[target] = log(sum exp(logit - max)) + max - logit[target]
    total += std::log(sum) + max - target_logit;
  }
  return static_cast<float>(total / batch);
}

template <typename Token>
float MlpModel::LossOf(const float* params, const Token* windows, int batch) {
  if (!ValidTokens(windows, batch)) return std::numeric_limits<float>::quiet_NaN();
  Reserve(batch);
  ComputeLogits(params, windows, context_ + 1, batch);
  return SoftmaxLoss(windows, batch);
}

float MlpModel::Loss(const float* params, const uint8_t* windows, int batch) {
  return LossOf(params, windows, batch);
}

float MlpModel::Loss(const float* params, const int32_t* rows, int batch) {
  return LossOf(params, rows, batch);
}

float MlpModel::ForwardBackward(const float* params, const uint8_t* windows, int batch,
                                float* grads) {
  return ForwardBackwardOf(params, windows, batch, grads);
}

float MlpModel::ForwardBackward(const float* params, const int32_t* rows, int batch,
                                uint64_t /*seed*/, float* grads) {
  return ForwardBackwardOf(params, rows, batch, grads);
}

void MlpModel::NextTokenLogits(const float* params, const int32_t* tokens, int length,
                               float* logits) {
  Reserve(1);
  // The last k tokens, left-padded with token 0; the extra slot stands in for the target
  // ComputeLogits skips. Out-of-range ids are clamped rather than read out of bounds.
  int32_t window[65] = {};  // (k+1), k <= 64
  const int take = std::min(length, context_);
  for (int j = 0; j < take; ++j) {
    window[context_ - take + j] = std::clamp<int32_t>(tokens[length - take + j], 0, vocab_ - 1);
  }
  ComputeLogits(params, window, context_ + 1, /*batch=*/1);
  std::memcpy(logits, logits_.data(), vocab_ * sizeof(float));
}

template <typename Token>
float MlpModel::ForwardBackwardOf(const float* params, const Token* windows, int batch,
                                  float* grads) {
  if (!ValidTokens(windows, batch)) {
    std::fill(grads, grads + num_parameters_, 0.0f);
    return std::numeric_limits<float>::quiet_NaN();
  }
  Reserve(batch);
  const int B = batch, D = input_dim_, E = embedding_dim_, H = hidden_dim_, V = vocab_;
  const int stride = context_ + 1;
  ComputeLogits(params, windows, stride, batch);
  const float loss = SoftmaxLoss(windows, batch);

  const float* wh = params + layout_.hidden_weight;   // (D, H)
  const float* wo = params + layout_.output_weight;   // (H, V)
  float* g_embedding = grads + layout_.embedding;     // (V, E)
  float* g_wh = grads + layout_.hidden_weight;        // (D, H)
  float* g_bh = grads + layout_.hidden_bias;          // (H)
  float* g_wo = grads + layout_.output_weight;        // (H, V)
  float* g_bo = grads + layout_.output_bias;          // (V)
  const float* x = x_.data();  // (B, D)
  const float* h = h_.data();  // (B, H)
  float* dlogits = logits_.data();  // (B, V)
  float* dh = dh_.data();           // (B, H)
  float* dx = dx_.data();           // (B, D)

  // d(mean loss)/d(logits) = (softmax - onehot(target)) / B
  const float inv_batch = 1.0f / B;
  for (int b = 0; b < B; ++b) {
    float* row = dlogits + static_cast<size_t>(b) * V;
    row[windows[static_cast<size_t>(b) * stride + context_]] -= 1.0f;
    for (int v = 0; v < V; ++v) row[v] *= inv_batch;
  }
  // Output layer: dWo = h^T @ dlogits, dbo = sum_b dlogits, dh = dlogits @ Wo^T.
  cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, H, V, B, 1.0f, h, H, dlogits, V, 0.0f, g_wo,
              V);
  SumRows(dlogits, B, V, g_bo);
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, B, H, V, 1.0f, dlogits, V, wo, V, 0.0f, dh,
              H);
  // Through tanh: d(pre) = dh * (1 - h^2).
  for (size_t i = 0, n = static_cast<size_t>(B) * H; i < n; ++i) dh[i] *= 1.0f - h[i] * h[i];
  // Hidden layer: dWh = x^T @ dpre, dbh = sum_b dpre, dx = dpre @ Wh^T.
  cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, D, H, B, 1.0f, x, D, dh, H, 0.0f, g_wh, H);
  SumRows(dh, B, H, g_bh);
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, B, D, H, 1.0f, dh, H, wh, H, 0.0f, dx, D);
  // Embedding: scatter-add each context position's slice of dx into its byte's row.
  std::fill(g_embedding, g_embedding + static_cast<size_t>(V) * E, 0.0f);
  for (int b = 0; b < B; ++b) {
    const Token* window = windows + static_cast<size_t>(b) * stride;
    for (int j = 0; j < context_; ++j) {
      const float* src = dx + static_cast<size_t>(b) * D + j * E;   // (E)
      float* dst = g_embedding + static_cast<size_t>(window[j]) * E;  // (E)
      for (int e = 0; e < E; ++e) dst[e] += src[e];
    }
  }
  return loss;
}

std::string MlpModel::Generate(const float* params, const std::string& prompt, int length,
                               float temperature, uint64_t seed) {
  std::string out;
  if (length <= 0) return out;
  out.reserve(length);
  Reserve(1);
  std::mt19937_64 rng(seed);
  // The last `context_` bytes seen so far; the extra byte stands in for the target ComputeLogits skips.
  std::vector<uint8_t> window(context_ + 1, static_cast<uint8_t>('\n'));  // (k+1)
  const size_t take = std::min(prompt.size(), static_cast<size_t>(context_));
  std::memcpy(window.data() + (context_ - take), prompt.data() + (prompt.size() - take), take);
  // Bytes outside a smaller vocabulary become token 0 rather than reads out of bounds.
  for (uint8_t& byte : window) {
    if (byte >= vocab_) byte = 0;
  }
  const int V = std::min(vocab_, kByteVocab);  // Only byte-sized tokens can be returned.
  std::vector<double> probs(V);  // (V)
  for (int i = 0; i < length; ++i) {
    ComputeLogits(params, window.data(), context_ + 1, /*batch=*/1);
    const float* logits = logits_.data();  // (V)
    const int argmax = static_cast<int>(std::max_element(logits, logits + V) - logits);
    int next = argmax;
    if (temperature > 0.0f) {
      double sum = 0.0;
      for (int v = 0; v < V; ++v) {
        probs[v] = std::exp((static_cast<double>(logits[v]) - logits[argmax]) / temperature);
        sum += probs[v];
      }
      // Rounding can leave u just above the last cumulative sum; then `next` stays the argmax.
      double u = UniformDouble(rng) * sum;
      for (int v = 0; v < V; ++v) {
        u -= probs[v];
        if (u < 0.0) {
          next = v;
          break;
        }
      }
    }
    out.push_back(static_cast<char>(next));
    std::memmove(window.data(), window.data() + 1, context_ - 1);
    window[context_ - 1] = static_cast<uint8_t>(next);
  }
  return out;
}

}  // namespace psrv
