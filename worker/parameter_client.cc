#include "worker/parameter_client.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/channel.h"
#include "common/key_range.h"
#include "common/model_layout.h"

namespace psrv {

absl::StatusOr<std::unique_ptr<ParameterClient>> ParameterClient::Create(const ShardMap& shard_map,
                                                                         uint32_t worker_rank,
                                                                         const Options& options) {
  const int connections = std::max(1, options.connections_per_server);
  std::unique_ptr<ParameterClient> client(new ParameterClient());
  client->job_id_ = shard_map.job_id();
  client->worker_rank_ = worker_rank;
  if (options.wire_dtype != FP32 && options.wire_dtype != BF16) {
    return absl::InvalidArgumentError(
        absl::StrCat("wire dtype must be FP32 or BF16, got ", DType_Name(options.wire_dtype)));
  }
  client->wire_dtype_ = options.wire_dtype;
  std::map<std::string, uint64_t> sizes;
  for (const TableSpec& table : shard_map.tables()) {
    client->table_offsets_[table.name()] = client->num_parameters_;
    sizes[table.name()] = TableElements(table);
    client->num_parameters_ += TableElements(table);
  }
  std::map<std::string, uint64_t> covered;
  for (const ShardAssignment& shard : shard_map.shards()) {
    auto offset = client->table_offsets_.find(shard.table());
    if (offset == client->table_offsets_.end() || shard.range().end() > sizes[shard.table()] ||
        RangeSize(shard.range()) == 0) {
      return absl::InvalidArgumentError(absl::StrCat("shard map has a bad shard: table \"",
                                                     shard.table(), "\" range [",
                                                     shard.range().begin(), ", ",
                                                     shard.range().end(), ")"));
    }
    covered[shard.table()] += RangeSize(shard.range());
    auto& stubs = client->stubs_[shard.server_address()];
    while (stubs.size() < static_cast<size_t>(connections)) {
      // CreateChannel uses a local subchannel pool: each stub gets its own TCP connection.
      stubs.push_back(std::make_unique<grpc::GenericStub>(CreateChannel(shard.server_address())));
    }
    const uint64_t keys = RangeSize(shard.range());
    const size_t bytes = keys * sizeof(float);
    uint64_t chunks = (bytes + options.max_chunk_bytes - 1) / options.max_chunk_bytes;
    if (bytes >= 2 * options.min_split_bytes) chunks = std::max<uint64_t>(chunks, connections);
    chunks = std::max<uint64_t>(1, std::min(chunks, keys));
    for (uint64_t c = 0; c < chunks; ++c) {
      const uint64_t begin = shard.range().begin() + keys * c / chunks;
      const uint64_t end = shard.range().begin() + keys * (c + 1) / chunks;
      client->targets_.push_back(Target{shard.table(), MakeRange(begin, end),
                                        offset->second + begin, shard.server_address(),
                                        stubs[c % stubs.size()].get()});
    }
  }
  if (client->wire_dtype_ == BF16) client->wire_buffer_.resize(client->num_parameters_);
  for (const auto& [table, size] : sizes) {
    if (covered[table] != size) {
      return absl::InvalidArgumentError(absl::StrCat("shard map covers ", covered[table], " of ",
                                                     size, " keys of table \"", table, "\""));
    }
  }
  return client;
}

int64_t ParameterClient::TableOffset(const std::string& table) const {
  auto it = table_offsets_.find(table);
  return it == table_offsets_.end() ? -1 : static_cast<int64_t>(it->second);
}

}  // namespace psrv
