#include "worker/shard_targets.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/key_range.h"
#include "common/model_layout.h"

namespace psrv {

absl::StatusOr<TargetPlan> PlanTargets(const ShardMap& map, const TargetOptions& options) {
  const int connections = std::max(1, options.connections_per_server);
  const bool whole = options.part.empty();
  TargetPlan plan;
  std::map<std::string, uint64_t> sizes, first_key, row_width;
  for (const TableSpec& table : map.tables()) {
    row_width[table.name()] = table.sparse_row_width();
    uint64_t begin = 0, end = TableElements(table);
    if (!whole) {
      auto kept = options.part.find(table.name());
      if (kept == options.part.end()) continue;
      if (kept->second.end() > end || RangeSize(kept->second) == 0) {
        return absl::InvalidArgumentError(absl::StrCat(
            "the part of table \"", table.name(), "\" [", kept->second.begin(), ", ",
            kept->second.end(), ") is not within its ", end, " keys"));
      }
      begin = kept->second.begin();
      end = kept->second.end();
    }
    plan.table_offsets[table.name()] = plan.num_parameters;
    first_key[table.name()] = begin;
    sizes[table.name()] = end - begin;
    plan.num_parameters += end - begin;
  }
  if (!whole && sizes.size() != options.part.size()) {
    return absl::InvalidArgumentError("the part names a table the shard map does not have");
  }
  std::map<std::string, uint64_t> covered;
  for (const ShardAssignment& shard : map.shards()) {
    auto offset = plan.table_offsets.find(shard.table());
    if (!whole && offset == plan.table_offsets.end()) {
      bool known = false;
      for (const TableSpec& table : map.tables()) known |= table.name() == shard.table();
      if (known) continue;  // Another stage's table.
    }
    const uint64_t first = offset == plan.table_offsets.end() ? 0 : first_key[shard.table()];
    if (!whole && offset != plan.table_offsets.end()) {
      const uint64_t last = first + sizes[shard.table()];
      if (shard.range().end() <= first || shard.range().begin() >= last) continue;  // Not ours.
      if (shard.range().begin() < first || shard.range().end() > last) {
        return absl::InvalidArgumentError(absl::StrCat(
            "shard [", shard.range().begin(), ", ", shard.range().end(), ") of table \"",
            shard.table(), "\" straddles the end of this stage's part [", first, ", ", last,
            ")"));
      }
    }
    if (offset == plan.table_offsets.end() ||
        shard.range().end() > first_key[shard.table()] + sizes[shard.table()] ||
        RangeSize(shard.range()) == 0) {
      return absl::InvalidArgumentError(absl::StrCat("shard map has a bad shard: table \"",
                                                     shard.table(), "\" range [",
                                                     shard.range().begin(), ", ",
                                                     shard.range().end(), ")"));
    }
    covered[shard.table()] += RangeSize(shard.range());
    const uint64_t keys = RangeSize(shard.range());
    const size_t bytes = keys * sizeof(float);
    uint64_t chunks = (bytes + options.max_chunk_bytes - 1) / options.max_chunk_bytes;
    if (bytes >= 2 * options.min_split_bytes) chunks = std::max<uint64_t>(chunks, connections);
    // A sparse table's shard that starts and ends at row boundaries is cut into whole rows, and
    // its targets push only the rows with a gradient (ShardTarget.row_width).
    const uint64_t w = row_width[shard.table()];
    const uint64_t unit =
        w > 0 && shard.range().begin() % w == 0 && keys % w == 0 ? w : 1;
    const uint64_t units = keys / unit;
    chunks = std::max<uint64_t>(1, std::min(chunks, units));
    for (uint64_t c = 0; c < chunks; ++c) {
      const uint64_t begin = shard.range().begin() + units * c / chunks * unit;
      const uint64_t end = shard.range().begin() + units * (c + 1) / chunks * unit;
      ShardTarget target{shard.table(), MakeRange(begin, end),
                         offset->second + begin - first, shard.server_address(),
                         static_cast<int>(c % connections),
                         options.pull_only.count(shard.table()) > 0};
      target.row_width = unit > 1 ? static_cast<uint32_t>(unit) : 0;
      plan.targets.push_back(std::move(target));
    }
  }
  for (const auto& [table, size] : sizes) {
    if (covered[table] != size) {
      return absl::InvalidArgumentError(absl::StrCat("shard map covers ", covered[table], " of the ",
                                                     size, " keys of table \"", table, "\""));
    }
  }
  std::stable_sort(plan.targets.begin(), plan.targets.end(),
                   [](const ShardTarget& a, const ShardTarget& b) {
                     return a.flat_offset < b.flat_offset;
                   });
  // Equal counts can hide an overlap that makes up for a gap: the chunks must tile the buffer.
  uint64_t next = 0;
  for (const ShardTarget& target : plan.targets) {
    if (target.flat_offset != next) {
      return absl::InvalidArgumentError(absl::StrCat("shard map has overlapping shards of table \"",
                                                     target.table, "\" at key ",
                                                     target.range.begin()));
    }
    next += target.count();
  }
  return plan;
}

}  // namespace psrv
