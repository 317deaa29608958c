// The coordinator's state database: its jobs, nodes and id counters in one SQLite file, so that a
// restarted coordinator carries on with the jobs it had (ClusterCoordinator::Options::state).
#ifndef PSRV_COORDINATOR_STATE_STORE_H_
#define PSRV_COORDINATOR_STATE_STORE_H_

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "proto/coordinator_state.pb.h"

struct sqlite3;
struct sqlite3_stmt;

namespace psrv {

// Owns one SQLite connection to the database file, which it holds locked for as long as it is
// open: a second StateStore (in this or another process) on the same file fails to open, so two
// coordinators never share one state. Thread-safe.
//
// Durability: WAL journal with synchronous=NORMAL. A Write() that returned OK is in the
// operating system's file cache: it survives the coordinator being killed (even kill -9), not
// necessarily a power cut or a kernel crash, after which the last writes may be missing but the
// file is consistent.
class StateStore {
 public:
  // Opens (creating it if missing) the database at `path`. Errors name the path: the file cannot be
  // opened or created (its folder is missing or not writable), is not an SQLite database or is
  // corrupt (DATA_LOSS), is used by another StateStore (UNAVAILABLE), or was written by a newer
  // version of this program (FAILED_PRECONDITION).
  static absl::StatusOr<std::unique_ptr<StateStore>> Open(const std::string& path);
  ~StateStore();
  StateStore(const StateStore&) = delete;
  StateStore& operator=(const StateStore&) = delete;

  struct StoredJob {
    std::string id;
    uint64_t sequence = 0;  // Submission order.
    JobRecord record;
  };
  struct Contents {
    std::vector<StoredJob> jobs;               // By sequence.
    std::vector<NodeRecord> nodes;             // By node id.
    std::map<std::string, uint64_t> counters;  // By name.
  };
  // Everything in the database. DATA_LOSS if a record does not parse.
  absl::StatusOr<Contents> Load();

  // Changes written together by Write(), all or none. Records are serialized when added.
  class Batch {
   public:
    // Inserts or replaces job `id`.
    void PutJob(const std::string& id, uint64_t sequence, const JobRecord& record);
    // Inserts or replaces the node `record.info().node_id()`.
    void PutNode(const NodeRecord& record);
    void DeleteNode(const std::string& node_id);  // No error if it is not there.
    void PutCounter(const std::string& name, uint64_t value);
    bool empty() const { return jobs_.empty() && nodes_.empty() && counters_.empty(); }

   private:
    friend class StateStore;
    struct Job {
      std::string id;
      uint64_t sequence;
      std::string record;
    };
    struct Node {
      std::string id;
      std::optional<std::string> record;  // None: delete.
    };
    std::vector<Job> jobs_;
    std::vector<Node> nodes_;  // In the order given (a put and a delete of one node may follow).
    std::vector<std::pair<std::string, uint64_t>> counters_;
  };

  // Applies `batch` in one transaction. On error nothing of it is written, and failed_writes()
  // counts it.
  absl::Status Write(const Batch& batch);

  // Writes that failed since Open().
  uint64_t failed_writes() const { return failed_writes_.load(std::memory_order_relaxed); }

  const std::string& path() const { return path_; }

  // Makes every later Write() fail with `status` (OK: write again), to test what callers do then.
  void TEST_FailWrites(absl::Status status);

 private:
  struct StatementDeleter {
    void operator()(sqlite3_stmt* statement) const;
  };
  using Statement = std::unique_ptr<sqlite3_stmt, StatementDeleter>;

  StateStore(std::string path, sqlite3* db) : path_(std::move(path)), db_(db) {}
  absl::Status Initialize() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status Execute(const std::string& sql) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<Statement> Prepare(const char* sql) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status WriteInTransaction(const Batch& batch) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status Step(sqlite3_stmt* statement) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // SQLite's error `code` (and the connection's message) as a Status naming the file.
  absl::Status Error(int code, const std::string& what) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const std::string path_;
  std::atomic<uint64_t> failed_writes_{0};
  absl::Mutex mu_;
  sqlite3* const db_ ABSL_GUARDED_BY(mu_);
  // Prepared once by Initialize().
  Statement put_job_ ABSL_GUARDED_BY(mu_);
  Statement put_node_ ABSL_GUARDED_BY(mu_);
  Statement delete_node_ ABSL_GUARDED_BY(mu_);
  Statement put_counter_ ABSL_GUARDED_BY(mu_);
  absl::Status fail_writes_ ABSL_GUARDED_BY(mu_);
};

}  // namespace psrv

#endif  // PSRV_COORDINATOR_STATE_STORE_H_
