#include "worker/parameter_client.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/channel.h"
#include "common/key_range.h"
#include "common/model_layout.h"
#include "worker/shard_targets.h"

namespace psrv {

absl::StatusOr<std::unique_ptr<ParameterClient>> ParameterClient::Create(const ShardMap& shard_map,
                                                                         uint32_t worker_rank,
                                                                         const Options& options) {
  if (options.wire_dtype != FP32 && options.wire_dtype != BF16) {
    return absl::InvalidArgumentError(
        absl::StrCat("wire dtype must be FP32 or BF16, got ", DType_Name(options.wire_dtype)));
  }
  TargetOptions target_options;
  target_options.connections_per_server = std::max(1, options.connections_per_server);
  target_options.max_chunk_bytes = options.max_chunk_bytes;
  target_options.min_split_bytes = options.min_split_bytes;
  absl::StatusOr<TargetPlan> plan = PlanTargets(shard_map, target_options);
  if (!plan.ok()) return plan.status();
  std::unique_ptr<ParameterClient> client(new ParameterClient());
  client->job_id_ = shard_map.job_id();
  client->worker_rank_ = worker_rank;
  client->wire_dtype_ = options.wire_dtype;
  client->num_parameters_ = plan->num_parameters;
  client->table_offsets_ = plan->table_offsets;
  for (const ShardTarget& target : plan->targets) {
    auto& stubs = client->stubs_[target.address];
    while (stubs.size() < static_cast<size_t>(target_options.connections_per_server)) {
      // CreateChannel uses a local subchannel pool: each stub gets its own TCP connection.
      stubs.push_back(std::make_unique<grpc::GenericStub>(
          options.credentials ? CreateChannelWithCredentials(target.address, options.credentials)
                              : CreateChannel(target.address)));
    }
    client->targets_.push_back(Target{target.table, target.range, target.flat_offset,
                                      target.address, stubs[target.connection].get()});
  }
  if (client->wire_dtype_ == BF16) client->wire_buffer_.resize(client->num_parameters_);
  return client;
}

int64_t ParameterClient::TableOffset(const std::string& table) const {
  auto it = table_offsets_.find(table);
  return it == table_offsets_.end() ? -1 : static_cast<int64_t>(it->second);
}

}  // namespace psrv
