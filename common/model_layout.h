// The parameter tables of each model kind: names, shapes, initialisation and weight decay. The
// coordinator uses it to shard a job's parameters; the worker lays them out in one flat buffer in
// this order; servers initialise them (common/initializer.h).
#ifndef PSRV_COMMON_MODEL_LAYOUT_H_
#define PSRV_COMMON_MODEL_LAYOUT_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "proto/job.pb.h"
#include "proto/types.pb.h"

namespace psrv {

// Byte-level models predict one of 256 byte values.
inline constexpr int kByteVocabSize = 256;

// Tokens of the model's vocabulary: 256 for tokenizer "byte", the vocabulary's size for "char",
// model.vocab_size for "bpe" and "ids".
int VocabSize(const ModelSpec& model);

// Tables of the "gpt" kind (L layers, width C, context T, vocabulary V), llm.c-style: per-layer
// tables stacked over the layers; weight matrices (out, in) as in PyTorch's Linear.
//   wte                 (V, C)       NORMAL 0.02 (also the output head: logits = x @ wte^T)
//   wpe                 (T, C)       NORMAL 0.02
//   h.ln1.weight        (L, C)       ONES
//   h.ln1.bias          (L, C)       ZEROS
//   h.attn.qkv.weight   (L, 3C, C)   NORMAL 0.02
//   h.attn.qkv.bias     (L, 3C)      ZEROS
//   h.attn.proj.weight  (L, C, C)    NORMAL 0.02/sqrt(2L)
//   h.attn.proj.bias    (L, C)       ZEROS
//   h.ln2.weight        (L, C)       ONES
//   h.ln2.bias          (L, C)       ZEROS
//   h.mlp.fc.weight     (L, 4C, C)   NORMAL 0.02
//   h.mlp.fc.bias       (L, 4C)      ZEROS
//   h.mlp.proj.weight   (L, C, 4C)   NORMAL 0.02/sqrt(2L)
//   h.mlp.proj.bias     (L, C)       ZEROS
//   lnf.weight          (C)          ONES
//   lnf.bias            (C)          ZEROS
//   lm_head             (V, C)       NORMAL 0.02   only untied (tie_embeddings false)
// Every InitSpec carries `seed`; weight_decay is GptTableHasWeightDecay(name); the h.* tables
// have `layers` = L (the shard planner may cut them at layer boundaries). Untied, wte is a sparse
// table of rows of C keys (TableSpec.sparse_row_width = C).
std::vector<TableSpec> GptTables(uint64_t layers, uint64_t width, uint64_t context, uint64_t vocab,
                                 uint64_t seed, bool tie_embeddings = true);

// model.tie_embeddings, true when unset.
bool TiesEmbeddings(const ModelSpec& model);

// As nanoGPT and llm.c: the 2-D parameters (wte, wpe and the four weight matrices per layer) are
// decayed; biases and LayerNorm parameters are not.
bool GptTableHasWeightDecay(absl::string_view table_name);

// Tables of the "mlp" kind (k = context, E = embedding_dim, H = hidden_dim, V = vocab):
//   "embedding"     (V, E)      N(0, 1)
//   "hidden.weight" (k*E, H)    N(0, 1/(k*E))
//   "hidden.bias"   (H)         zeros
//   "output.weight" (H, V)      N(0, 0.01/H)
//   "output.bias"   (V)         zeros
std::vector<TableSpec> MlpTables(const ModelSpec& model, uint64_t vocab, uint64_t seed);

// Tables of `model` (GptTables or MlpTables with VocabSize(model)), in the order of the worker's
// flat parameter buffer. INVALID_ARGUMENT for an unknown kind.
absl::StatusOr<std::vector<TableSpec>> ModelTables(const ModelSpec& model, uint64_t seed);

// Number of elements of one table (product of its shape).
uint64_t TableElements(const TableSpec& table);

// Sum of TableElements over `tables`.
uint64_t TotalElements(const std::vector<TableSpec>& tables);

// Bytes a parameter server holds per element of a shard: the parameters, the copy an update
// makes, the BF16 copy, the optimizer's state, and (SYNC) the sum of a step's pushes and, with
// several workers, each worker's staged push (server/shard.cc; the servers' --max_memory_bytes
// counts shards by it).
uint64_t ShardBytesPerElement(OptimizerKind optimizer, ConsistencyMode consistency,
                              uint32_t num_workers);

// What the shards of a job with `spec` (valid: ValidateJobSpec) take on its servers in all,
// backups included; saturates at UINT64_MAX.
absl::StatusOr<uint64_t> JobShardBytes(const JobSpec& spec);

}  // namespace psrv

#endif  // PSRV_COMMON_MODEL_LAYOUT_H_
