#include "worker/parameter_client.h"

#include "absl/strings/str_cat.h"
#include "common/channel.h"
#include "common/key_range.h"
#include "common/model_layout.h"

namespace psrv {

absl::StatusOr<std::unique_ptr<ParameterClient>> ParameterClient::Create(const ShardMap& shard_map,
                                                                         uint32_t worker_rank) {
  std::unique_ptr<ParameterClient> client(new ParameterClient());
  client->job_id_ = shard_map.job_id();
  client->worker_rank_ = worker_rank;
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
    std::unique_ptr<grpc::GenericStub>& stub = client->stubs_[shard.server_address()];
    if (stub == nullptr) {
      stub = std::make_unique<grpc::GenericStub>(CreateChannel(shard.server_address()));
    }
    client->targets_.push_back(Target{shard.table(), shard.range(),
                                      offset->second + shard.range().begin(),
                                      shard.server_address(), stub.get()});
  }
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
