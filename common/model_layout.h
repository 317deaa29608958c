// The parameter tables of each model kind: names, shapes and initialisation. The coordinator uses it
// to shard a job's parameters; the worker uses it to lay them out in one flat buffer.
#ifndef PSRV_COMMON_MODEL_LAYOUT_H_
#define PSRV_COMMON_MODEL_LAYOUT_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "proto/job.pb.h"
#include "proto/types.pb.h"

namespace psrv {

// Byte-level models predict one of 256 byte values.
inline constexpr int kByteVocabSize = 256;

// Tables of `model`, in the order of the worker's flat parameter buffer. For kind "mlp"
// (k = context, E = embedding_dim, H = hidden_dim, V = 256):
//   "embedding"     (V, E)      N(0, 1)
//   "hidden.weight" (k*E, H)    N(0, 1/(k*E))
//   "hidden.bias"   (H)         zeros
//   "output.weight" (H, V)      N(0, 0.01/H)
//   "output.bias"   (V)         zeros
// INVALID_ARGUMENT for an unknown kind.
absl::StatusOr<std::vector<TableSpec>> ModelTables(const ModelSpec& model, uint64_t seed);

// Number of elements of one table (product of its shape).
uint64_t TableElements(const TableSpec& table);

// Sum of TableElements over `tables`.
uint64_t TotalElements(const std::vector<TableSpec>& tables);

}  // namespace psrv

#endif  // PSRV_COMMON_MODEL_LAYOUT_H_
