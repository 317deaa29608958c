// The worker's link to the parameter servers of one job, made to survive them: pulls and pushes of
// single targets (chunks of shards, worker/shard_targets.h) started without waiting, and waits that
// repair what failed before returning. A server that does not answer is retried (UNAVAILABLE,
// timeouts) and reported to the coordinator, which may fail its shards over to their backups: the
// client then follows the newer shard map (ShardMap.epoch), sends the pushes and commit of every
// SYNC step not yet known applied again (a promoted backup aggregates that step afresh; a step it
// has answers ALREADY_EXISTS, counted as accepted), and pulls again. It gives up after
// `give_up` of failures in a row, and at once on any other error.
//
// Two push steps may be in flight (step s's pushes while step s+1 computes), and one pull step.
// A push step is known applied once every pull of the next step came back: from then on it is
// never sent again.
#ifndef PSRV_WORKER_RESILIENT_CLIENT_H_
#define PSRV_WORKER_RESILIENT_CLIENT_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "proto/types.pb.h"
#include "worker/server_transport.h"
#include "worker/shard_targets.h"

namespace psrv {

// Thread-safe. Waits (which repair failures) come from one thread at a time; Start calls may come
// from others too (the step pipeline pushes from a thread of its own). Completions arrive on the
// transports' threads and only record what happened (and widen pulled BF16 values).
// TOP_K gradient compression with error feedback, over one target's range: v = grad + residual;
// the k = max(1, round(fraction * n)) largest |v| are sent (offsets in increasing order, values
// rounded to the wire dtype), and the residual becomes v minus what was sent (the unsent values,
// and the rounding of the sent ones). grad, residual: (n).
struct SparsePush {
  std::vector<uint32_t> indices;
  std::vector<char> values;  // (indices) little-endian values of the wire dtype.
};
void TopKCompress(const float* grad, size_t n, float fraction, DType wire_dtype, float* residual,
                  SparsePush* out);

// A row-sparse push of a sparse table's range (rows of `width` keys, n a multiple of it): the
// offsets of the rows with a nonzero gradient (out->indices, increasing) and their values in the
// wire dtype, row after row. A row that is all zero (no token of the batch) is not sent.
void SelectRows(const float* grad, size_t n, uint32_t width, DType wire_dtype, SparsePush* out);

class ResilientClient {
 public:
  struct Options {
    TargetOptions targets;
    DType wire_dtype = FP32;  // FP32 or BF16 (the client converts; buffers stay fp32).
    // Gradient compression (TrainingSpec.compression TOP_K): each push sends only the largest
    // top_k_fraction of its target's values by magnitude, with error feedback (TopKCompressor).
    // 0: dense pushes.
    float top_k_fraction = 0;
    // Targets of a sparse table (ShardTarget.row_width) push only the rows with a gradient
    // (PushRequest.rows), unless TOP_K compresses them or this is false (dense pushes, for
    // comparisons).
    bool row_sparse_pushes = true;
    // Row-sparse pulls of sparse tables: called once per step, when its first pull starts (from
    // any thread; must not call the client); true with the sparse table's rows the step needs
    // (its batch's input tokens; sorted, distinct) pulls only those rows into targets with a
    // row_width, leaving the other rows of the buffer as they were; false, or unset: whole
    // ranges.
    std::function<bool(uint64_t step, std::vector<uint32_t>* rows)> pull_rows;
    ConsistencyMode consistency = SYNC;
    // A SYNC pull waits for the slowest worker; one that times out is checked (its server
    // reported) and sent again.
    absl::Duration pull_timeout = absl::Seconds(10);
    // A push or commit taking longer is sent again (idempotent: SYNC by step, ASYNC by push id).
    absl::Duration push_timeout = absl::Seconds(8);
    // Failures in a row are retried this long (meanwhile the coordinator fails the server over,
    // or restarts the job, cancelling this run).
    absl::Duration give_up = absl::Minutes(2);
  };

  // What the client needs from the coordinator (either may be empty).
  struct Coordinator {
    std::function<void(const std::string& address)> report_unreachable;
    std::function<absl::StatusOr<ShardMap>()> shard_map;  // The job's map as it is now.
  };

  // INVALID_ARGUMENT for a shard map that does not cover its tables, or a bad wire dtype.
  // `cancel` (not owned, may be null) makes waits return CANCELLED once true.
  static absl::StatusOr<std::unique_ptr<ResilientClient>> Create(
      const ShardMap& map, uint32_t worker_rank, const Options& options,
      Coordinator coordinator, ServerTransportFactory transports,
      const std::atomic<bool>* cancel);
  ~ResilientClient();  // Shutdown().

  // Cancels every call in flight and waits (up to 30 s) for their callbacks and for the
  // transports to release the push payloads: afterwards nothing touches the callers' buffers.
  // Idempotent; the client takes no calls after it.
  void Shutdown();

  size_t num_parameters() const { return plan_.num_parameters; }
  // The targets, in ascending flat offsets; they never change (a newer shard map must have the
  // same shard ranges).
  const std::vector<ShardTarget>& targets() const { return plan_.targets; }
  // Index of the target holding flat key `offset`.
  size_t TargetAt(size_t offset) const;

  // Pulls target `t` for `step` into params (the flat fp32 buffer; the target's range only). The
  // first pull of a new step requires every pull of the previous one to have come back.
  void StartPull(size_t t, uint64_t step, float* params);
  // Waits until target t's pull of the current step is in place, repairing failures meanwhile.
  absl::Status AwaitPull(size_t t);
  // Waits for every target's pull of `step`, starting those not started.
  absl::Status PullAll(uint64_t step, float* params);

  // Pushes target t's range of grads (the flat fp32 buffer, unchanged until AwaitReleased) for
  // `step`. With scale_follows (SYNC) the server waits for StartCommit's factor. BF16 wire: the
  // range is narrowed into Bf16Payloads(step) first, unless the caller did (`narrowed`).
  void StartPush(size_t t, uint64_t step, const float* grads, bool scale_follows,
                 bool narrowed = false);
  // BF16 wire: where `step`'s push payloads are narrowed (num_parameters), for callers that narrow
  // in a pass of their own; null for FP32. Valid until step + 2.
  uint16_t* Bf16Payloads(uint64_t step);
  // The factor for `step`'s scale_follows pushes, to every server.
  void StartCommit(uint64_t step, float scale);
  // Waits until every push (and the commit, if any) of `step` was accepted.
  absl::Status AwaitPushed(uint64_t step);
  // Waits until the transports released every payload of `step`'s pushes (at most a second more
  // for failed ones): then its gradient buffer may change.
  void AwaitReleased(uint64_t step);

  // While a Corked lives, the calls started (from any thread) may be held by the transports and
  // sent together when it ends (ServerTransport::Cork: a step's small pulls and pushes as one
  // batch call per connection). Nothing may wait for those calls meanwhile.
  class Corked {
   public:
    explicit Corked(ResilientClient* client);
    ~Corked();
    Corked(const Corked&) = delete;
    Corked& operator=(const Corked&) = delete;

   private:
    std::vector<ServerTransport*> corked_;
  };

  // The shard versions the last pull of each target found (PushRequest.base_version).
  uint64_t pulled_version(size_t t);

  // Gradient bytes sent by pushes so far (payloads and sparse indices; each push counted once,
  // resends not).
  uint64_t pushed_bytes() const { return pushed_bytes_.load(std::memory_order_relaxed); }
  // Parameter bytes requested by pulls so far (each pull counted once, resends not).
  uint64_t pulled_bytes() const { return pulled_bytes_.load(std::memory_order_relaxed); }
  bool compressing() const { return options_.top_k_fraction > 0; }
  // Whether target's pushes are row-sparse.
  bool RowSparse(const ShardTarget& target) const {
    return !compressing() && options_.row_sparse_pushes && target.row_width > 0;
  }


 private:
  enum class State { kIdle, kInFlight, kDone, kFailed };
  struct Op {
    State state = State::kIdle;
    absl::Status error;
  };
  // One step's pushes: a slot of pushes_ (step % 2).
  struct PushStep {
    uint64_t step = 0;  // 0: unused.
    const float* grads = nullptr;
    bool scale_follows = false;
    std::vector<Op> pushes;                // (targets)
    std::vector<uint16_t> wire;            // (num_parameters) BF16 payloads, narrowed per target.
    // TOP_K: each target's sparse push, kept for resends: key offsets and values (wire dtype);
    // row-sparse targets: row offsets and their values.
    std::vector<std::vector<uint32_t>> indices;  // (targets)
    std::vector<std::vector<char>> values;       // (targets)
    bool committed = false;                // StartCommit was called.
    float scale = 1.0f;
    std::vector<Op> commits;               // (servers)
    bool applied = false;                  // Every pull of step + 1 came back: never resent.
    std::shared_ptr<struct Releases> releases;
  };
  struct Failure {
    absl::Status status;
    std::string address;
  };

  ResilientClient(const ShardMap& map, uint32_t worker_rank, const Options& options,
                  Coordinator coordinator, ServerTransportFactory transports,
                  const std::atomic<bool>* cancel, TargetPlan plan);

  // Connects to the servers of map_ (servers_, transports_ and server_of_).
  void Connect() ABSL_EXCLUSIVE_LOCKS_REQUIRED(connections_mu_);
  // A Pull or Push request for target `target` of `step`, payload aside.
  template <typename Request>
  Request Header(const ShardTarget& target, uint64_t step) const;
  // Sends target t's pull of pull_step_ (again); returns the bytes it asked for.
  size_t IssuePull(size_t t);
  // A pull of target t for `step` came back (its values in place when OK).
  void PullEnded(size_t t, uint64_t step, const absl::Status& status, uint64_t version);
  void IssuePush(PushStep* slot, size_t t);
  void IssueCommit(PushStep* slot, size_t server);
  // After failures: gives up (non-retryable, too long, cancelled), or reports the servers, follows
  // a newer shard map (sending again what it needs) or waits a little, and starts the failed calls
  // again. Without failures, after a long wait (WaitFor): follows a newer shard map, if any.
  absl::Status Recover();
  std::vector<Failure> Failures();
  // Follows the coordinator's shard map if it is newer than this one: true if it did.
  absl::StatusOr<bool> FollowNewerMap();
  // Starts every failed call again.
  void Reissue();
  // Moves to `map` (same targets, other servers): cancels the calls in flight, waits for them,
  // reconnects, and marks what the new servers must get again.
  absl::Status FollowMap(const ShardMap& map);
  // Waits until `ready` holds (true) or a call failed (false) or the job was cancelled; or
  // (false, check_map_ set) a second passed: then Recover looks for a newer shard map.
  bool WaitFor(const std::function<bool()>& ready) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool AnyFailed() const ABSL_SHARED_LOCKS_REQUIRED(mu_);
  PushStep* Slot(uint64_t step) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void CallStarted() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { ++calls_in_flight_; }
  void CallEnded() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { --calls_in_flight_; }
  bool Cancelled() const { return cancel_ != nullptr && cancel_->load(); }

  const std::string job_id_;
  const uint32_t worker_rank_;
  const Options options_;
  const Coordinator coordinator_;
  const ServerTransportFactory make_transport_;
  const std::atomic<bool>* const cancel_;
  const TargetPlan plan_;
  // ASYNC: PushRequest.push_id of step s is push_ids_ + s (random, per client: one run of a job),
  // so a push sent again after a fail-over or a timeout is never applied twice.
  const uint64_t push_ids_;

  // The servers: read while starting calls, replaced (FollowMap) under the writer lock, which
  // also holds off new calls meanwhile. Taken before mu_.
  absl::Mutex connections_mu_;
  ShardMap map_ ABSL_GUARDED_BY(connections_mu_);
  absl::Mutex mu_;
  // Addresses, by server index; written under both locks, so either lock is enough to read.
  std::vector<std::string> servers_;
  std::vector<std::unique_ptr<ServerTransport>> transports_;  // (servers_) as servers_.
  // Transports of earlier maps: kept until the end, since a failed push's payload may be held by
  // a connection that is not torn down yet.
  std::vector<std::unique_ptr<ServerTransport>> retired_ ABSL_GUARDED_BY(mu_);
  std::vector<size_t> server_of_;  // (targets) index into servers_; as servers_.
  int calls_in_flight_ ABSL_GUARDED_BY(mu_) = 0;

  // TOP_K's error feedback: (num_parameters) what earlier pushes left out, added to the next
  // gradient. Each target's range is touched only by that target's StartPush.
  std::vector<float> residual_;
  std::atomic<uint64_t> pushed_bytes_{0};
  std::atomic<uint64_t> pulled_bytes_{0};

  uint64_t pull_step_ ABSL_GUARDED_BY(mu_) = 0;
  float* pull_params_ ABSL_GUARDED_BY(mu_) = nullptr;
  // Options::pull_rows for pull_step_: whether its sparse targets pull rows, and which (table
  // row ids, sorted).
  bool pull_sparse_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<uint32_t> pull_rows_ ABSL_GUARDED_BY(mu_);
  std::vector<Op> pulls_ ABSL_GUARDED_BY(mu_);           // (targets)
  std::vector<uint64_t> versions_ ABSL_GUARDED_BY(mu_);  // (targets)
  size_t pulls_done_ ABSL_GUARDED_BY(mu_) = 0;
  PushStep pushes_[2] ABSL_GUARDED_BY(mu_);

  // Recovery (training thread only).
  absl::Time failing_since_ = absl::InfiniteFuture();
  bool check_map_ ABSL_GUARDED_BY(mu_) = false;  // See WaitFor.
  absl::Duration backoff_ = absl::Milliseconds(20);
};

}  // namespace psrv

#endif  // PSRV_WORKER_RESILIENT_CLIENT_H_
