#include "server/shard_spec.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/model_layout.h"
#include "common/names.h"
#include "common/status_macros.h"
#include "server/apply.h"

namespace psrv {

std::string RangeText(const KeyRange& r) { return absl::StrCat("[", r.begin(), ", ", r.end(), ")"); }

bool SameRange(const KeyRange& a, const KeyRange& b) {
  return a.begin() == b.begin() && a.end() == b.end();
}

bool Overlap(const KeyRange& a, const KeyRange& b) {
  return a.begin() < b.end() && b.begin() < a.end();
}

bool SameShard(const ShardConfig& a, const ShardConfig& b) {
  return SameRange(a.range, b.range) && a.consistency == b.consistency &&
         a.num_workers == b.num_workers &&
         a.table.SerializeAsString() == b.table.SerializeAsString() &&
         a.optimizer.SerializeAsString() == b.optimizer.SerializeAsString();
}

absl::Status CheckShardHeader(const std::string& job_id, ConsistencyMode consistency,
                              uint32_t num_workers, const OptimizerConfig& optimizer,
                              uint32_t staleness, uint32_t aggregate_first) {
  RETURN_IF_ERROR(CheckName("job_id", job_id));
  if (consistency != SYNC && consistency != ASYNC && consistency != SSP) {
    return absl::InvalidArgumentError("consistency must be SYNC, ASYNC or SSP");
  }
  if (consistency != SSP && staleness != 0) {
    return absl::InvalidArgumentError("staleness is for SSP jobs");
  }
  if (staleness > kMaxStaleness) {
    return absl::InvalidArgumentError(
        absl::StrCat("staleness must be 0..", kMaxStaleness, ", got ", staleness));
  }
  if (num_workers < 1 || num_workers > kMaxShardWorkers) {
    return absl::InvalidArgumentError(absl::StrCat("num_workers must be 1..", kMaxShardWorkers,
                                                   ", got ", num_workers));
  }
  if (aggregate_first != 0 && consistency != SYNC) {
    return absl::InvalidArgumentError("aggregate_first (backup workers) is for SYNC jobs");
  }
  if (aggregate_first > num_workers) {
    return absl::InvalidArgumentError(absl::StrCat("aggregate_first must be 0..num_workers (",
                                                   num_workers, "), got ", aggregate_first));
  }
  return Optimizer::Validate(optimizer);
}

absl::StatusOr<uint64_t> CheckTableSize(const TableSpec& table) {
  uint64_t size = 1;
  for (uint64_t dim : table.shape()) {
    if (dim != 0 && size > kMaxTableElements / dim) {
      return absl::InvalidArgumentError(
          absl::StrCat("table \"", table.name(), "\" of shape [",
                       absl::StrJoin(table.shape(), ", "), "] has more than ", kMaxTableElements,
                       " elements (2^36)"));
    }
    size *= dim;
  }
  return size;
}

absl::Status CheckShardSpec(const ShardSpec& spec) {
  RETURN_IF_ERROR(CheckName("table name", spec.table().name()));
  ASSIGN_OR_RETURN(const uint64_t size, CheckTableSize(spec.table()));
  if (spec.range().begin() >= spec.range().end() || spec.range().end() > size) {
    return absl::InvalidArgumentError(
        absl::StrCat("range ", RangeText(spec.range()), " of table \"", spec.table().name(),
                     "\" is empty or outside its ", size, " elements"));
  }
  const std::string shard = absl::StrCat("shard ", RangeText(spec.range()), " of table \"",
                                         spec.table().name(), "\"");
  switch (spec.role()) {
    case PRIMARY:
      if (!spec.primary_address().empty()) {
        return absl::InvalidArgumentError(
            absl::StrCat(shard, " is a PRIMARY: primary_address is for backups"));
      }
      return absl::OkStatus();
    case BACKUP:
      if (spec.primary_address().empty()) {
        return absl::InvalidArgumentError(
            absl::StrCat(shard, " is a BACKUP: its primary_address must be set"));
      }
      if (!spec.backup_address().empty()) {
        return absl::InvalidArgumentError(
            absl::StrCat(shard, " is a BACKUP: backup_address is for primaries"));
      }
      return absl::OkStatus();
    default:
      return absl::InvalidArgumentError(absl::StrCat(shard, " has an unknown role"));
  }
}

uint64_t ShardMemoryBytes(const ShardConfig& config) {
  // At most 2^36 elements x 2^18 bytes: no overflow.
  return (config.range.end() - config.range.begin()) *
         ShardBytesPerElement(config.optimizer.kind(), config.consistency, config.num_workers);
}

ShardConfig MakeConfig(const std::string& job_id, ConsistencyMode consistency,
                       const OptimizerConfig& optimizer, uint32_t num_workers,
                       const ShardSpec& spec, uint32_t staleness, uint32_t aggregate_first) {
  ShardConfig config;
  config.job_id = job_id;
  config.table = spec.table();
  config.range = spec.range();
  config.consistency = consistency;
  config.optimizer = optimizer;
  config.num_workers = num_workers;
  config.staleness = staleness;
  config.aggregate_first = aggregate_first;
  return config;
}

}  // namespace psrv
