#include "server/shard_store.h"

#include <algorithm>
#include <filesystem>
#include <tuple>
#include <utility>

#include <glog/logging.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "common/bf16.h"
#include "common/buffer_pool.h"
#include "common/key_range.h"
#include "common/safetensors.h"
#include "common/model_layout.h"
#include "common/status_macros.h"
#include "server/apply.h"

namespace psrv {
namespace {

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

// The checks CreateShards and InstallShard share (the request header, then each shard).
absl::Status CheckShardHeader(const std::string& job_id, ConsistencyMode consistency,
                              uint32_t num_workers, const OptimizerConfig& optimizer) {
  if (job_id.empty()) return absl::InvalidArgumentError("job_id must be set");
  if (consistency != SYNC && consistency != ASYNC) {
    return absl::InvalidArgumentError("consistency must be SYNC or ASYNC");
  }
  if (num_workers == 0) return absl::InvalidArgumentError("num_workers must be > 0");
  return Optimizer::Validate(optimizer);
}

absl::Status CheckShardSpec(const ShardSpec& spec) {
  const uint64_t size = TableElements(spec.table());
  if (spec.table().name().empty()) return absl::InvalidArgumentError("a table has no name");
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

ShardConfig MakeConfig(const std::string& job_id, ConsistencyMode consistency,
                       const OptimizerConfig& optimizer, uint32_t num_workers,
                       const ShardSpec& spec) {
  ShardConfig config;
  config.job_id = job_id;
  config.table = spec.table();
  config.range = spec.range();
  config.consistency = consistency;
  config.optimizer = optimizer;
  config.num_workers = num_workers;
  return config;
}

// The files of one SaveCheckpoint, written one by one (each shard's snapshot, as it comes).
struct CheckpointRound {
  absl::Mutex mu;
  size_t remaining ABSL_GUARDED_BY(mu);  // Shards not written yet.
  absl::Status status ABSL_GUARDED_BY(mu);
  SaveCheckpointResponse response ABSL_GUARDED_BY(mu);
  ShardStore::SaveCheckpointCallback done;

  // Writes one shard's file under <directory>/<job>/v<version>/; the last one answers.
  void Write(const std::string& directory, const absl::StatusOr<ShardCheckpoint>& checkpoint) {
    CheckpointFile file;
    absl::Status result = checkpoint.status();
    if (result.ok()) {
      const std::string dir =
          absl::StrCat(directory, "/", checkpoint->job_id, "/v", checkpoint->version);
      result = MakeDirectories(dir);
      file.set_table(checkpoint->table);
      *file.mutable_range() = checkpoint->range;
      file.set_version(checkpoint->version);
      file.set_path(absl::StrCat(dir, "/", checkpoint->table, ".", checkpoint->range.begin(), "-",
                                 checkpoint->range.end(), ".ckpt"));
      if (result.ok()) {
        absl::StatusOr<uint32_t> crc = WriteShardCheckpoint(file.path(), *checkpoint);
        result = crc.status();
        if (crc.ok()) file.set_crc32(*crc);
      }
    }
    absl::MutexLock lock(&mu);
    if (result.ok()) {
      *response.add_files() = std::move(file);
    } else if (status.ok()) {
      status = result;
    }
    if (--remaining > 0) return;
    if (status.ok()) {
      done(std::move(response));
    } else {
      done(status);
    }
  }
};

}  // namespace

size_t WireBytesPerValue(DType dtype) { return dtype == BF16 ? 2 : 4; }

absl::Status MakeDirectories(const std::string& path) {
  std::error_code error;
  std::filesystem::create_directories(path, error);
  if (error) {
    return absl::InternalError(absl::StrCat("cannot create directory ", path, ": ",
                                            error.message()));
  }
  return absl::OkStatus();
}

absl::Status CheckWireDType(DType dtype) {
  switch (dtype) {
    case FP32:
    case BF16:
      return absl::OkStatus();
    case FP16:
      return absl::UnimplementedError(
          absl::StrCat("dtype ", DType_Name(dtype), " is not supported yet; use FP32 or BF16"));
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("dtype must be set (FP32 or BF16), got ", DType_Name(dtype)));
  }
}

ShardStore::ShardStore(Options options)
    : options_(std::move(options)), start_time_ms_(absl::ToUnixMillis(options_.clock())) {
  MetricsRegistry* metrics = options_.metrics;
  if (metrics == nullptr) return;
  staleness_ = metrics->AddHistogram(
      "psrv_push_staleness",
      "Updates applied to a shard between the pull a gradient was computed from and its push "
      "(ASYNC staleness; SYNC: 0).",
      {"job"}, {0, 1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 128, 256});
  step_wait_ = metrics->AddHistogram(
      "psrv_sync_step_wait_seconds",
      "SYNC: seconds from a step's first push to a shard until every worker had pushed it and the "
      "update was applied.",
      {"job"}, LatencyBuckets());
  pull_wait_ = metrics->AddHistogram(
      "psrv_sync_pull_wait_seconds",
      "SYNC: seconds a pull waited for the previous step to be applied (0 when it was).", {"job"},
      LatencyBuckets());
  metrics->AddCollector([this](CollectedMetrics* out) { CollectMetrics(out); });
}

ShardEnv ShardStore::EnvFor(const std::string& job_id) {
  ShardEnv env;
  env.clock = options_.clock;
  if (options_.metrics != nullptr) {
    env.staleness = staleness_->Get({job_id});
    env.step_wait = step_wait_->Get({job_id});
    env.pull_wait = pull_wait_->Get({job_id});
  }
  return env;
}

void ShardStore::CollectMetrics(CollectedMetrics* out) {
  const std::vector<std::string> labels = {"job", "table", "range"};
  auto counter = [&](const char* name, const char* help) {
    return out->AddCounter(name, help, labels);
  };
  auto gauge = [&](const char* name, const char* help) {
    return out->AddGauge(name, help, labels);
  };
  CollectedMetrics::Family* pushes = counter("psrv_shard_pushes_total", "Pushes accepted.");
  CollectedMetrics::Family* pulls = counter("psrv_shard_pulls_total", "Pulls answered or waiting.");
  CollectedMetrics::Family* bytes_in =
      counter("psrv_shard_push_bytes_total", "Gradient bytes of accepted pushes (as FP32).");
  CollectedMetrics::Family* bytes_out =
      counter("psrv_shard_pull_bytes_total", "Parameter bytes of pulls (as FP32).");
  CollectedMetrics::Family* rejected =
      counter("psrv_shard_rejected_pushes_total", "Pushes refused (bad input, stale step...).");
  CollectedMetrics::Family* version =
      gauge("psrv_shard_version", "Updates applied to the shard (SYNC: steps).");
  CollectedMetrics::Family* elements = gauge("psrv_shard_elements", "Keys in the shard's range.");
  CollectedMetrics::Family* memory = gauge(
      "psrv_shard_memory_bytes", "Parameters, optimizer state and aggregation buffer, in bytes.");
  CollectedMetrics::Family* pending =
      gauge("psrv_shard_pending_pushes", "SYNC: pushes received for the step being aggregated.");
  CollectedMetrics::Family* waiting = gauge(
      "psrv_shard_waiting_workers",
      "SYNC: workers that have not pushed all of the step being aggregated (0 before its first "
      "push).");
  CollectedMetrics::Family* waiting_seconds =
      gauge("psrv_shard_step_waiting_seconds",
            "SYNC: how long the step being aggregated has waited since its first push.");
  CollectedMetrics::Family* updated = gauge("psrv_shard_last_update_timestamp_seconds",
                                            "Unix time of the last update; 0 if none.");
  CollectedMetrics::Family* rejected_at =
      gauge("psrv_shard_last_rejected_push_timestamp_seconds",
            "Unix time of the last rejected push; 0 if none.");
  const ServerStatus status = Status("");
  out->AddGauge("psrv_server_info",
                "1, labelled with the server's id (from the coordinator) and the address it "
                "registered.",
                {"server_id", "address"})
      ->Add({status.server_id(), status.address()}, 1);
  for (const ShardStatus& shard : status.shards()) {
    const std::vector<std::string> values = {
        shard.job_id(), shard.table(),
        absl::StrCat("[", shard.range().begin(), ",", shard.range().end(), ")")};
    pushes->Add(values, static_cast<double>(shard.pushes()));
    pulls->Add(values, static_cast<double>(shard.pulls()));
    bytes_in->Add(values, static_cast<double>(shard.bytes_in()));
    bytes_out->Add(values, static_cast<double>(shard.bytes_out()));
    rejected->Add(values, static_cast<double>(shard.rejected_pushes()));
    version->Add(values, static_cast<double>(shard.version()));
    elements->Add(values, static_cast<double>(shard.elements()));
    memory->Add(values, static_cast<double>(shard.bytes()));
    pending->Add(values, shard.pending_pushes());
    waiting->Add(values, shard.waiting_for_workers_size());
    waiting_seconds->Add(values, shard.waiting_ms() / 1000.0);
    updated->Add(values, shard.last_update_ms() / 1000.0);
    rejected_at->Add(values, shard.last_error_ms() / 1000.0);
  }
}

void ShardStore::SetIdentity(const std::string& server_id, const std::string& address) {
  absl::MutexLock lock(&mu_);
  server_id_ = server_id;
  address_ = address;
}

absl::Status ShardStore::CreateShards(const CreateShardsRequest& request) {
  RETURN_IF_ERROR(CheckShardHeader(request.job_id(), request.consistency(), request.num_workers(),
                                   request.optimizer()));
  if (request.shards().empty()) return absl::InvalidArgumentError("no shards in the request");
  std::vector<ShardConfig> configs;
  for (const ShardSpec& spec : request.shards()) {
    RETURN_IF_ERROR(CheckShardSpec(spec));
    if (!spec.backup_address().empty()) RETURN_IF_ERROR(CheckBackupAddress(spec.backup_address()));
    for (const ShardConfig& other : configs) {
      if (other.table.name() == spec.table().name() && Overlap(other.range, spec.range())) {
        return absl::InvalidArgumentError(absl::StrCat(
            "shards ", RangeText(other.range), " and ", RangeText(spec.range()), " of table \"",
            spec.table().name(), "\" overlap"));
      }
    }
    configs.push_back(MakeConfig(request.job_id(), request.consistency(), request.optimizer(),
                                 request.num_workers(), spec));
    configs.back().position = static_cast<uint32_t>(configs.size() - 1);
  }
  // Only shards not held yet are built (an identical request is idempotent).
  std::vector<size_t> missing;
  {
    absl::MutexLock lock(&mu_);
    for (size_t i = 0; i < configs.size(); ++i) {
      ASSIGN_OR_RETURN(std::shared_ptr<Shard> held, HeldShard(configs[i]));
      if (held == nullptr) missing.push_back(i);
    }
  }
  if (missing.empty()) return absl::OkStatus();
  // Build outside the lock (initialisation touches every element), insert under it.
  std::vector<std::shared_ptr<Shard>> created;
  for (size_t i : missing) {
    const ShardSpec& spec = request.shards(static_cast<int>(i));
    ShardReplication replication;
    replication.role = spec.role();
    replication.primary_address = spec.primary_address();
    if (!spec.backup_address().empty()) replication.backup = BackupAt(spec.backup_address());
    created.push_back(std::make_shared<Shard>(configs[i], EnvFor(request.job_id()),
                                              std::move(replication)));
  }
  // Initial values from a safetensors file (a model exported by psctl): all or nothing.
  if (!request.init_from_safetensors().empty()) {
    absl::StatusOr<std::vector<NamedTensor>> tensors =
        ReadSafetensors(request.init_from_safetensors());
    if (!tensors.ok()) return tensors.status();
    for (const auto& shard : created) {
      const TableSpec& table = shard->config().table;
      const std::vector<uint64_t> shape(table.shape().begin(), table.shape().end());
      auto tensor = std::find_if(tensors->begin(), tensors->end(),
                                 [&](const NamedTensor& t) { return t.name == table.name(); });
      if (tensor == tensors->end()) {
        return absl::InvalidArgumentError(absl::StrCat(request.init_from_safetensors(),
                                                       " has no tensor \"", table.name(), "\""));
      }
      if (tensor->shape != shape) {
        return absl::InvalidArgumentError(absl::StrCat(
            "tensor \"", table.name(), "\" of ", request.init_from_safetensors(), " has shape [",
            absl::StrJoin(tensor->shape, ", "), "], the model's table [",
            absl::StrJoin(shape, ", "), "]"));
      }
      shard->LoadValues(tensor->values.data() + shard->config().range.begin());
    }
  }
  // Restore from checkpoint files: all or nothing.
  for (const CheckpointFile& file : request.restore_from()) {
    auto matches = [&file](const ShardConfig& c) {
      return c.table.name() == file.table() && SameRange(c.range, file.range());
    };
    auto target = std::find_if(created.begin(), created.end(),
                               [&](const auto& shard) { return matches(shard->config()); });
    if (target == created.end()) {
      if (std::any_of(configs.begin(), configs.end(), matches)) continue;  // Held already.
      return absl::InvalidArgumentError(absl::StrCat("checkpoint file ", file.path(),
                                                     " matches no shard of the request"));
    }
    const uint32_t crc = file.crc32();
    absl::StatusOr<ShardCheckpoint> checkpoint =
        ReadShardCheckpoint(file.path(), crc != 0 ? &crc : nullptr);
    if (!checkpoint.ok()) return checkpoint.status();
    RETURN_IF_ERROR((*target)->Restore(std::move(*checkpoint)));
  }
  absl::MutexLock lock(&mu_);
  // Checked again: a concurrent request may have created some meanwhile.
  std::vector<std::shared_ptr<Shard>> added;
  for (auto& shard : created) {
    ASSIGN_OR_RETURN(std::shared_ptr<Shard> held, HeldShard(shard->config()));
    if (held == nullptr) added.push_back(std::move(shard));
  }
  JobTables& tables = jobs_[request.job_id()];
  for (auto& shard : added) tables[shard->config().table.name()].push_back(std::move(shard));
  return absl::OkStatus();
}

absl::StatusOr<std::shared_ptr<Shard>> ShardStore::Overlapping(const ShardConfig& config) {
  auto job = jobs_.find(config.job_id);
  if (job == jobs_.end()) return nullptr;
  auto table = job->second.find(config.table.name());
  if (table == job->second.end()) return nullptr;
  for (const auto& shard : table->second) {
    const KeyRange& range = shard->config().range;
    if (SameRange(range, config.range)) return shard;
    if (Overlap(range, config.range)) {
      return absl::AlreadyExistsError(absl::StrCat(
          "job ", config.job_id, " already has a different shard of table \"",
          config.table.name(), "\" here: ", RangeText(range), " overlaps ",
          RangeText(config.range)));
    }
  }
  return nullptr;
}

absl::StatusOr<std::shared_ptr<Shard>> ShardStore::HeldShard(const ShardConfig& config) {
  ASSIGN_OR_RETURN(std::shared_ptr<Shard> held, Overlapping(config));
  if (held != nullptr && !SameShard(held->config(), config)) {
    return absl::AlreadyExistsError(absl::StrCat(
        "job ", config.job_id, " already has a different shard of table \"", config.table.name(),
        "\" here: ", RangeText(config.range), " with another configuration"));
  }
  return held;
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

std::string ShardStore::address() {
  absl::MutexLock lock(&mu_);
  return address_;
}

absl::Status ShardStore::CheckBackupAddress(const std::string& address) {
  if (address.empty()) return absl::InvalidArgumentError("backup_address must be set");
  if (address == this->address()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "backup_address ", address, " is this server: a backup must be on another server"));
  }
  return absl::OkStatus();
}

absl::Status ShardStore::DropJob(const std::string& job_id) {
  JobTables tables;
  {
    absl::MutexLock lock(&mu_);
    auto it = jobs_.find(job_id);
    if (it == jobs_.end()) {
      return absl::NotFoundError(absl::StrCat("job ", job_id, " has no shards on this server"));
    }
    tables = std::move(it->second);
    jobs_.erase(it);
  }
  for (auto& [name, shards] : tables) {
    for (auto& shard : shards) shard->CancelWaiters(absl::CancelledError("job was dropped"));
  }
  return absl::OkStatus();
}

absl::Status ShardStore::SetWorkers(const SetWorkersRequest& request) {
  std::vector<std::shared_ptr<Shard>> shards = AllShards(request.job_id());
  if (shards.empty()) {
    return absl::NotFoundError(
        absl::StrCat("job ", request.job_id(), " has no shards on this server"));
  }
  const std::vector<uint64_t> from_step(request.from_step().begin(), request.from_step().end());
  for (const auto& shard : shards) RETURN_IF_ERROR(shard->CheckSetWorkers(from_step));
  for (const auto& shard : shards) RETURN_IF_ERROR(shard->SetWorkers(from_step));
  return absl::OkStatus();
}

absl::StatusOr<std::shared_ptr<Shard>> ShardStore::Find(const std::string& job_id,
                                                        const std::string& table,
                                                        const KeyRange& range) {
  if (range.begin() >= range.end()) {
    return absl::InvalidArgumentError(
        absl::StrCat("key range ", RangeText(range), " is empty"));
  }
  absl::MutexLock lock(&mu_);
  auto job = jobs_.find(job_id);
  if (job == jobs_.end()) {
    return absl::NotFoundError(absl::StrCat("job \"", job_id, "\" has no shards on this server"));
  }
  auto shards = job->second.find(table);
  if (shards == job->second.end()) {
    return absl::NotFoundError(
        absl::StrCat("job ", job_id, " has no table \"", table, "\" on this server"));
  }
  std::string held;
  for (const auto& shard : shards->second) {
    if (RangeContains(shard->config().range, range)) return shard;
    absl::StrAppend(&held, held.empty() ? "" : ", ", RangeText(shard->config().range));
  }
  return absl::NotFoundError(absl::StrCat("no shard of table \"", table, "\" here holds keys ",
                                          RangeText(range), " (this server holds ", held, ")"));
}

void ShardStore::Pull(const PullRequest& request, PullCallback done) {
  if (absl::Status s = CheckWireDType(request.dtype()); !s.ok()) {
    done(s, 0, PullPayload());
    return;
  }
  absl::StatusOr<std::shared_ptr<Shard>> shard =
      Find(request.job_id(), request.table(), request.range());
  if (!shard.ok()) {
    done(shard.status(), 0, PullPayload());
    return;
  }
  if (request.worker_rank() >= (*shard)->config().num_workers) {
    done(absl::InvalidArgumentError(absl::StrCat("worker_rank ", request.worker_rank(),
                                                 " is out of range: the job has ",
                                                 (*shard)->config().num_workers, " workers")),
         0, PullPayload());
    return;
  }
  (*shard)->Pull(request, std::move(done));  // In the request's dtype.
}

void ShardStore::Push(const PushRequest& request, PooledBuffer payload, PushCallback done) {
  absl::StatusOr<std::shared_ptr<Shard>> shard =
      Find(request.job_id(), request.table(), request.range());
  if (!shard.ok()) {
    done(shard.status());
    return;
  }
  const uint64_t count = RangeSize(request.range());
  absl::Status invalid = CheckWireDType(request.dtype());
  const size_t expected = count * WireBytesPerValue(request.dtype());
  if (invalid.ok() && payload.size() != expected) {
    invalid = absl::InvalidArgumentError(absl::StrCat(
        "expected ", expected, " bytes (", count, " ", DType_Name(request.dtype()),
        " values for keys ", RangeText(request.range()), "), got ", payload.size()));
  }
  if (invalid.ok() && request.worker_rank() >= (*shard)->config().num_workers) {
    invalid = absl::InvalidArgumentError(absl::StrCat("worker_rank ", request.worker_rank(),
                                                      " is out of range: the job has ",
                                                      (*shard)->config().num_workers, " workers"));
  }
  if (!invalid.ok()) {
    (*shard)->RecordRejectedPush(request, invalid);
    done(invalid);
    return;
  }
  (*shard)->Push(request, std::move(payload), std::move(done));  // In the request's dtype.
}

absl::Status ShardStore::CommitStep(const CommitStepRequest& request) {
  std::vector<std::shared_ptr<Shard>> shards = AllShards(request.job_id());
  if (request.job_id().empty() || shards.empty()) {
    return absl::NotFoundError(
        absl::StrCat("job \"", request.job_id(), "\" has no shards on this server"));
  }
  if (request.worker_rank() >= shards.front()->config().num_workers) {
    return absl::InvalidArgumentError(absl::StrCat("worker_rank ", request.worker_rank(),
                                                   " is out of range: the job has ",
                                                   shards.front()->config().num_workers,
                                                   " workers"));
  }
  // A backup applies only what its primary replicates.
  shards.erase(std::remove_if(shards.begin(), shards.end(),
                              [](const auto& shard) { return shard->role() == BACKUP; }),
               shards.end());
  if (shards.empty()) {
    return absl::UnavailableError(absl::StrCat(
        "this server holds only backups of job ", request.job_id(), "'s shards"));
  }
  // The shards that this commit completes apply their step here, several at a time, in the order
  // forward reads them (the first layers' pulls are answered first).
  std::sort(shards.begin(), shards.end(), [](const auto& a, const auto& b) {
    return a->config().position < b->config().position;
  });
  std::vector<absl::Status> results(shards.size());
  ParallelChunks(shards.size(), 1, [&](size_t begin, size_t end) {
    for (size_t i = begin; i < end; ++i) {
      results[i] = shards[i]->Commit(request.worker_rank(), request.step(), request.grad_scale());
    }
  });
  // OK if any shard took it and none refused; ALREADY_EXISTS if every one had it already.
  bool taken = false;
  for (const absl::Status& result : results) {
    if (result.ok()) {
      taken = true;
    } else if (!absl::IsAlreadyExists(result)) {
      return result;
    }
  }
  return taken ? absl::OkStatus() : results.front();
}

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
                                   request.num_workers(), request.optimizer()));
  const ShardSpec& spec = request.shard();
  RETURN_IF_ERROR(CheckShardSpec(spec));
  if (spec.role() != BACKUP) {
    return absl::InvalidArgumentError("InstallShard installs backups: the shard's role must be BACKUP");
  }
  ASSIGN_OR_RETURN(ShardCheckpoint state,
                   DecodeShardCheckpoint(absl::string_view(payload, payload_bytes),
                                         absl::StrCat("sent by ", spec.primary_address())));
  const uint64_t version = state.version;
  ShardConfig config = MakeConfig(request.job_id(), request.consistency(), request.optimizer(),
                                  request.num_workers(), spec);
  ShardReplication replication;
  replication.role = BACKUP;
  replication.primary_address = spec.primary_address();
  auto shard = std::make_shared<Shard>(config, EnvFor(request.job_id()), std::move(replication));
  RETURN_IF_ERROR(shard->Restore(std::move(state)));
  if (request.from_step_size() > 0) {
    RETURN_IF_ERROR(shard->RestoreWorkers(
        std::vector<uint64_t>(request.from_step().begin(), request.from_step().end())));
  }
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
  } else {
    shards.push_back(shard);
  }
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

void ShardStore::SaveCheckpoint(const SaveCheckpointRequest& request, SaveCheckpointCallback done) {
  if (request.directory().empty()) {
    done(absl::InvalidArgumentError("directory must be set"));
    return;
  }
  std::vector<std::shared_ptr<Shard>> shards = AllShards(request.job_id());
  if (request.job_id().empty() || shards.empty()) {
    done(absl::NotFoundError(
        absl::StrCat("job \"", request.job_id(), "\" has no shards on this server")));
    return;
  }
  // A backup is a copy of a shard its primary checkpoints.
  shards.erase(std::remove_if(shards.begin(), shards.end(),
                              [](const auto& shard) { return shard->role() == BACKUP; }),
               shards.end());
  if (shards.empty()) {
    done(SaveCheckpointResponse());
    return;
  }
  // Every shard answers (maybe later, from the thread that applies its update) with a snapshot,
  // which the writer thread writes (never a gRPC thread); the last file written calls `done`.
  auto round = std::make_shared<CheckpointRound>();
  round->remaining = shards.size();
  round->done = std::move(done);
  const std::string directory = request.directory();
  for (const auto& shard : shards) {
    shard->Snapshot(request.version(), [this, round, directory](
                                           absl::StatusOr<ShardCheckpoint> snapshot) {
      auto taken = std::make_shared<absl::StatusOr<ShardCheckpoint>>(std::move(snapshot));
      checkpoint_writer_.Run([round, directory, taken] { round->Write(directory, *taken); });
    });
  }
}

std::vector<std::string> ShardStore::JobIds() {
  absl::MutexLock lock(&mu_);
  std::vector<std::string> ids;
  for (const auto& [job, tables] : jobs_) ids.push_back(job);
  return ids;
}

std::vector<std::shared_ptr<Shard>> ShardStore::AllShards(const std::string& job_id) {
  std::vector<std::shared_ptr<Shard>> all;
  absl::MutexLock lock(&mu_);
  for (const auto& [job, tables] : jobs_) {
    if (!job_id.empty() && job != job_id) continue;
    for (const auto& [name, shards] : tables) all.insert(all.end(), shards.begin(), shards.end());
  }
  return all;
}

ServerStatus ShardStore::Status(const std::string& job_id) {
  ServerStatus status;
  {
    absl::MutexLock lock(&mu_);
    status.set_server_id(server_id_);
    status.set_address(address_);
  }
  status.set_start_time_ms(start_time_ms_);
  std::vector<ShardStatus> shards;
  for (const auto& shard : AllShards(job_id)) shards.push_back(shard->Status());
  std::sort(shards.begin(), shards.end(), [](const ShardStatus& a, const ShardStatus& b) {
    return std::make_tuple(a.job_id(), a.table(), a.range().begin()) <
           std::make_tuple(b.job_id(), b.table(), b.range().begin());
  });
  for (auto& s : shards) *status.add_shards() = std::move(s);
  return status;
}

void ShardStore::CancelAllWaiters() {
  for (const auto& shard : AllShards("")) {
    shard->CancelWaiters(absl::UnavailableError("the server is shutting down"));
  }
}

}  // namespace psrv
