#include "coordinator/state_store.h"

#include <sqlite3.h>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace psrv {
namespace {

// user_version of the schema below; a file with a higher one was written by a newer program.
constexpr int kSchemaVersion = 1;

constexpr char kSchema[] = R"sql(
  CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    sequence INTEGER NOT NULL,  -- Submission order.
    record BLOB NOT NULL        -- JobRecord (proto/coordinator_state.proto).
  );
  CREATE TABLE IF NOT EXISTS nodes (
    id TEXT PRIMARY KEY,
    record BLOB NOT NULL        -- NodeRecord.
  );
  CREATE TABLE IF NOT EXISTS counters (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
  );
)sql";

absl::StatusCode CodeOf(int sqlite_code) {
  switch (sqlite_code & 0xff) {  // The primary code of an extended one.
    case SQLITE_NOTADB:
    case SQLITE_CORRUPT:
      return absl::StatusCode::kDataLoss;
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
    case SQLITE_IOERR:
      return absl::StatusCode::kUnavailable;
    case SQLITE_FULL:
      return absl::StatusCode::kResourceExhausted;
    case SQLITE_CANTOPEN:
    case SQLITE_PERM:
    case SQLITE_READONLY:
    case SQLITE_AUTH:
      return absl::StatusCode::kFailedPrecondition;
    default:
      return absl::StatusCode::kInternal;
  }
}

std::string Column(sqlite3_stmt* statement, int column) {
  const void* data = sqlite3_column_blob(statement, column);
  const int size = sqlite3_column_bytes(statement, column);
  return data == nullptr ? std::string() : std::string(static_cast<const char*>(data), size);
}

}  // namespace

void StateStore::StatementDeleter::operator()(sqlite3_stmt* statement) const {
  sqlite3_finalize(statement);
}

absl::StatusOr<std::unique_ptr<StateStore>> StateStore::Open(const std::string& path) {
  sqlite3* db = nullptr;
  // Our own mutex serializes every use of the connection: SQLite's is not needed.
  const int code = sqlite3_open_v2(path.c_str(), &db,
                                   SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
                                       SQLITE_OPEN_NOMUTEX,
                                   nullptr);
  if (code != SQLITE_OK) {
    const std::string message = db != nullptr ? sqlite3_errmsg(db) : sqlite3_errstr(code);
    sqlite3_close(db);
    return absl::Status(CodeOf(code), absl::StrCat("cannot open the state database ", path, ": ",
                                                   message));
  }
  std::unique_ptr<StateStore> store(new StateStore(path, db));
  {
    absl::MutexLock lock(&store->mu_);
    RETURN_IF_ERROR(store->Initialize());
  }
  return store;
}

StateStore::~StateStore() {
  absl::MutexLock lock(&mu_);
  put_job_.reset();
  put_node_.reset();
  delete_node_.reset();
  put_counter_.reset();
  sqlite3_close(db_);
}

absl::Status StateStore::Initialize() {
  // Another coordinator holding the file gets a second to let go (a restart in progress).
  sqlite3_busy_timeout(db_, 1000);
  // Held locked while open (set before WAL mode, so no shared-memory index is used either).
  RETURN_IF_ERROR(Execute("PRAGMA locking_mode = EXCLUSIVE"));
  // WAL + synchronous=NORMAL: a commit is written to the WAL file without waiting for the disk,
  // so it survives a kill of the process (not a power cut); see the class comment.
  RETURN_IF_ERROR(Execute("PRAGMA journal_mode = WAL"));
  RETURN_IF_ERROR(Execute("PRAGMA synchronous = NORMAL"));
  ASSIGN_OR_RETURN(Statement version, Prepare("PRAGMA user_version"));
  if (sqlite3_step(version.get()) == SQLITE_ROW &&
      sqlite3_column_int(version.get(), 0) > kSchemaVersion) {
    return absl::FailedPreconditionError(
        absl::StrCat("state database ", path_, " has schema version ",
                     sqlite3_column_int(version.get(), 0), "; this program reads up to ",
                     kSchemaVersion, " (it was written by a newer coordinator)"));
  }
  version.reset();
  RETURN_IF_ERROR(Execute("BEGIN EXCLUSIVE"));
  absl::Status status = Execute(kSchema);
  if (status.ok()) status = Execute(absl::StrCat("PRAGMA user_version = ", kSchemaVersion));
  if (status.ok()) status = Execute("COMMIT");
  if (!status.ok()) {
    (void)Execute("ROLLBACK");
    return status;
  }
  ASSIGN_OR_RETURN(put_job_,
                   Prepare("INSERT OR REPLACE INTO jobs (id, sequence, record) VALUES (?1, ?2, ?3)"));
  ASSIGN_OR_RETURN(put_node_, Prepare("INSERT OR REPLACE INTO nodes (id, record) VALUES (?1, ?2)"));
  ASSIGN_OR_RETURN(delete_node_, Prepare("DELETE FROM nodes WHERE id = ?1"));
  ASSIGN_OR_RETURN(put_counter_,
                   Prepare("INSERT OR REPLACE INTO counters (name, value) VALUES (?1, ?2)"));
  return absl::OkStatus();
}

absl::Status StateStore::Error(int code, const std::string& what) {
  std::string message =
      absl::StrCat("state database ", path_, ": ", what, ": ", sqlite3_errmsg(db_));
  if ((code & 0xff) == SQLITE_BUSY) {
    absl::StrAppend(&message, " (is another coordinator using it?)");
  }
  return absl::Status(CodeOf(code), message);
}

absl::Status StateStore::Execute(const std::string& sql) {
  const int code = sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, nullptr);
  if (code != SQLITE_OK) return Error(code, sql);
  return absl::OkStatus();
}

absl::StatusOr<StateStore::Statement> StateStore::Prepare(const char* sql) {
  sqlite3_stmt* statement = nullptr;
  const int code = sqlite3_prepare_v2(db_, sql, -1, &statement, nullptr);
  if (code != SQLITE_OK) {
    sqlite3_finalize(statement);
    return Error(code, absl::StrCat("preparing \"", sql, "\""));
  }
  return Statement(statement);
}

absl::Status StateStore::Step(sqlite3_stmt* statement) {
  const int code = sqlite3_step(statement);
  absl::Status status;
  if (code != SQLITE_DONE) status = Error(code, sqlite3_sql(statement));
  sqlite3_reset(statement);
  sqlite3_clear_bindings(statement);
  return status;
}

absl::StatusOr<StateStore::Contents> StateStore::Load() {
  absl::MutexLock lock(&mu_);
  Contents contents;
  auto read_rows = [this](sqlite3_stmt* statement, auto on_row) -> absl::Status {
    int code;
    while ((code = sqlite3_step(statement)) == SQLITE_ROW) RETURN_IF_ERROR(on_row());
    if (code != SQLITE_DONE) return Error(code, sqlite3_sql(statement));
    return absl::OkStatus();
  };
  auto corrupt = [this](const std::string& what) {
    return absl::DataLossError(
        absl::StrCat("state database ", path_, ": ", what, " does not parse"));
  };

  ASSIGN_OR_RETURN(Statement jobs, Prepare("SELECT id, sequence, record FROM jobs ORDER BY sequence"));
  RETURN_IF_ERROR(read_rows(jobs.get(), [&]() -> absl::Status {
    StoredJob job;
    job.id = Column(jobs.get(), 0);
    job.sequence = static_cast<uint64_t>(sqlite3_column_int64(jobs.get(), 1));
    if (!job.record.ParseFromString(Column(jobs.get(), 2))) {
      return corrupt(absl::StrCat("the record of job \"", job.id, "\""));
    }
    contents.jobs.push_back(std::move(job));
    return absl::OkStatus();
  }));

  ASSIGN_OR_RETURN(Statement nodes, Prepare("SELECT id, record FROM nodes ORDER BY id"));
  RETURN_IF_ERROR(read_rows(nodes.get(), [&]() -> absl::Status {
    const std::string id = Column(nodes.get(), 0);
    NodeRecord node;
    if (!node.ParseFromString(Column(nodes.get(), 1)) || node.info().node_id() != id) {
      return corrupt(absl::StrCat("the record of node \"", id, "\""));
    }
    contents.nodes.push_back(std::move(node));
    return absl::OkStatus();
  }));

  ASSIGN_OR_RETURN(Statement counters, Prepare("SELECT name, value FROM counters"));
  RETURN_IF_ERROR(read_rows(counters.get(), [&]() -> absl::Status {
    contents.counters[Column(counters.get(), 0)] =
        static_cast<uint64_t>(sqlite3_column_int64(counters.get(), 1));
    return absl::OkStatus();
  }));
  return contents;
}

void StateStore::Batch::PutJob(const std::string& id, uint64_t sequence, const JobRecord& record) {
  jobs_.push_back({id, sequence, record.SerializeAsString()});
}

void StateStore::Batch::PutNode(const NodeRecord& record) {
  nodes_.push_back({record.info().node_id(), record.SerializeAsString()});
}

void StateStore::Batch::DeleteNode(const std::string& node_id) {
  nodes_.push_back({node_id, std::nullopt});
}

void StateStore::Batch::PutCounter(const std::string& name, uint64_t value) {
  counters_.emplace_back(name, value);
}

absl::Status StateStore::Write(const Batch& batch) {
  if (batch.empty()) return absl::OkStatus();
  absl::MutexLock lock(&mu_);
  absl::Status status = fail_writes_.ok() ? WriteInTransaction(batch) : fail_writes_;
  if (!status.ok()) failed_writes_.fetch_add(1, std::memory_order_relaxed);
  return status;
}

absl::Status StateStore::WriteInTransaction(const Batch& batch) {
  RETURN_IF_ERROR(Execute("BEGIN IMMEDIATE"));
  auto write = [&]() -> absl::Status {
    for (const Batch::Job& job : batch.jobs_) {
      sqlite3_bind_text(put_job_.get(), 1, job.id.data(), job.id.size(), SQLITE_STATIC);
      sqlite3_bind_int64(put_job_.get(), 2, static_cast<sqlite3_int64>(job.sequence));
      sqlite3_bind_blob(put_job_.get(), 3, job.record.data(), job.record.size(), SQLITE_STATIC);
      RETURN_IF_ERROR(Step(put_job_.get()));
    }
    for (const Batch::Node& node : batch.nodes_) {
      sqlite3_stmt* statement = node.record.has_value() ? put_node_.get() : delete_node_.get();
      sqlite3_bind_text(statement, 1, node.id.data(), node.id.size(), SQLITE_STATIC);
      if (node.record.has_value()) {
        sqlite3_bind_blob(statement, 2, node.record->data(), node.record->size(), SQLITE_STATIC);
      }
      RETURN_IF_ERROR(Step(statement));
    }
    for (const auto& [name, value] : batch.counters_) {
      sqlite3_bind_text(put_counter_.get(), 1, name.data(), name.size(), SQLITE_STATIC);
      sqlite3_bind_int64(put_counter_.get(), 2, static_cast<sqlite3_int64>(value));
      RETURN_IF_ERROR(Step(put_counter_.get()));
    }
    return Execute("COMMIT");
  };
  absl::Status status = write();
  if (!status.ok()) (void)Execute("ROLLBACK");
  return status;
}

void StateStore::TEST_FailWrites(absl::Status status) {
  absl::MutexLock lock(&mu_);
  fail_writes_ = std::move(status);
}

}  // namespace psrv
