#include "worker/resilient_client.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <utility>

#include <glog/logging.h>

#include "absl/random/random.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/bf16.h"
#include "common/status_macros.h"

namespace psrv {

// Payloads of one step's pushes that a transport still holds.
struct Releases {
  absl::Mutex mu;
  int pending ABSL_GUARDED_BY(mu) = 0;
};

namespace {

constexpr absl::Duration kMaxBackoff = absl::Milliseconds(500);
// A call unanswered this long makes the client look for a newer shard map (and again after as
// long while it waits): a frozen server answers nothing until its calls' deadlines (8-10 s).
constexpr absl::Duration kMapCheckAfter = absl::Milliseconds(500);
// A failed push's payload may be held until its connection is torn down; gRPC no longer sends it.
constexpr absl::Duration kFailedReleaseWait = absl::Seconds(1);

}  // namespace

absl::StatusOr<std::unique_ptr<ResilientClient>> ResilientClient::Create(
    const ShardMap& map, uint32_t worker_rank, const Options& options, Coordinator coordinator,
    ServerTransportFactory transports, const std::atomic<bool>* cancel) {
  if (options.wire_dtype != FP32 && options.wire_dtype != BF16) {
    return absl::InvalidArgumentError(
        absl::StrCat("wire dtype must be FP32 or BF16, got ", DType_Name(options.wire_dtype)));
  }
  ASSIGN_OR_RETURN(TargetPlan plan, PlanTargets(map, options.targets));
  std::unique_ptr<ResilientClient> client(
      new ResilientClient(map, worker_rank, options, std::move(coordinator),
                          std::move(transports), cancel, std::move(plan)));
  {
    absl::MutexLock connections(&client->connections_mu_);
    client->Connect();
  }
  return client;
}

ResilientClient::ResilientClient(const ShardMap& map, uint32_t worker_rank,
                                 const Options& options, Coordinator coordinator,
                                 ServerTransportFactory transports,
                                 const std::atomic<bool>* cancel, TargetPlan plan)
    : job_id_(map.job_id()),
      worker_rank_(worker_rank),
      options_(options),
      coordinator_(std::move(coordinator)),
      make_transport_(std::move(transports)),
      cancel_(cancel),
      plan_(std::move(plan)),
      push_ids_(absl::Uniform<uint64_t>(absl::BitGen(), 1, uint64_t{1} << 62)),
      map_(map) {
  const size_t n = plan_.targets.size();
  pulls_.resize(n);
  versions_.resize(n);
  for (PushStep& slot : pushes_) {
    slot.pushes.resize(n);
    if (options_.wire_dtype == BF16) slot.wire.resize(plan_.num_parameters);
    // TOP_K's sparse pushes and row-sparse pushes keep what they send per target.
    slot.indices.resize(n);
    slot.values.resize(n);
  }
  if (compressing()) residual_.assign(plan_.num_parameters, 0.0f);
  server_of_.resize(n);
}

ResilientClient::~ResilientClient() { Shutdown(); }

void ResilientClient::Shutdown() {
  {
    absl::ReaderMutexLock connections(&connections_mu_);
    for (auto& transport : transports_) transport->CancelAll();
  }
  {
    absl::MutexLock lock(&mu_);
    if (!mu_.AwaitWithTimeout(absl::Condition(+[](int* calls) { return *calls == 0; },
                                              &calls_in_flight_),
                              absl::Seconds(30))) {
      LOG(ERROR) << calls_in_flight_ << " call(s) still in flight 30 s after a cancel";
    }
  }
  for (const PushStep& slot : pushes_) AwaitReleased(slot.step);
}

void ResilientClient::Connect() {
  // The servers of map_, and which one each target goes to (a new map: same targets, other
  // addresses). Built here, swapped in under both locks.
  std::map<std::string, size_t> index;
  std::vector<std::string> servers;
  std::vector<std::unique_ptr<ServerTransport>> transports;
  std::vector<size_t> server_of(plan_.targets.size());
  absl::StatusOr<TargetPlan> plan = PlanTargets(map_, options_.targets);
  for (size_t t = 0; t < plan_.targets.size(); ++t) {
    const std::string& address = plan.ok() ? plan->targets[t].address : plan_.targets[t].address;
    auto [it, added] = index.emplace(address, servers.size());
    if (added) {
      servers.push_back(address);
      transports.push_back(make_transport_(address, options_.targets.connections_per_server));
    }
    server_of[t] = it->second;
  }
  absl::MutexLock lock(&mu_);
  servers_ = std::move(servers);
  transports_ = std::move(transports);
  server_of_ = std::move(server_of);
  for (PushStep& slot : pushes_) slot.commits.resize(servers_.size());
}

size_t ResilientClient::TargetAt(size_t offset) const {
  auto it = std::upper_bound(
      plan_.targets.begin(), plan_.targets.end(), offset,
      [](size_t key, const ShardTarget& target) { return key < target.flat_offset; });
  return static_cast<size_t>(it - plan_.targets.begin()) - 1;
}

template <typename Request>
Request ResilientClient::Header(const ShardTarget& target, uint64_t step) const {
  Request request;
  request.set_job_id(job_id_);
  request.set_table(target.table);
  *request.mutable_range() = target.range;
  request.set_dtype(options_.wire_dtype);
  request.set_step(step);
  request.set_worker_rank(worker_rank_);
  return request;
}

uint64_t ResilientClient::pulled_version(size_t t) {
  absl::MutexLock lock(&mu_);
  return versions_[t];
}

ResilientClient::PushStep* ResilientClient::Slot(uint64_t step) {
  PushStep* slot = &pushes_[step % 2];
  if (slot->step != step) {
    slot->step = step;
    slot->grads = nullptr;
    slot->scale_follows = false;
    for (size_t t = 0; t < slot->pushes.size(); ++t) {
      // A target pulled but never pushed (TargetOptions::pull_only) has nothing to wait for.
      slot->pushes[t] = plan_.targets[t].pull_only ? Op{State::kDone, absl::OkStatus()} : Op();
    }
    slot->committed = false;
    slot->scale = 1.0f;
    slot->commits.assign(servers_.size(), Op());
    slot->applied = false;
    slot->releases = std::make_shared<Releases>();
  }
  return slot;
}

ResilientClient::Corked::Corked(ResilientClient* client) {
  absl::ReaderMutexLock connections(&client->connections_mu_);
  // (Transports of older maps are kept until the client ends: these stay valid.)
  for (auto& transport : client->transports_) corked_.push_back(transport.get());
  for (ServerTransport* transport : corked_) transport->Cork();
}

ResilientClient::Corked::~Corked() {
  for (ServerTransport* transport : corked_) transport->Uncork();
}

void ResilientClient::StartPull(size_t t, uint64_t step, float* params) {
  {
    absl::MutexLock lock(&mu_);
    if (step != pull_step_) {
      // The callbacks of the previous step's pulls must not run into the new one's: a caller
      // moves on only once they are all in (a model awaits every group before backward), and
      // otherwise waits here for those still in flight.
      mu_.Await(absl::Condition(
          +[](std::vector<Op>* pulls) {
            return std::none_of(pulls->begin(), pulls->end(),
                                [](const Op& op) { return op.state == State::kInFlight; });
          },
          &pulls_));
      pull_step_ = step;
      pull_params_ = params;
      for (Op& op : pulls_) op = Op();
      pulls_done_ = 0;
      pull_sparse_ = options_.pull_rows && options_.pull_rows(step, &pull_rows_);
    }
    if (pulls_[t].state != State::kIdle) return;
  }
  pulled_bytes_ += IssuePull(t);
}

size_t ResilientClient::IssuePull(size_t t) {
  // Held from before the call is counted until it started: FollowMap, which waits for every
  // counted call to end, then cannot be waiting for one that cannot start.
  absl::ReaderMutexLock connections(&connections_mu_);
  const ShardTarget& target = plan_.targets[t];
  uint64_t step;
  float* params;
  // Row-sparse: the step's rows within the target, as offsets from its first row.
  std::shared_ptr<std::vector<uint32_t>> rows;
  {
    absl::MutexLock lock(&mu_);
    step = pull_step_;
    params = pull_params_;
    pulls_[t] = Op{State::kInFlight, absl::OkStatus()};
    CallStarted();
    if (pull_sparse_ && target.row_width > 0) {
      rows = std::make_shared<std::vector<uint32_t>>();
      const uint64_t first = target.range.begin() / target.row_width;
      const uint64_t end = target.range.end() / target.row_width;
      for (auto r = std::lower_bound(pull_rows_.begin(), pull_rows_.end(), first);
           r != pull_rows_.end() && *r < end; ++r) {
        rows->push_back(static_cast<uint32_t>(*r - first));
      }
    }
  }
  PullRequest request = Header<PullRequest>(target, step);
  const bool bf16 = options_.wire_dtype == BF16;
  const size_t value_bytes = bf16 ? sizeof(uint16_t) : sizeof(float);
  if (rows != nullptr) {
    request.set_row_width(target.row_width);
    request.mutable_rows()->Add(rows->begin(), rows->end());
    const size_t width = target.row_width;
    // The rows arrive packed in a buffer of their own (kept alive by the callback) and are
    // scattered into their places in params.
    auto packed = std::make_shared<std::vector<char>>(rows->size() * width * value_bytes);
    transports_[server_of_[t]]->Pull(
        request, target.connection, absl::Now() + options_.pull_timeout, packed->size(),
        CopyTo(packed->data()),
        [this, t, step, params, bf16, width, rows, packed, offset = target.flat_offset](
            absl::Status status, uint64_t version) {
          if (status.ok()) {
            for (size_t i = 0; i < rows->size(); ++i) {
              float* to = params + offset + size_t{(*rows)[i]} * width;
              if (bf16) {
                Bf16ToFloats(reinterpret_cast<const uint16_t*>(packed->data()) + i * width, width,
                             to);
              } else {
                std::memcpy(to, packed->data() + i * width * sizeof(float),
                            width * sizeof(float));
              }
            }
          }
          PullEnded(t, step, status, version);
        });
    return packed->size();
  }
  // The reply goes straight from gRPC's buffers into the step's parameters: copied (FP32) or
  // widened (BF16) on the transport's thread, while the model computes.
  const size_t count = target.count();
  transports_[server_of_[t]]->Pull(
      request, target.connection, absl::Now() + options_.pull_timeout, count * value_bytes,
      FloatsInto(params + target.flat_offset, bf16, count),
      [this, t, step](absl::Status status, uint64_t version) {
        PullEnded(t, step, status, version);
      });
  return count * value_bytes;
}

void ResilientClient::PullEnded(size_t t, uint64_t step, const absl::Status& status,
                                uint64_t version) {
  absl::MutexLock lock(&mu_);
  CallEnded();
  if (step != pull_step_) return;
  if (!status.ok()) {
    pulls_[t] = Op{State::kFailed, status};
    return;
  }
  pulls_[t] = Op{State::kDone, absl::OkStatus()};
  versions_[t] = version;
  if (++pulls_done_ == pulls_.size() && step > 1) {
    // Every shard answered step `step`: it applied step - 1, which is never sent again.
    PushStep& previous = pushes_[(step - 1) % 2];
    if (previous.step == step - 1) previous.applied = true;
  }
}

absl::Status ResilientClient::AwaitPull(size_t t) {
  while (true) {
    {
      absl::MutexLock lock(&mu_);
      if (WaitFor([&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
            return pulls_[t].state == State::kDone;
          })) {
        failing_since_ = absl::InfiniteFuture();
        backoff_ = absl::Milliseconds(20);
        return absl::OkStatus();
      }
    }
    RETURN_IF_ERROR(Recover());
  }
}

absl::Status ResilientClient::PullAll(uint64_t step, float* params) {
  {
    Corked together(this);
    for (size_t t = 0; t < plan_.targets.size(); ++t) StartPull(t, step, params);
  }
  for (size_t t = 0; t < plan_.targets.size(); ++t) RETURN_IF_ERROR(AwaitPull(t));
  return absl::OkStatus();
}

uint16_t* ResilientClient::Bf16Payloads(uint64_t step) {
  if (options_.wire_dtype != BF16) return nullptr;
  absl::MutexLock lock(&mu_);
  return Slot(step)->wire.data();
}

void TopKCompress(const float* grad, size_t n, float fraction, DType wire_dtype, float* residual,
                  SparsePush* out) {
  for (size_t i = 0; i < n; ++i) residual[i] += grad[i];  // v = grad + residual, in place.
  const size_t k = std::min(
      n, std::max<size_t>(1, static_cast<size_t>(std::llround(static_cast<double>(fraction) * n))));
  std::vector<uint32_t>& indices = out->indices;
  indices.resize(n);
  for (size_t i = 0; i < n; ++i) indices[i] = static_cast<uint32_t>(i);
  if (k < n) {
    // The k largest |v| (ties broken by the lower offset, so the choice is deterministic).
    auto larger = [residual](uint32_t a, uint32_t b) {
      const float x = std::fabs(residual[a]), y = std::fabs(residual[b]);
      return x > y || (x == y && a < b);
    };
    std::nth_element(indices.begin(), indices.begin() + static_cast<ptrdiff_t>(k - 1),
                     indices.end(), larger);
    indices.resize(k);
    std::sort(indices.begin(), indices.end());
  }
  const size_t width = wire_dtype == BF16 ? sizeof(uint16_t) : sizeof(float);
  out->values.resize(indices.size() * width);
  for (size_t j = 0; j < indices.size(); ++j) {
    float& v = residual[indices[j]];
    if (wire_dtype == BF16) {
      const uint16_t narrowed = FloatToBf16(v);
      std::memcpy(out->values.data() + j * width, &narrowed, width);
      v -= Bf16ToFloat(narrowed);  // What rounding left out is sent later.
    } else {
      std::memcpy(out->values.data() + j * width, &v, width);
      v = 0.0f;
    }
  }
}

void SelectRows(const float* grad, size_t n, uint32_t width, DType wire_dtype, SparsePush* out) {
  const size_t value_bytes = wire_dtype == BF16 ? sizeof(uint16_t) : sizeof(float);
  out->indices.clear();
  out->values.clear();
  const size_t rows = width > 0 ? n / width : 0;
  for (size_t r = 0; r < rows; ++r) {
    const float* row = grad + r * width;
    bool any = false;
    for (uint32_t c = 0; c < width && !any; ++c) any = row[c] != 0.0f;
    if (!any) continue;
    out->indices.push_back(static_cast<uint32_t>(r));
    const size_t at = out->values.size();
    out->values.resize(at + width * value_bytes);
    if (wire_dtype == BF16) {
      FloatsToBf16(row, width, reinterpret_cast<uint16_t*>(out->values.data() + at));
    } else {
      std::memcpy(out->values.data() + at, row, width * sizeof(float));
    }
  }
}

void ResilientClient::StartPush(size_t t, uint64_t step, const float* grads, bool scale_follows,
                                bool narrowed) {
  PushStep* slot;
  {
    absl::MutexLock lock(&mu_);
    slot = Slot(step);
    slot->grads = grads;
    slot->scale_follows = scale_follows;
    if (slot->pushes[t].state != State::kIdle) return;
  }
  const ShardTarget& target = plan_.targets[t];
  if (compressing()) {
    SparsePush sparse;
    sparse.indices = std::move(slot->indices[t]);
    sparse.values = std::move(slot->values[t]);
    TopKCompress(grads + target.flat_offset, target.count(), options_.top_k_fraction,
                 options_.wire_dtype, residual_.data() + target.flat_offset, &sparse);
    pushed_bytes_ += sparse.indices.size() * sizeof(uint32_t) + sparse.values.size();
    slot->indices[t] = std::move(sparse.indices);
    slot->values[t] = std::move(sparse.values);
    IssuePush(slot, t);
    return;
  }
  if (RowSparse(target)) {
    SparsePush rows;
    rows.indices = std::move(slot->indices[t]);
    rows.values = std::move(slot->values[t]);
    SelectRows(grads + target.flat_offset, target.count(), target.row_width, options_.wire_dtype,
               &rows);
    pushed_bytes_ += rows.indices.size() * sizeof(uint32_t) + rows.values.size();
    slot->indices[t] = std::move(rows.indices);
    slot->values[t] = std::move(rows.values);
    IssuePush(slot, t);
    return;
  }
  pushed_bytes_ += target.count() * (options_.wire_dtype == BF16 ? sizeof(uint16_t) : sizeof(float));
  if (options_.wire_dtype == BF16 && !narrowed) {
    FloatsToBf16(grads + target.flat_offset, target.count(),
                 slot->wire.data() + target.flat_offset);
  }
  IssuePush(slot, t);
}

void ResilientClient::IssuePush(PushStep* slot, size_t t) {
  absl::ReaderMutexLock connections(&connections_mu_);  // As in IssuePull.
  const ShardTarget& target = plan_.targets[t];
  uint64_t step;
  const float* grads;
  bool scale_follows;
  std::shared_ptr<Releases> releases;
  uint64_t base_version;
  {
    absl::MutexLock lock(&mu_);
    step = slot->step;
    grads = slot->grads;
    scale_follows = slot->scale_follows;
    releases = slot->releases;
    base_version = versions_[t];
    slot->pushes[t] = Op{State::kInFlight, absl::OkStatus()};
    CallStarted();
  }
  {
    absl::MutexLock lock(&releases->mu);
    ++releases->pending;
  }
  PushRequest request = Header<PushRequest>(target, step);
  request.set_base_version(base_version);
  request.set_scale_follows(scale_follows);
  if (options_.consistency != SYNC) request.set_push_id(push_ids_ + step);
  const bool bf16 = options_.wire_dtype == BF16;
  const void* payload = bf16 ? static_cast<const void*>(slot->wire.data() + target.flat_offset)
                             : static_cast<const void*>(grads + target.flat_offset);
  size_t payload_bytes = target.count() * (bf16 ? sizeof(uint16_t) : sizeof(float));
  if (compressing()) {  // The sparse push StartPush made (the same when sent again).
    request.mutable_indices()->Add(slot->indices[t].begin(), slot->indices[t].end());
    payload = slot->values[t].data();
    payload_bytes = slot->values[t].size();
  } else if (RowSparse(target)) {  // Likewise the rows.
    request.set_row_width(target.row_width);
    request.mutable_rows()->Add(slot->indices[t].begin(), slot->indices[t].end());
    payload = slot->values[t].data();
    payload_bytes = slot->values[t].size();
  }
  transports_[server_of_[t]]->Push(
      request, target.connection, absl::Now() + options_.push_timeout, payload, payload_bytes,
      [this, slot, t, step](absl::Status status) {
        absl::MutexLock lock(&mu_);
        CallEnded();
        if (slot->step != step) return;
        // ALREADY_EXISTS: the shard has it (aggregated, or the step applied): a resend.
        if (status.ok() || absl::IsAlreadyExists(status)) {
          slot->pushes[t] = Op{State::kDone, absl::OkStatus()};
        } else {
          slot->pushes[t] = Op{State::kFailed, status};
        }
      },
      [releases] {
        absl::MutexLock lock(&releases->mu);
        --releases->pending;
      });
}

void ResilientClient::StartCommit(uint64_t step, float scale) {
  PushStep* slot;
  size_t servers;
  {
    absl::MutexLock lock(&mu_);
    slot = Slot(step);
    slot->committed = true;
    slot->scale = scale;
    servers = slot->commits.size();
  }
  for (size_t s = 0; s < servers; ++s) IssueCommit(slot, s);
}

void ResilientClient::IssueCommit(PushStep* slot, size_t server) {
  absl::ReaderMutexLock connections(&connections_mu_);  // As in IssuePull.
  // (FollowMap resizes every slot's commits to the new servers before Recover issues them.)
  if (server >= transports_.size()) return;
  CommitStepRequest request;
  {
    absl::MutexLock lock(&mu_);
    request.set_step(slot->step);
    request.set_grad_scale(slot->scale);
    slot->commits[server] = Op{State::kInFlight, absl::OkStatus()};
    CallStarted();
  }
  request.set_job_id(job_id_);
  request.set_worker_rank(worker_rank_);
  transports_[server]->CommitStep(
      request, absl::Now() + options_.push_timeout,
      [this, slot, server, step = request.step()](absl::Status status) {
        absl::MutexLock lock(&mu_);
        CallEnded();
        if (slot->step != step || server >= slot->commits.size()) return;
        if (status.ok() || absl::IsAlreadyExists(status)) {
          slot->commits[server] = Op{State::kDone, absl::OkStatus()};
        } else {
          slot->commits[server] = Op{State::kFailed, status};
        }
      });
}

absl::Status ResilientClient::AwaitPushed(uint64_t step) {
  while (true) {
    {
      absl::MutexLock lock(&mu_);
      PushStep* slot = &pushes_[step % 2];
      if (slot->step != step) return absl::OkStatus();  // Nothing pushed, or long applied.
      if (WaitFor([&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
            for (const Op& op : slot->pushes) {
              if (op.state != State::kDone) return false;
            }
            if (!slot->committed) return true;
            for (const Op& op : slot->commits) {
              if (op.state != State::kDone) return false;
            }
            return true;
          })) {
        failing_since_ = absl::InfiniteFuture();
        backoff_ = absl::Milliseconds(20);
        return absl::OkStatus();
      }
    }
    RETURN_IF_ERROR(Recover());
  }
}

void ResilientClient::AwaitReleased(uint64_t step) {
  std::shared_ptr<Releases> releases;
  bool failed = false;
  {
    absl::MutexLock lock(&mu_);
    const PushStep& slot = pushes_[step % 2];
    if (slot.step != step || slot.releases == nullptr) return;
    releases = slot.releases;
    for (const Op& op : slot.pushes) failed |= op.state != State::kDone;
  }
  absl::MutexLock lock(&releases->mu);
  const absl::Condition released(+[](int* pending) { return *pending <= 0; },
                                 &releases->pending);
  if (!releases->mu.AwaitWithTimeout(released,
                                     failed ? kFailedReleaseWait : absl::Seconds(30))) {
    LOG(WARNING) << releases->pending << " push payload(s) of step " << step
                 << " still held by gRPC; reusing the buffer";
  }
}

bool ResilientClient::AnyFailed() const {
  for (const Op& op : pulls_) {
    if (op.state == State::kFailed) return true;
  }
  for (const PushStep& slot : pushes_) {
    for (const Op& op : slot.pushes) {
      if (op.state == State::kFailed) return true;
    }
    for (const Op& op : slot.commits) {
      if (op.state == State::kFailed) return true;
    }
  }
  return false;
}

bool ResilientClient::WaitFor(const std::function<bool()>& ready) {
  struct Context {
    ResilientClient* self;
    const std::function<bool()>* ready;
  } context{this, &ready};
  const absl::Condition done(
      +[](Context* c) ABSL_NO_THREAD_SAFETY_ANALYSIS {
        return (*c->ready)() || c->self->AnyFailed();
      },
      &context);
  const absl::Time check_map_at = absl::Now() + kMapCheckAfter;
  while (!mu_.AwaitWithTimeout(done, absl::Milliseconds(100))) {
    if (Cancelled()) return false;
    if (coordinator_.shard_map && absl::Now() >= check_map_at) {
      check_map_ = true;  // A frozen server answers nothing: has the job failed over?
      return false;
    }
  }
  return ready();
}

absl::Status ResilientClient::Recover() {
  if (Cancelled()) return absl::CancelledError("job cancelled");
  bool check_map;
  {
    absl::MutexLock lock(&mu_);
    check_map = check_map_;
    check_map_ = false;
  }
  const std::vector<Failure> failures = Failures();
  if (failures.empty()) {
    if (!check_map) return absl::OkStatus();
    // A call has taken a while: if the job's map moved on (its server frozen or cut off, and
    // failed over), follow it now instead of waiting out the call's deadline.
    ASSIGN_OR_RETURN(const bool followed, FollowNewerMap());
    if (followed) Reissue();
    return absl::OkStatus();
  }
  std::set<std::string> unreachable;
  for (const Failure& failure : failures) {
    const absl::StatusCode code = failure.status.code();
    // NOT_FOUND: the server at that address does not hold the shard the map puts there: a new
    // process replaced the one that did (restarted in place). To the coordinator (which checks
    // the incarnation) it is as lost as an unreachable one, and the job's next map follows.
    const bool retry = code == absl::StatusCode::kUnavailable ||
                       code == absl::StatusCode::kDeadlineExceeded ||
                       code == absl::StatusCode::kNotFound ||
                       code == absl::StatusCode::kCancelled;  // By FollowMap.
    if (!retry) return failure.status;
    if (code != absl::StatusCode::kCancelled) unreachable.insert(failure.address);
  }
  const absl::Time now = absl::Now();
  if (failing_since_ == absl::InfiniteFuture()) failing_since_ = now;
  if (now - failing_since_ > options_.give_up) return failures.front().status;
  LOG_EVERY_N(WARNING, 20) << failures.front().status << "; retrying";
  if (coordinator_.report_unreachable) {
    for (const std::string& address : unreachable) coordinator_.report_unreachable(address);
  }
  ASSIGN_OR_RETURN(const bool followed, FollowNewerMap());
  if (!followed) {
    absl::SleepFor(backoff_);
    backoff_ = std::min(2 * backoff_, kMaxBackoff);
  }
  Reissue();
  return absl::OkStatus();
}

std::vector<ResilientClient::Failure> ResilientClient::Failures() {
  std::vector<Failure> failures;
  {
    absl::MutexLock lock(&mu_);
    for (size_t t = 0; t < pulls_.size(); ++t) {
      if (pulls_[t].state == State::kFailed) {
        failures.push_back({pulls_[t].error, servers_[server_of_[t]]});
      }
    }
    for (const PushStep& slot : pushes_) {
      for (size_t t = 0; t < slot.pushes.size(); ++t) {
        if (slot.pushes[t].state == State::kFailed) {
          failures.push_back({slot.pushes[t].error, servers_[server_of_[t]]});
        }
      }
      for (size_t s = 0; s < slot.commits.size(); ++s) {
        if (slot.commits[s].state == State::kFailed) {
          failures.push_back({slot.commits[s].error, servers_[s]});
        }
      }
    }
  }
  return failures;
}

absl::StatusOr<bool> ResilientClient::FollowNewerMap() {
  if (!coordinator_.shard_map) return false;
  absl::StatusOr<ShardMap> latest = coordinator_.shard_map();
  uint64_t epoch;
  {
    absl::ReaderMutexLock connections(&connections_mu_);
    epoch = map_.epoch();
  }
  if (!latest.ok() || latest->epoch() <= epoch) return false;
  RETURN_IF_ERROR(FollowMap(*latest));
  return true;
}

void ResilientClient::Reissue() {
  // Everything that failed (or that a new map needs again) is started again.
  std::vector<size_t> pulls;
  std::vector<std::pair<PushStep*, size_t>> pushes, commits;
  {
    absl::MutexLock lock(&mu_);
    for (size_t t = 0; t < pulls_.size(); ++t) {
      if (pulls_[t].state == State::kFailed) pulls.push_back(t);
    }
    for (PushStep& slot : pushes_) {
      for (size_t t = 0; t < slot.pushes.size(); ++t) {
        if (slot.pushes[t].state == State::kFailed) pushes.emplace_back(&slot, t);
      }
      for (size_t s = 0; s < slot.commits.size(); ++s) {
        if (slot.commits[s].state == State::kFailed) commits.emplace_back(&slot, s);
      }
    }
  }
  // Pushes before commits and pulls: a promoted backup aggregates the step afresh.
  for (const auto& [slot, t] : pushes) IssuePush(slot, t);
  for (const auto& [slot, s] : commits) IssueCommit(slot, s);
  for (size_t t : pulls) IssuePull(t);
}

absl::Status ResilientClient::FollowMap(const ShardMap& map) {
  ASSIGN_OR_RETURN(TargetPlan plan, PlanTargets(map, options_.targets));
  bool same = plan.targets.size() == plan_.targets.size();
  for (size_t t = 0; same && t < plan.targets.size(); ++t) {
    same = plan.targets[t].table == plan_.targets[t].table &&
           plan.targets[t].flat_offset == plan_.targets[t].flat_offset &&
           plan.targets[t].count() == plan_.targets[t].count();
  }
  if (!same) {
    return absl::FailedPreconditionError(absl::StrCat(
        "shard map epoch ", map.epoch(), " of job ", job_id_, " has other shard ranges"));
  }
  // No call starts meanwhile (the pusher thread waits): stop the calls to the old servers, wait
  // for their callbacks, and connect to the new ones.
  absl::MutexLock connections(&connections_mu_);
  LOG(INFO) << "following shard map epoch " << map.epoch() << " (was " << map_.epoch() << ")";
  for (auto& transport : transports_) transport->CancelAll();
  {
    absl::MutexLock lock(&mu_);
    if (!mu_.AwaitWithTimeout(absl::Condition(+[](int* calls) { return *calls == 0; },
                                              &calls_in_flight_),
                              absl::Seconds(30))) {
      return absl::DeadlineExceededError("calls to the old servers did not end after a cancel");
    }
    for (auto& transport : transports_) retired_.push_back(std::move(transport));
  }
  map_ = map;
  Connect();
  absl::MutexLock lock(&mu_);
  for (Op& op : pulls_) {
    if (op.state != State::kDone) op = Op{State::kFailed, absl::CancelledError("new shard map")};
  }
  for (PushStep& slot : pushes_) {
    if (slot.step == 0 || slot.applied) continue;
    for (Op& op : slot.pushes) {
      if (options_.consistency == SYNC) {
        // Everything again: the promoted backups aggregate the step afresh.
        if (op.state != State::kIdle) op = Op{State::kFailed, absl::CancelledError("new map")};
      } else if (op.state != State::kDone && op.state != State::kIdle) {
        // ASYNC: what was not answered goes again; a shard that has it already (here, or
        // replicated from its old primary) knows its push id and does not apply it twice.
        op = Op{State::kFailed, absl::CancelledError("new map")};
      }
    }
    if (slot.committed) {
      slot.commits.assign(servers_.size(), Op{State::kFailed, absl::CancelledError("new map")});
    }
  }
  return absl::OkStatus();
}

}  // namespace psrv
