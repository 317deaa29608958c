// Deterministic parameter initialisation: element i of a table gets a value that depends only on
// (seed, table name, i), so a model starts the same however its tables are sharded.
#ifndef PSRV_COMMON_INITIALIZER_H_
#define PSRV_COMMON_INITIALIZER_H_

#include <cstdint>
#include <vector>

#include "proto/types.pb.h"

namespace psrv {

// Writes elements [begin, begin + count) of table `table` into `out` (count floats).
void InitializeRange(const TableSpec& table, uint64_t begin, uint64_t count, float* out);

// The whole model as the servers initialise it: every table of `tables`, concatenated in order (the
// worker's flat parameter buffer).
std::vector<float> InitializeTables(const std::vector<TableSpec>& tables);

}  // namespace psrv

#endif  // PSRV_COMMON_INITIALIZER_H_
