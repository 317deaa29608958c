#include "common/key_range.h"

#include <algorithm>

#include "common/model_layout.h"

namespace psrv {

std::vector<ShardAssignment> PlanShards(const std::vector<TableSpec>& tables,
                                        const std::vector<ServerSlot>& servers,
                                        uint64_t min_shard_elements,
                                        uint64_t min_layer_elements) {
  std::vector<ShardAssignment> shards;
  const uint64_t n = servers.size();
  std::vector<uint64_t> load(n, 0);
  auto add = [&](const TableSpec& table, uint64_t begin, uint64_t end, size_t server) {
    ShardAssignment shard;
    shard.set_table(table.name());
    *shard.mutable_range() = MakeRange(begin, end);
    shard.set_server_id(servers[server].id);
    shard.set_server_address(servers[server].address);
    shards.push_back(std::move(shard));
    load[server] += end - begin;
  };
  auto least_loaded = [&] {
    return static_cast<size_t>(std::min_element(load.begin(), load.end()) - load.begin());
  };
  for (const TableSpec& table : tables) {
    const uint64_t size = TableElements(table);
    if (size == 0) continue;
    const uint64_t layers = table.layers();
    if (layers > 1 && size % layers == 0 && size / layers >= min_layer_elements) {
      const uint64_t slice = size / layers;
      for (uint64_t l = 0; l < layers; ++l) add(table, l * slice, (l + 1) * slice, least_loaded());
      continue;
    }
    if (n > 1 && size >= min_shard_elements * n) {
      // The remainder's extra keys go to the least-loaded servers first.
      std::vector<size_t> order(n);
      for (size_t i = 0; i < n; ++i) order[i] = i;
      std::stable_sort(order.begin(), order.end(),
                       [&](size_t a, size_t b) { return load[a] < load[b]; });
      // A sparse table is cut at row boundaries (its rows are the unit of a row-sparse push).
      const uint64_t w = table.sparse_row_width();
      const uint64_t unit = w > 0 && size % w == 0 ? w : 1;
      const uint64_t units = size / unit;
      std::vector<uint64_t> piece(n, units / n);
      for (uint64_t i = 0; i < units % n; ++i) piece[order[i]] += 1;
      uint64_t begin = 0;
      for (size_t s = 0; s < n; ++s) {
        add(table, begin, begin + piece[s] * unit, s);
        begin += piece[s] * unit;
      }
    } else {
      add(table, 0, size, least_loaded());
    }
  }
  return shards;
}

}  // namespace psrv
