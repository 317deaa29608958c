// The primary/backup half of Shard (shard.h): sending each update to the backup and acknowledging
// it once the backup has it, dropping a backup that fails, installing a new one (AddBackup), a
// backup's side (ApplyReplicated) and its promotion.
#include <memory>
#include <string>
#include <utility>

#include <glog/logging.h>

#include "absl/strings/str_cat.h"
#include "common/key_range.h"
#include "common/status_macros.h"
#include "server/gradient_check.h"
#include "server/shard.h"
#include "server/shard_outbox.h"

namespace psrv {
namespace {

// Errors after which an update is sent to the backup once more: it may just be slow or restarting.
bool Retryable(const absl::Status& status) {
  return absl::IsUnavailable(status) || absl::IsDeadlineExceeded(status);
}

}  // namespace

void Shard::OnReplicated(uint64_t version, const absl::Status& status) {
  Outbox out;
  absl::Status deposed;
  {
    absl::MutexLock lock(&mu_);
    if (in_flight_ == nullptr || in_flight_->request.version() != version) return;
    if (absl::IsAborted(status)) {
      // The backup was promoted: the coordinator failed this shard over (it thought this server
      // lost). This copy must not acknowledge anything any more: its workers go to the new map.
      deposed_ = absl::UnavailableError(absl::StrCat(
          "job ", config_.job_id, " table \"", config_.table.name(), "\" [", config_.range.begin(),
          ", ", config_.range.end(), ") was failed over to ", in_flight_->backup->address(),
          "; fetch the job's shard map again"));
      LOG(ERROR) << deposed_.message() << " (" << status << ")";
      out.pushes.emplace_back(std::move(in_flight_->done), deposed_);
      in_flight_.reset();
      deposed = deposed_;
    } else if (!status.ok()) {
      if (Retryable(status) && in_flight_->attempts < env_.replicate_attempts) {
        LOG(WARNING) << "job " << config_.job_id << " table " << config_.table.name()
                     << ": Replicate of version " << version << " to "
                     << in_flight_->backup->address() << " failed (" << status
                     << "); sending it again";
        ++in_flight_->attempts;
        out.replicate_to = in_flight_->backup;
        out.replicate = in_flight_->request;
        out.gradient = in_flight_->gradient;
      } else {
        DropBackup(status, env_.clock());
      }
    }
    if (out.replicate_to == nullptr && deposed.ok()) {  // The backup has it, or there is none.
      PushCallback done = std::move(in_flight_->done);
      in_flight_.reset();
      Acknowledge(std::move(done), &out);
      RunDeferred(&out);
    }
  }
  Deliver(&out);
  if (!deposed.ok()) CancelWaiters(deposed);
}

void Shard::DropBackup(const absl::Status& error, absl::Time now) {
  LOG(ERROR) << "job " << config_.job_id << " table " << config_.table.name() << " ["
             << config_.range.begin() << ", " << config_.range.end() << "): dropping backup "
             << backup_->address() << " after " << error
             << "; the shard continues unreplicated until it gets a new backup (AddBackup)";
  backup_lost_ = true;
  backup_error_ = absl::StrCat(backup_->address(), ": ", error.ToString());
  backup_error_ms_ = absl::ToUnixMillis(now);
  backup_.reset();
}

absl::StatusOr<uint64_t> Shard::ApplyReplicated(const ReplicateRequest& request,
                                                const float* gradient) {
  const uint64_t offset = request.range().begin() - config_.range.begin();
  const uint64_t count = RangeSize(request.range());
  RETURN_IF_ERROR(
      CheckFinite(config_.table.name(), gradient, FP32, count, request.range().begin()));
  const absl::Time now = env_.clock();
  absl::MutexLock lock(&mu_);
  if (role_ != BACKUP) {
    // ABORTED: the sender was failed over (this copy was promoted): it must stop, not go on alone.
    return absl::AbortedError(absl::StrCat(
        "job ", config_.job_id, " table \"", config_.table.name(), "\" [", config_.range.begin(),
        ", ", config_.range.end(), ") is a PRIMARY here; only backups take Replicate"));
  }
  if (request.version() <= version_) return version_;  // A resend of an update applied already.
  if (request.version() > version_ + 1) {
    return absl::FailedPreconditionError(absl::StrCat(
        "update ", request.version(), " of job ", config_.job_id, " table \"",
        config_.table.name(), "\" does not follow this backup's version ", version_,
        "; the backup must be installed again (AddBackup)"));
  }
  // The primary's optimizer step for the same update, so both stay bit-identical.
  ApplyUpdate(gradient, 1.0f, offset, count);  // (Its optimizer step: request.version().)
  version_ = request.version();
  applied_pushes_.Add(RecentPushes::Key(request.push_id(), request.range().begin()));
  last_update_ms_ = absl::ToUnixMillis(now);
  return version_;
}

void Shard::AddBackup(std::shared_ptr<Replicator> backup, const std::string& own_address,
                      AddBackupCallback done) {
  Outbox out;
  {
    absl::MutexLock lock(&mu_);
    StartAddBackup(std::move(backup), own_address, std::move(done), &out);
  }
  Deliver(&out);
}

void Shard::StartAddBackup(std::shared_ptr<Replicator> backup, const std::string& own_address,
                           AddBackupCallback done, Outbox* out) {
  if (role_ == BACKUP) {
    out->backups.emplace_back(std::move(done), RefuseOnBackup("AddBackup"));
    return;
  }
  if (in_flight_ != nullptr && !installing_ && backup_ != nullptr &&
      backup_->address() != backup->address()) {
    // The coordinator gives this shard another backup while an update is on its way to the
    // current one: it took that server for lost and it is out of the shard map (it will never be
    // promoted). The update need not wait for it (a frozen backup would hold the step for the
    // whole Replicate deadline, twice): drop it now; its late reply is ignored (OnReplicated).
    DropBackup(absl::UnavailableError(absl::StrCat("replaced by AddBackup of ", backup->address())),
               env_.clock());
    PushCallback acknowledged = std::move(in_flight_->done);
    in_flight_.reset();
    Acknowledge(std::move(acknowledged), out);
  }
  if (Busy()) {  // The copy is taken at an acknowledged version, with nothing in flight.
    deferred_.push_back(Deferred{
        [this, backup, own_address, done](Outbox* o) {
          StartAddBackup(backup, own_address, done, o);
        },
        [done](const absl::Status& status) { done(status); }});
    return;
  }
  if (backup_ != nullptr && backup_->address() == backup->address()) {
    out->backups.emplace_back(std::move(done), version_);  // Already in sync there.
    return;
  }
  // Updates wait (deferred) until the copy is installed, so the backup misses none.
  installing_ = true;
  out->install_on = std::move(backup);
  out->own_address = own_address;
  out->install = MakeCheckpoint();
  if (config_.consistency == SYNC) out->install_from_step = aggregator_.from_step();
  if (config_.consistency == SSP) out->install_from_step = ssp_from_step_;
  if (config_.consistency != SYNC) out->install_applied_pushes = applied_pushes_.keys();
  out->install_done = std::move(done);
}

void Shard::OnInstalled(std::shared_ptr<Replicator> backup, uint64_t version,
                        const absl::Status& status, AddBackupCallback done) {
  Outbox out;
  {
    absl::MutexLock lock(&mu_);
    installing_ = false;
    if (status.ok()) {
      LOG(INFO) << "job " << config_.job_id << " table " << config_.table.name() << " ["
                << config_.range.begin() << ", " << config_.range.end() << "): backup "
                << backup->address() << " installed at version " << version;
      backup_ = std::move(backup);
      backup_lost_ = false;
      out.backups.emplace_back(std::move(done), version);
    } else {
      out.backups.emplace_back(std::move(done), status);
    }
    RunDeferred(&out);
  }
  Deliver(&out);
}

uint64_t Shard::Promote() {
  absl::MutexLock lock(&mu_);
  if (role_ == BACKUP) {
    LOG(INFO) << "job " << config_.job_id << " table " << config_.table.name() << " ["
              << config_.range.begin() << ", " << config_.range.end()
              << "): promoted to PRIMARY at version " << version_ << " (its primary was "
              << primary_address_ << ")";
    role_ = PRIMARY;
    aggregator_.Reset();
    // SSP: the ranks' clocks were not replicated; the bound holds again once each pushed here.
    clock_known_.assign(clock_known_.size(), false);
  }
  return version_;
}

}  // namespace psrv
