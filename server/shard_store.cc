// ShardStore (shard_store.h): the shards of every job on this server, CreateShards, DropJob,
// routing of pushes and pulls, status and metrics. Replication RPCs: shard_store_replication.cc;
// checkpoints: shard_store_checkpoint.cc.
#include "server/shard_store.h"

#include <algorithm>
#include <tuple>
#include <utility>

#include <glog/logging.h>

#include "absl/random/random.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "common/bf16.h"
#include "common/buffer_pool.h"
#include "common/files.h"
#include "common/key_range.h"
#include "common/safetensors.h"
#include "common/model_layout.h"
#include "common/names.h"
#include "common/status_macros.h"
#include "server/apply.h"
#include "server/shard_spec.h"

namespace psrv {

size_t WireBytesPerValue(DType dtype) { return dtype == BF16 ? 2 : 4; }

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
    : options_(std::move(options)),
      start_time_ms_(absl::ToUnixMillis(options_.clock())),
      incarnation_(absl::Uniform<uint64_t>(absl::BitGen(), 1, UINT64_MAX)) {
  MetricsRegistry* metrics = options_.metrics;
  if (metrics == nullptr) return;
  staleness_ = metrics->AddHistogram(
      "psrv_push_staleness",
      "Updates applied to a shard between the pull a gradient was computed from and its push "
      "(ASYNC and SSP staleness; SYNC: 0).",
      {"job"}, {0, 1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 128, 256});
  step_wait_ = metrics->AddHistogram(
      "psrv_sync_step_wait_seconds",
      "SYNC: seconds from a step's first push to a shard until every worker had pushed it and the "
      "update was applied.",
      {"job"}, LatencyBuckets());
  pull_wait_ = metrics->AddHistogram(
      "psrv_sync_pull_wait_seconds",
      "SYNC: seconds a pull waited for the previous step to be applied (0 when it was); SSP: "
      "for the slowest worker to come within the staleness bound (the time a worker was blocked).",
      {"job"},
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
  CollectedMetrics::Family* late = counter(
      "psrv_shard_late_pushes_total",
      "SYNC with backup workers (aggregate_first): pushes dropped because their step was applied "
      "without them.");
  CollectedMetrics::Family* ssp_blocked = counter(
      "psrv_shard_ssp_blocked_seconds_total",
      "SSP: seconds pulls waited for the slowest worker (or an update on its way to the backup).");
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
    late->Add(values, static_cast<double>(shard.late_pushes()));
    ssp_blocked->Add(values, shard.blocked_seconds());
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
                                   request.optimizer(), request.staleness(),
                                   request.aggregate_first()));
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
                                 request.num_workers(), spec, request.staleness(),
                                 request.aggregate_first()));
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
  uint64_t need = 0;
  for (size_t i : missing) need += ShardMemoryBytes(configs[i]);  // Each < 2^55: no overflow.
  ASSIGN_OR_RETURN(MemoryReservation reservation, ReserveMemory(request.job_id(), need));
  std::string init_from;
  if (!request.init_from_safetensors().empty()) {
    ASSIGN_OR_RETURN(init_from, ConfinedPath(request.init_from_safetensors()));
  }
  for (const CheckpointFile& file : request.restore_from()) {
    RETURN_IF_ERROR(ConfinedPath(file.path()).status());
  }
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
  if (!init_from.empty()) RETURN_IF_ERROR(InitializeFrom(init_from, created));
  RETURN_IF_ERROR(RestoreFrom(request, configs, created));
  absl::MutexLock lock(&mu_);
  // Checked again: a concurrent request may have created some meanwhile.
  std::vector<std::shared_ptr<Shard>> added;
  for (auto& shard : created) {
    ASSIGN_OR_RETURN(std::shared_ptr<Shard> held, HeldShard(shard->config()));
    if (held == nullptr) added.push_back(std::move(shard));
  }
  JobTables& tables = jobs_[request.job_id()];
  for (auto& shard : added) {
    reservation.Keep(ShardMemoryBytes(shard->config()));
    tables[shard->config().table.name()].push_back(std::move(shard));
  }
  return absl::OkStatus();
}

absl::Status ShardStore::InitializeFrom(const std::string& path,
                                        const std::vector<std::shared_ptr<Shard>>& created) {
  // Initial values from a safetensors file (a model exported by psctl): all or nothing.
  ASSIGN_OR_RETURN(std::vector<NamedTensor> tensors, ReadSafetensors(path));
  for (const auto& shard : created) {
    const TableSpec& table = shard->config().table;
    const std::vector<uint64_t> shape(table.shape().begin(), table.shape().end());
    auto tensor = std::find_if(tensors.begin(), tensors.end(),
                               [&](const NamedTensor& t) { return t.name == table.name(); });
    if (tensor == tensors.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, " has no tensor \"", table.name(), "\""));
    }
    if (tensor->shape != shape) {
      return absl::InvalidArgumentError(absl::StrCat(
          "tensor \"", table.name(), "\" of ", path, " has shape [",
          absl::StrJoin(tensor->shape, ", "), "], the model's table [", absl::StrJoin(shape, ", "),
          "]"));
    }
    shard->LoadValues(tensor->values.data() + shard->config().range.begin());
  }
  return absl::OkStatus();
}

absl::Status ShardStore::RestoreFrom(const CreateShardsRequest& request,
                                     const std::vector<ShardConfig>& configs,
                                     const std::vector<std::shared_ptr<Shard>>& created) {
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
    ASSIGN_OR_RETURN(const std::string path, ConfinedPath(file.path()));
    const uint32_t crc = file.crc32();
    absl::StatusOr<ShardCheckpoint> checkpoint =
        ReadShardCheckpoint(path, crc != 0 ? &crc : nullptr);
    if (!checkpoint.ok()) return checkpoint.status();
    RETURN_IF_ERROR((*target)->Restore(std::move(*checkpoint)));
  }
  return absl::OkStatus();
}

absl::StatusOr<ShardStore::MemoryReservation> ShardStore::ReserveMemory(const std::string& job_id,
                                                                        uint64_t bytes) {
  absl::MutexLock lock(&mu_);
  const uint64_t limit = options_.max_memory_bytes;
  if (bytes > limit || memory_bytes_ > limit - bytes) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "job ", job_id, "'s new shards need ", bytes,
        " bytes (parameters, optimizer state, aggregation and copies); this server holds ",
        memory_bytes_, " bytes of shards, and its limit (--max_memory_bytes) is ", limit));
  }
  memory_bytes_ += bytes;
  return MemoryReservation(this, bytes);
}

void ShardStore::ReleaseMemory(uint64_t bytes) {
  absl::MutexLock lock(&mu_);
  memory_bytes_ -= bytes;
}

uint64_t ShardStore::memory_bytes() {
  absl::MutexLock lock(&mu_);
  return memory_bytes_;
}

absl::StatusOr<std::string> ShardStore::ConfinedPath(const std::string& path) {
  return ResolvePathUnder(options_.checkpoint_root, path);
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

std::string ShardStore::address() {
  absl::MutexLock lock(&mu_);
  return address_;
}

absl::Status ShardStore::DropJob(const std::string& job_id) {
  RETURN_IF_ERROR(CheckName("job_id", job_id));
  JobTables tables;
  {
    absl::MutexLock lock(&mu_);
    auto it = jobs_.find(job_id);
    if (it == jobs_.end()) {
      return absl::NotFoundError(absl::StrCat("job ", job_id, " has no shards on this server"));
    }
    tables = std::move(it->second);
    jobs_.erase(it);
    for (const auto& [name, shards] : tables) {
      for (const auto& shard : shards) memory_bytes_ -= ShardMemoryBytes(shard->config());
    }
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
  if (request.row_width() == 0 && request.rows_size() == 0) {
    (*shard)->Pull(request, std::move(done));  // In the request's dtype.
    return;
  }
  // Row-sparse: the listed rows of the range's values, gathered from the reply.
  absl::Status invalid = CheckRowSparseShape(request.row_width(), false, request.range());
  if (invalid.ok()) {
    invalid = CheckSparseIndices(request.rows(), RangeSize(request.range()) / request.row_width(),
                                 "rows");
  }
  if (!invalid.ok()) {
    done(invalid, 0, PullPayload());
    return;
  }
  const size_t value_bytes = WireBytesPerValue(request.dtype());
  const size_t row_bytes = size_t{request.row_width()} * value_bytes;
  std::vector<uint32_t> rows(request.rows().begin(), request.rows().end());
  (*shard)->Pull(request, [done = std::move(done), rows = std::move(rows), row_bytes](
                              absl::Status status, uint64_t version, PullPayload values) {
    if (!status.ok()) {
      done(std::move(status), version, PullPayload());
      return;
    }
    auto gathered = std::make_shared<std::vector<char>>(rows.size() * row_bytes);
    for (size_t r = 0; r < rows.size(); ++r) {
      std::memcpy(gathered->data() + r * row_bytes, values.data() + size_t{rows[r]} * row_bytes,
                  row_bytes);
    }
    const char* data = gathered->data();
    const size_t size = gathered->size();
    done(absl::OkStatus(), version, PullPayload(std::move(gathered), data, size));
  });
}

absl::StatusOr<std::shared_ptr<Shard>> ShardStore::CheckPush(const PushRequest& request,
                                                             size_t payload_bytes) {
  ASSIGN_OR_RETURN(std::shared_ptr<Shard> shard,
                   Find(request.job_id(), request.table(), request.range()));
  const uint64_t range_size = RangeSize(request.range());
  const bool sparse = request.indices_size() > 0;
  const uint64_t row_width = request.row_width();
  const bool row_sparse = row_width > 0 || request.rows_size() > 0;
  absl::Status invalid = CheckWireDType(request.dtype());
  if (invalid.ok() && row_sparse) {
    invalid = CheckRowSparseShape(request.row_width(), request.indices_size() > 0, request.range());
  }
  const uint64_t count = sparse       ? static_cast<uint64_t>(request.indices_size())
                         : row_sparse ? static_cast<uint64_t>(request.rows_size()) * row_width
                                      : range_size;
  const uint64_t expected = count * WireBytesPerValue(request.dtype());
  if (invalid.ok() && payload_bytes != expected) {
    invalid = absl::InvalidArgumentError(absl::StrCat(
        "expected ", expected, " bytes (", count, " ", DType_Name(request.dtype()),
        sparse       ? absl::StrCat(" values, one per index, for keys in ",
                                    RangeText(request.range()))
        : row_sparse ? absl::StrCat(" values, ", row_width, " per row, for keys in ",
                                    RangeText(request.range()))
                     : absl::StrCat(" values for keys ", RangeText(request.range())),
        "), got ", payload_bytes));
  }
  if (invalid.ok() && sparse) invalid = CheckSparseIndices(request.indices(), range_size);
  if (invalid.ok() && row_sparse) {
    invalid = CheckSparseIndices(request.rows(), range_size / row_width, "rows");
  }
  if (invalid.ok() && request.worker_rank() >= shard->config().num_workers) {
    invalid = absl::InvalidArgumentError(absl::StrCat("worker_rank ", request.worker_rank(),
                                                      " is out of range: the job has ",
                                                      shard->config().num_workers, " workers"));
  }
  if (!invalid.ok()) {
    shard->RecordRejectedPush(request, invalid);
    return invalid;
  }
  return shard;
}

void ShardStore::Push(const PushRequest& request, PooledBuffer payload, PushCallback done,
                      FiniteCheck finite) {
  absl::StatusOr<std::shared_ptr<Shard>> shard = CheckPush(request, payload.size());
  if (!shard.ok()) {
    done(shard.status());
    return;
  }
  if (request.indices_size() > 0 || request.row_width() > 0) {
    // Sparse or row-sparse: widened to the whole range, zeros elsewhere.
    PushRequest dense = request;
    dense.clear_indices();
    dense.clear_rows();
    dense.clear_row_width();
    dense.set_dtype(FP32);
    const uint64_t size = RangeSize(request.range());
    PooledBuffer values = BufferPool::Global()->Acquire(size * sizeof(float));
    float* out = reinterpret_cast<float*>(values.data());
    std::fill(out, out + size, 0.0f);
    auto value = [&](uint64_t i) {
      return request.dtype() == BF16
                 ? Bf16ToFloat(reinterpret_cast<const uint16_t*>(payload.data())[i])
                 : reinterpret_cast<const float*>(payload.data())[i];
    };
    for (int i = 0; i < request.indices_size(); ++i) out[request.indices(i)] = value(i);
    const uint64_t width = request.row_width();
    for (int r = 0; r < request.rows_size(); ++r) {
      float* row = out + uint64_t{request.rows(r)} * width;
      for (uint64_t c = 0; c < width; ++c) row[c] = value(r * width + c);
    }
    (*shard)->Push(dense, std::move(values), std::move(done));
    return;
  }
  // In the request's dtype.
  (*shard)->Push(request, std::move(payload), std::move(done), finite);
}

absl::Status CheckSparseIndices(const google::protobuf::RepeatedField<uint32_t>& indices,
                                uint64_t range_size, absl::string_view field) {
  const absl::string_view unit = field == "rows" ? "rows" : "keys";
  for (int i = 0; i < indices.size(); ++i) {
    if (indices[i] >= range_size) {
      return absl::InvalidArgumentError(absl::StrCat(field, "[", i, "] = ", indices[i],
                                                     " is outside the range (", range_size, " ",
                                                     unit, "; ", field,
                                                     " are offsets into it)"));
    }
    if (i > 0 && indices[i] <= indices[i - 1]) {
      return absl::InvalidArgumentError(absl::StrCat(
          field, " must be strictly increasing: ", field, "[", i, "] = ", indices[i],
          indices[i] == indices[i - 1] ? " repeats" : " follows", " ", field, "[", i - 1,
          "] = ", indices[i - 1]));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckRowSparseShape(uint32_t row_width, bool with_indices, const KeyRange& range) {
  if (row_width == 0) {
    return absl::InvalidArgumentError("rows need a row_width (keys per row), got 0");
  }
  if (with_indices) {
    return absl::InvalidArgumentError(
        "a push is sparse (indices) or row-sparse (rows, row_width), not both");
  }
  const uint64_t range_size = RangeSize(range);
  if (range_size % row_width != 0) {
    return absl::InvalidArgumentError(absl::StrCat("row_width ", row_width,
                                                   " does not divide the range's ", range_size,
                                                   " keys (", RangeText(range), ")"));
  }
  return absl::OkStatus();
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
  status.set_incarnation(incarnation_);
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
