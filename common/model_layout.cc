#include "common/model_layout.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"

namespace psrv {
namespace {

TableSpec MakeTable(const std::string& name, std::vector<uint64_t> shape, InitSpec::Kind kind,
                    float scale, uint64_t seed, bool weight_decay) {
  TableSpec table;
  table.set_name(name);
  for (uint64_t d : shape) table.add_shape(d);
  table.mutable_init()->set_kind(kind);
  table.mutable_init()->set_scale(scale);
  table.mutable_init()->set_seed(seed);
  table.set_weight_decay(weight_decay);
  return table;
}

}  // namespace

int VocabSize(const ModelSpec& model) {
  if (model.tokenizer() == "char") return static_cast<int>(model.vocabulary().size());
  if (model.tokenizer() == "ids" || model.tokenizer() == "bpe") {
    return static_cast<int>(model.vocab_size());
  }
  return kByteVocabSize;
}

bool GptTableHasWeightDecay(absl::string_view table_name) {
  return table_name == "wte" || table_name == "wpe" || table_name == "lm_head" ||
         table_name == "h.attn.qkv.weight" ||
         table_name == "h.attn.proj.weight" || table_name == "h.mlp.fc.weight" ||
         table_name == "h.mlp.proj.weight";
}

bool TiesEmbeddings(const ModelSpec& model) {
  return !model.has_tie_embeddings() || model.tie_embeddings();
}

std::vector<TableSpec> GptTables(uint64_t layers, uint64_t width, uint64_t context, uint64_t vocab,
                                 uint64_t seed, bool tie_embeddings) {
  const uint64_t L = layers, C = width, T = context, V = vocab;
  constexpr float kStd = 0.02f;
  // GPT-2 scales the residual projections' init by 1/sqrt(number of residual adds).
  const float residual_std = kStd / std::sqrt(2.0f * static_cast<float>(layers));
  std::vector<TableSpec> tables;
  auto add = [&](const std::string& name, std::vector<uint64_t> shape, InitSpec::Kind kind,
                 float scale) {
    tables.push_back(
        MakeTable(name, std::move(shape), kind, scale, seed, GptTableHasWeightDecay(name)));
  };
  add("wte", {V, C}, InitSpec::NORMAL, kStd);
  add("wpe", {T, C}, InitSpec::NORMAL, kStd);
  add("h.ln1.weight", {L, C}, InitSpec::ONES, 0.0f);
  add("h.ln1.bias", {L, C}, InitSpec::ZEROS, 0.0f);
  add("h.attn.qkv.weight", {L, 3 * C, C}, InitSpec::NORMAL, kStd);
  add("h.attn.qkv.bias", {L, 3 * C}, InitSpec::ZEROS, 0.0f);
  add("h.attn.proj.weight", {L, C, C}, InitSpec::NORMAL, residual_std);
  add("h.attn.proj.bias", {L, C}, InitSpec::ZEROS, 0.0f);
  add("h.ln2.weight", {L, C}, InitSpec::ONES, 0.0f);
  add("h.ln2.bias", {L, C}, InitSpec::ZEROS, 0.0f);
  add("h.mlp.fc.weight", {L, 4 * C, C}, InitSpec::NORMAL, kStd);
  add("h.mlp.fc.bias", {L, 4 * C}, InitSpec::ZEROS, 0.0f);
  add("h.mlp.proj.weight", {L, C, 4 * C}, InitSpec::NORMAL, residual_std);
  add("h.mlp.proj.bias", {L, C}, InitSpec::ZEROS, 0.0f);
  add("lnf.weight", {C}, InitSpec::ONES, 0.0f);
  add("lnf.bias", {C}, InitSpec::ZEROS, 0.0f);
  if (!tie_embeddings) {
    add("lm_head", {V, C}, InitSpec::NORMAL, kStd);
    tables[0].set_sparse_row_width(static_cast<uint32_t>(C));  // wte: a row per token.
  }
  for (TableSpec& table : tables) {
    if (table.name().rfind("h.", 0) == 0) table.set_layers(L);  // Stacked per layer: (L, ...).
  }
  return tables;
}

std::vector<TableSpec> MlpTables(const ModelSpec& model, uint64_t vocab, uint64_t seed) {
  const uint64_t k = model.context(), e = model.embedding_dim(), h = model.hidden_dim();
  const uint64_t v = vocab;
  std::vector<TableSpec> tables;
  tables.push_back(MakeTable("embedding", {v, e}, InitSpec::NORMAL, 1.0f, seed, false));
  tables.push_back(MakeTable("hidden.weight", {k * e, h}, InitSpec::NORMAL,
                             1.0f / std::sqrt(static_cast<float>(k * e)), seed, false));
  tables.push_back(MakeTable("hidden.bias", {h}, InitSpec::ZEROS, 0.0f, seed, false));
  tables.push_back(MakeTable("output.weight", {h, v}, InitSpec::NORMAL,
                             0.1f / std::sqrt(static_cast<float>(h)), seed, false));
  tables.push_back(MakeTable("output.bias", {v}, InitSpec::ZEROS, 0.0f, seed, false));
  return tables;
}

absl::StatusOr<std::vector<TableSpec>> ModelTables(const ModelSpec& model, uint64_t seed) {
  const uint64_t vocab = VocabSize(model);
  if (model.kind() == "gpt") {
    return GptTables(model.layers(), model.width(), model.context(), vocab, seed,
                     TiesEmbeddings(model));
  }
  if (model.kind() == "mlp") return MlpTables(model, vocab, seed);
  return absl::InvalidArgumentError(
      absl::StrCat("unknown model kind \"", model.kind(), "\" (known: gpt, mlp)"));
}

uint64_t TableElements(const TableSpec& table) {
  uint64_t n = 1;
  for (uint64_t d : table.shape()) n *= d;
  return n;
}

uint64_t TotalElements(const std::vector<TableSpec>& tables) {
  uint64_t n = 0;
  for (const TableSpec& t : tables) n += TableElements(t);
  return n;
}

uint64_t ShardBytesPerElement(OptimizerKind optimizer, ConsistencyMode consistency,
                              uint32_t num_workers) {
  uint64_t per_element = sizeof(float) + sizeof(float) + sizeof(uint16_t);
  if (optimizer == MOMENTUM) per_element += sizeof(float);
  if (optimizer == ADAMW) per_element += 2 * sizeof(float);
  if (consistency == SYNC) {
    per_element += sizeof(float);
    if (num_workers > 1) per_element += uint64_t{num_workers} * sizeof(float);
  }
  return per_element;
}

absl::StatusOr<uint64_t> JobShardBytes(const JobSpec& spec) {
  absl::StatusOr<std::vector<TableSpec>> tables =
      ModelTables(spec.model(), spec.training().seed());
  if (!tables.ok()) return tables.status();
  const uint64_t per_element =
      ShardBytesPerElement(spec.training().optimizer().kind(), spec.training().consistency(),
                           spec.num_workers()) *
      std::max<uint32_t>(spec.replicas(), 1);
  const uint64_t elements = TotalElements(*tables);
  if (per_element != 0 && elements > UINT64_MAX / per_element) return UINT64_MAX;
  return elements * per_element;
}

}  // namespace psrv
