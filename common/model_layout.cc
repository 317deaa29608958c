#include "common/model_layout.h"

#include <cmath>
#include <string>

#include "absl/strings/str_cat.h"

namespace psrv {
namespace {

TableSpec MakeTable(const std::string& name, std::vector<uint64_t> shape, InitSpec::Kind kind,
                    float scale, uint64_t seed) {
  TableSpec table;
  table.set_name(name);
  for (uint64_t d : shape) table.add_shape(d);
  table.mutable_init()->set_kind(kind);
  table.mutable_init()->set_scale(scale);
  table.mutable_init()->set_seed(seed);
  return table;
}

}  // namespace

absl::StatusOr<std::vector<TableSpec>> ModelTables(const ModelSpec& model, uint64_t seed) {
  if (model.kind() != "mlp") {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown model kind \"", model.kind(), "\" (known: mlp)"));
  }
  const uint64_t k = model.context(), e = model.embedding_dim(), h = model.hidden_dim();
  const uint64_t v = kByteVocabSize;
  std::vector<TableSpec> tables;
  tables.push_back(MakeTable("embedding", {v, e}, InitSpec::NORMAL, 1.0f, seed));
  tables.push_back(MakeTable("hidden.weight", {k * e, h}, InitSpec::NORMAL,
                             1.0f / std::sqrt(static_cast<float>(k * e)), seed));
  tables.push_back(MakeTable("hidden.bias", {h}, InitSpec::ZEROS, 0.0f, seed));
  tables.push_back(MakeTable("output.weight", {h, v}, InitSpec::NORMAL,
                             0.1f / std::sqrt(static_cast<float>(h)), seed));
  tables.push_back(MakeTable("output.bias", {v}, InitSpec::ZEROS, 0.0f, seed));
  return tables;
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

}  // namespace psrv
