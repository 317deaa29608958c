// Jobs the coordinator reported as ended (HeartbeatResponse.ended_jobs) on a ps_server, and when
// each was first reported: their shards are dropped `ttl` later (ps_server --ended_job_ttl), so a
// long-running server does not keep the parameters of every job it ever served.
#ifndef PSRV_SERVER_ENDED_JOBS_H_
#define PSRV_SERVER_ENDED_JOBS_H_

#include <cstddef>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace psrv {

// Thread-safe.
class EndedJobs {
 public:
  // `ttl`: how long an ended job's shards are kept (pulls still work: `psctl generate`);
  // absl::InfiniteDuration(): for ever.
  explicit EndedJobs(absl::Duration ttl) : ttl_(ttl) {}

  // Records `jobs` as ended at `now` (a job reported before keeps its first time). Returns the
  // number of distinct jobs reported ended so far.
  template <typename Jobs>
  size_t Add(const Jobs& jobs, absl::Time now) {
    absl::MutexLock lock(&mu_);
    for (const std::string& job : jobs) ended_.try_emplace(job, Entry{now, false});
    return ended_.size();
  }

  // The jobs whose shards are due to go at `now`, each returned once.
  std::vector<std::string> TakeExpired(absl::Time now) {
    std::vector<std::string> expired;
    if (ttl_ == absl::InfiniteDuration()) return expired;
    absl::MutexLock lock(&mu_);
    for (auto& [job, entry] : ended_) {
      if (!entry.dropped && now - entry.ended >= ttl_) {
        entry.dropped = true;
        expired.push_back(job);
      }
    }
    return expired;
  }

 private:
  struct Entry {
    absl::Time ended;
    bool dropped;
  };
  const absl::Duration ttl_;
  absl::Mutex mu_;
  absl::flat_hash_map<std::string, Entry> ended_ ABSL_GUARDED_BY(mu_);
};

}  // namespace psrv

#endif  // PSRV_SERVER_ENDED_JOBS_H_
