// The replication half of ShardStore (shard_store.h): a backup's Replicate and InstallShard, a
// primary's AddBackup, and Promote (the coordinator's fail-over).
#include <algorithm>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <glog/logging.h>

#include "absl/strings/str_cat.h"
#include "common/key_range.h"
#include "common/status_macros.h"
#include "server/checkpoint.h"
#include "server/shard_spec.h"
#include "server/shard_store.h"

namespace psrv {

absl::StatusOr<uint64_t> ShardStore::Replicate(const ReplicateRequest& request,
                                               const char* payload, size_t payload_bytes) {
  ASSIGN_OR_RETURN(std::shared_ptr<Shard> shard,
                   Find(request.job_id(), request.table(), request.range()));
  if (request.version() == 0) {
    return absl::InvalidArgumentError("version must be > 0 (the shard's version after the update)");
  }
  const uint64_t count = RangeSize(request.range());
  if (payload_bytes != count * sizeof(float)) {
    return absl::InvalidArgumentError(
        absl::StrCat("expected ", count * sizeof(float), " bytes (", count,
                     " FP32 values for keys ", RangeText(request.range()), "), got ",
                     payload_bytes));
  }
  return shard->ApplyReplicated(request, reinterpret_cast<const float*>(payload));
}

absl::StatusOr<uint64_t> ShardStore::InstallShard(const InstallShardRequest& request,
                                                  const char* payload, size_t payload_bytes) {
  RETURN_IF_ERROR(CheckShardHeader(request.job_id(), request.consistency(),
                                   request.num_workers(), request.optimizer(),
                                   request.staleness(), request.aggregate_first()));
  const ShardSpec& spec = request.shard();
  RETURN_IF_ERROR(CheckShardSpec(spec));
  if (spec.role() != BACKUP) {
    return absl::InvalidArgumentError("InstallShard installs backups: the shard's role must be BACKUP");
  }
  ShardConfig config = MakeConfig(request.job_id(), request.consistency(), request.optimizer(),
                                  request.num_workers(), spec, request.staleness(),
                                  request.aggregate_first());
  ASSIGN_OR_RETURN(MemoryReservation reservation,
                   ReserveMemory(request.job_id(), ShardMemoryBytes(config)));
  ASSIGN_OR_RETURN(ShardCheckpoint state,
                   DecodeShardCheckpoint(absl::string_view(payload, payload_bytes),
                                         absl::StrCat("sent by ", spec.primary_address())));
  const uint64_t version = state.version;
  ShardReplication replication;
  replication.role = BACKUP;
  replication.primary_address = spec.primary_address();
  auto shard = std::make_shared<Shard>(config, EnvFor(request.job_id()), std::move(replication));
  RETURN_IF_ERROR(shard->Restore(std::move(state)));
  if (request.from_step_size() > 0) {
    RETURN_IF_ERROR(shard->RestoreWorkers(
        std::vector<uint64_t>(request.from_step().begin(), request.from_step().end())));
  }
  shard->RestoreAppliedPushes(
      std::vector<uint64_t>(request.applied_pushes().begin(), request.applied_pushes().end()));
  absl::MutexLock lock(&mu_);
  ASSIGN_OR_RETURN(std::shared_ptr<Shard> held, Overlapping(config));
  if (held != nullptr && held->role() == PRIMARY) {
    return absl::FailedPreconditionError(absl::StrCat(
        "this server holds the PRIMARY of job ", config.job_id, " table \"", config.table.name(),
        "\" ", RangeText(config.range), "; a backup copy cannot replace it"));
  }
  TableShards& shards = jobs_[config.job_id][config.table.name()];
  if (held != nullptr) {
    std::replace(shards.begin(), shards.end(), held, shard);
    memory_bytes_ -= ShardMemoryBytes(held->config());  // The copy it replaces.
  } else {
    shards.push_back(shard);
  }
  reservation.Keep(ShardMemoryBytes(config));
  LOG(INFO) << "job " << config.job_id << " table " << config.table.name() << " "
            << RangeText(config.range) << ": backup of " << spec.primary_address()
            << " installed at version " << version;
  return version;
}

void ShardStore::AddBackup(const AddBackupRequest& request, AddBackupCallback done) {
  absl::StatusOr<std::shared_ptr<Shard>> shard =
      Find(request.job_id(), request.table(), request.range());
  absl::Status invalid = shard.status();
  if (invalid.ok() && !SameRange((*shard)->config().range, request.range())) {
    invalid = absl::NotFoundError(absl::StrCat(
        "no shard of table \"", request.table(), "\" here has exactly keys ",
        RangeText(request.range()), " (the shard holding them is ",
        RangeText((*shard)->config().range), ")"));
  }
  if (invalid.ok()) invalid = CheckBackupAddress(request.backup_address());
  if (!invalid.ok()) {
    done(invalid);
    return;
  }
  (*shard)->AddBackup(BackupAt(request.backup_address()), address(),
                      [done = std::move(done)](absl::StatusOr<uint64_t> version) {
                        if (!version.ok()) {
                          done(version.status());
                          return;
                        }
                        AddBackupResponse response;
                        response.set_version(*version);
                        done(std::move(response));
                      });
}

void ShardStore::Promote(const PromoteRequest& request, PromoteCallback done) {
  absl::Status invalid;
  if (request.job_id().empty() || request.failed_address().empty()) {
    invalid = absl::InvalidArgumentError("job_id and failed_address must be set");
  } else if (!request.new_backup_address().empty()) {
    invalid = CheckBackupAddress(request.new_backup_address());
  }
  std::vector<std::shared_ptr<Shard>> promoted;
  for (auto& shard : AllShards(request.job_id())) {
    if (shard->primary_address() == request.failed_address()) promoted.push_back(std::move(shard));
  }
  if (invalid.ok() && promoted.empty()) {
    invalid = absl::NotFoundError(absl::StrCat("no shard of job \"", request.job_id(),
                                               "\" here backs up ", request.failed_address()));
  }
  if (!invalid.ok()) {
    done(invalid);
    return;
  }
  std::sort(promoted.begin(), promoted.end(), [](const auto& a, const auto& b) {
    return std::make_tuple(a->config().table.name(), a->config().range.begin()) <
           std::make_tuple(b->config().table.name(), b->config().range.begin());
  });
  // Answered once every promoted shard has its new backup (or failed to get it).
  struct Pending {
    absl::Mutex mu;
    size_t remaining ABSL_GUARDED_BY(mu);
    PromoteResponse response ABSL_GUARDED_BY(mu);
    PromoteCallback done;
  };
  auto pending = std::make_shared<Pending>();
  pending->done = std::move(done);
  {
    absl::MutexLock lock(&pending->mu);
    pending->remaining = promoted.size();
    for (const auto& shard : promoted) {
      PromotedShard* out = pending->response.add_shards();
      out->set_table(shard->config().table.name());
      *out->mutable_range() = shard->config().range;
      out->set_version(shard->Promote());
      out->set_backup_address(shard->backup_address());
    }
  }
  if (request.new_backup_address().empty()) {
    absl::MutexLock lock(&pending->mu);
    pending->done(std::move(pending->response));
    return;
  }
  const std::string own_address = address();
  for (size_t i = 0; i < promoted.size(); ++i) {
    promoted[i]->AddBackup(
        BackupAt(request.new_backup_address()), own_address,
        [pending, i, backup = request.new_backup_address()](absl::StatusOr<uint64_t> version) {
          absl::MutexLock lock(&pending->mu);
          PromotedShard* out = pending->response.mutable_shards(static_cast<int>(i));
          if (version.ok()) {
            out->set_backup_address(backup);
          } else {
            out->set_backup_error(version.status().ToString());
          }
          if (--pending->remaining == 0) pending->done(std::move(pending->response));
        });
  }
}

std::shared_ptr<Replicator> ShardStore::BackupAt(const std::string& address) {
  absl::MutexLock lock(&mu_);
  std::shared_ptr<Replicator>& backup = backups_[address];
  if (backup == nullptr) {
    backup = options_.connect_backup ? options_.connect_backup(address)
                                     : std::make_shared<GrpcReplicator>(address, options_.replication);
  }
  return backup;
}

absl::Status ShardStore::CheckBackupAddress(const std::string& address) {
  if (address.empty()) return absl::InvalidArgumentError("backup_address must be set");
  if (address == this->address()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "backup_address ", address, " is this server: a backup must be on another server"));
  }
  return absl::OkStatus();
}

}  // namespace psrv
