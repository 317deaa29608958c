// ShardStore::SaveCheckpoint (shard_store.h): every primary shard of a job snapshots itself at a
// version, and the store's writer thread writes the files (never a gRPC thread).
#include <algorithm>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/files.h"
#include "common/names.h"
#include "server/checkpoint.h"
#include "server/shard_store.h"

namespace psrv {
namespace {

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
      result = CreateDirectories(dir, absl::StrCat("directory ", dir));
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

void ShardStore::SaveCheckpoint(const SaveCheckpointRequest& request, SaveCheckpointCallback done) {
  if (absl::Status name = CheckName("job_id", request.job_id()); !name.ok()) {
    done(name);
    return;
  }
  if (request.directory().empty()) {
    done(absl::InvalidArgumentError("directory must be set"));
    return;
  }
  absl::StatusOr<std::string> confined = ConfinedPath(request.directory());
  if (!confined.ok()) {
    done(confined.status());
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
  const std::string directory = *confined;
  for (const auto& shard : shards) {
    shard->Snapshot(request.version(), [this, round, directory](
                                           absl::StatusOr<ShardCheckpoint> snapshot) {
      auto taken = std::make_shared<absl::StatusOr<ShardCheckpoint>>(std::move(snapshot));
      checkpoint_writer_.Run([round, directory, taken] { round->Write(directory, *taken); });
    });
  }
}

}  // namespace psrv
