#include "worker/server_transport.h"

#include <algorithm>
#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <grpcpp/client_context.h>
#include <grpcpp/generic/generic_stub.h>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/channel.h"
#include "common/grpc_status.h"
#include "common/wire.h"

namespace psrv {
namespace {

class GrpcServerTransport : public ServerTransport {
 public:
  GrpcServerTransport(const std::string& address, int connections) : address_(address) {
    for (int i = 0; i < std::max(1, connections); ++i) {
      // CreateChannel uses a local subchannel pool: each stub gets its own connection.
      stubs_.push_back(std::make_unique<grpc::GenericStub>(CreateChannel(address)));
    }
  }

  void Pull(const PullRequest& request, int connection, absl::Time deadline, size_t bytes,
            PayloadPiece receive, PullDone done) override {
    if (request.rows_size() == 0 && bytes <= kMaxBatchedBytes) {
      absl::MutexLock lock(&mu_);
      if (corked_ > 0) {
        held_pulls_[connection].push_back(
            HeldPull{request, deadline, bytes, std::move(receive), std::move(done)});
        return;
      }
    }
    SendPull(request, connection, deadline, bytes, std::move(receive), std::move(done));
  }

  void Push(const PushRequest& request, int connection, absl::Time deadline, const void* payload,
            size_t bytes, Done done, std::function<void()> released) override {
    if (request.indices_size() == 0 && request.rows_size() == 0 && bytes <= kMaxBatchedBytes) {
      absl::MutexLock lock(&mu_);
      if (corked_ > 0) {
        held_pushes_[connection].push_back(
            HeldPush{request, deadline, payload, bytes, std::move(done), std::move(released)});
        return;
      }
    }
    SendPush(request, connection, deadline, payload, bytes, std::move(done), std::move(released));
  }

  void CommitStep(const CommitStepRequest& request, absl::Time deadline, Done done) override {
    {
      absl::MutexLock lock(&mu_);
      if (corked_ > 0) {  // Sent after the held pushes, as it would have been.
        held_commits_.push_back(HeldCommit{request, deadline, std::move(done)});
        return;
      }
    }
    SendCommit(request, deadline, std::move(done));
  }

  void Cork() override {
    absl::MutexLock lock(&mu_);
    ++corked_;
  }

  void Uncork() override {
    Held held_calls;
    {
      absl::MutexLock lock(&mu_);
      if (--corked_ > 0) return;
      held_calls = TakeHeld();
    }
    auto& [pulls, pushes, commits] = held_calls;
    Spread(pulls);
    Spread(pushes);
    for (auto& [connection, held] : pushes) {
      if (held.size() == 1) {
        HeldPush& push = held[0];
        SendPush(push.request, connection, push.deadline, push.payload, push.bytes,
                 std::move(push.done), std::move(push.released));
      } else {
        SendPushBatch(connection, std::move(held));
      }
    }
    for (HeldCommit& commit : commits) {
      SendCommit(commit.request, commit.deadline, std::move(commit.done));
    }
    for (auto& [connection, held] : pulls) {
      if (held.size() == 1) {
        HeldPull& pull = held[0];
        SendPull(pull.request, connection, pull.deadline, pull.bytes, std::move(pull.receive),
                 std::move(pull.done));
      } else {
        SendPullBatch(connection, std::move(held));
      }
    }
  }

  void CancelAll() override {
    Held held_calls;
    {
      absl::MutexLock lock(&mu_);
      for (Call* call : live_) call->context.TryCancel();
      held_calls = TakeHeld();
    }
    auto& [pulls, pushes, commits] = held_calls;
    // Held calls end here, never sent.
    const absl::Status cancelled = absl::CancelledError(absl::StrCat("calls to ", address_));
    for (auto& [connection, held] : pulls) {
      for (HeldPull& pull : held) pull.done(cancelled, 0);
    }
    for (auto& [connection, held] : pushes) {
      for (HeldPush& push : held) {
        push.done(cancelled);
        if (push.released) push.released();
      }
    }
    for (HeldCommit& commit : commits) commit.done(cancelled);
  }

 private:
  // Calls held while corked.
  struct HeldPull {
    PullRequest request;
    absl::Time deadline;
    size_t bytes;
    PayloadPiece receive;
    PullDone done;
  };
  struct HeldPush {
    PushRequest request;
    absl::Time deadline;
    const void* payload;
    size_t bytes;
    Done done;
    std::function<void()> released;
  };
  struct HeldCommit {
    CommitStepRequest request;
    absl::Time deadline;
    Done done;
  };

  // Every call held, by connection (commits: on connection 0).
  struct Held {
    std::map<int, std::vector<HeldPull>> pulls;
    std::map<int, std::vector<HeldPush>> pushes;
    std::vector<HeldCommit> commits;
  };
  // A step's held calls of one kind, when they carry at least 2 * kMinSpreadBytes, are spread
  // over every connection in contiguous runs of about equal bytes (the targets put every small
  // shard on connection 0): each connection's batch is then sent, received, parsed and answered
  // beside the others, on both ends.
  template <typename T>
  void Spread(std::map<int, std::vector<T>>& by_connection) const {
    const size_t n = stubs_.size();
    size_t total = 0;
    for (const auto& [connection, held] : by_connection) {
      for (const T& item : held) total += item.bytes;
    }
    if (n < 2 || total < 2 * kMinSpreadBytes) return;
    std::vector<T> all;
    for (auto& [connection, held] : by_connection) {
      for (T& item : held) all.push_back(std::move(item));
    }
    by_connection.clear();
    size_t before = 0;  // Bytes of the items before this one.
    for (T& item : all) {
      const int c = static_cast<int>(std::min(n - 1, before * n / total));
      before += item.bytes;
      by_connection[c].push_back(std::move(item));
    }
  }
  static constexpr size_t kMinSpreadBytes = 128 << 10;

  // Takes the held calls out (to be sent, or cancelled).
  Held TakeHeld() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return Held{std::exchange(held_pulls_, {}), std::exchange(held_pushes_, {}),
                std::exchange(held_commits_, {})};
  }

  // An item's answer in a batch reply, as its own call would have ended.
  static absl::Status ItemStatus(const ItemResult& result, const std::string& what) {
    if (result.code() == 0) return absl::OkStatus();
    const int code = result.code() > 0 && result.code() <= 16 ? result.code() : 2;  // UNKNOWN
    return absl::Status(static_cast<absl::StatusCode>(code),
                        absl::StrCat(what, ": ", result.message()));
  }

  void SendPullBatch(int connection, std::vector<HeldPull> items) {
    absl::Time deadline = absl::InfiniteFuture();
    PullBatchRequest batch;
    for (const HeldPull& item : items) {
      deadline = std::min(deadline, item.deadline);
      *batch.add_pulls() = item.request;
    }
    Call* call = Start(deadline);
    grpc::ByteBuffer message = Small(batch);
    const std::string what = absl::StrCat("pull batch of ", items.size(), " from ", address_);
    Stub(connection)->UnaryCall(
        &call->context, "/psrv.ParameterServer/PullBatch", grpc::StubOptions(), &message,
        &call->response,
        [this, call, what, items = std::move(items)](grpc::Status status) mutable {
          absl::Status result = FromGrpcStatus(status, what);
          PullBatchResponse reply;
          PayloadPiece route;  // Each piece to the items answered OK that it covers.
          if (result.ok()) {
            result = ParseWithPayloadPieces(
                &call->response, &reply,
                [&](size_t size) -> absl::Status {
                  if (reply.results_size() != static_cast<int>(items.size())) {
                    return absl::DataLossError(absl::StrCat(what, ": ", reply.results_size(),
                                                            " results for ", items.size(),
                                                            " items"));
                  }
                  // Only the items answered OK have values in the reply.
                  size_t total = 0;
                  std::vector<size_t> sizes;
                  std::vector<PayloadPiece> receivers;
                  for (size_t i = 0; i < items.size(); ++i) {
                    const bool ok = reply.results(static_cast<int>(i)).code() == 0;
                    sizes.push_back(ok ? items[i].bytes : 0);
                    receivers.push_back(ok ? items[i].receive : nullptr);
                    total += sizes.back();
                  }
                  if (total != size) {
                    return absl::DataLossError(absl::StrCat(what, ": expected ", total,
                                                            " bytes, got ", size));
                  }
                  route = SplitPayload(std::move(sizes), std::move(receivers));
                  return absl::OkStatus();
                },
                [&](const char* data, size_t size, size_t offset) { route(data, size, offset); });
          }
          Finish(call);
          for (size_t i = 0; i < items.size(); ++i) {
            HeldPull& pull = items[i];
            if (!result.ok()) {
              pull.done(result, 0);
              continue;
            }
            const ItemResult& answer = reply.results(static_cast<int>(i));
            pull.done(ItemStatus(answer, absl::StrCat("pull ", pull.request.table(), " from ",
                                                      address_)),
                      answer.version());
          }
        });
  }

  void SendPushBatch(int connection, std::vector<HeldPush> items) {
    absl::Time deadline = absl::InfiniteFuture();
    PushBatchRequest batch;
    std::vector<PayloadSlice> slices;
    std::vector<std::pair<std::string, Done>> dones;
    for (HeldPush& item : items) {
      deadline = std::min(deadline, item.deadline);
      *batch.add_pushes() = item.request;
      slices.push_back(PayloadSlice{item.payload, item.bytes, &RunAndDelete,
                                    new std::function<void()>(std::move(item.released))});
      dones.emplace_back(absl::StrCat("push ", item.request.table(), " to ", address_),
                         std::move(item.done));
    }
    Call* call = Start(deadline);
    grpc::ByteBuffer message;
    SerializeWithPayloads(batch, slices, &message);
    const std::string what = absl::StrCat("push batch of ", items.size(), " to ", address_);
    Stub(connection)->UnaryCall(
        &call->context, "/psrv.ParameterServer/PushBatch", grpc::StubOptions(), &message,
        &call->response, [this, call, what, dones = std::move(dones)](grpc::Status status) {
          absl::Status result = FromGrpcStatus(status, what);
          PushBatchResponse reply;
          if (result.ok()) {
            result = ParseWithoutPayload(&call->response, &reply,
                                         absl::StrCat(what, ": values in the reply"));
          }
          if (result.ok() && reply.results_size() != static_cast<int>(dones.size())) {
            result = absl::DataLossError(absl::StrCat(what, ": ", reply.results_size(),
                                                      " results for ", dones.size(), " items"));
          }
          Finish(call);
          for (size_t i = 0; i < dones.size(); ++i) {
            dones[i].second(result.ok() ? ItemStatus(reply.results(static_cast<int>(i)),
                                                     dones[i].first)
                                        : result);
          }
        });
  }

  void SendPull(const PullRequest& request, int connection, absl::Time deadline, size_t bytes,
                PayloadPiece receive, PullDone done) {
    Call* call = Start(deadline);
    grpc::ByteBuffer message = Small(request);
    const std::string what = absl::StrCat("pull ", request.table(), " from ", address_);
    Stub(connection)->UnaryCall(
        &call->context, "/psrv.ParameterServer/Pull", grpc::StubOptions(), &message,
        &call->response,
        [this, call, bytes, what, receive = std::move(receive),
         done = std::move(done)](grpc::Status status) {
          absl::Status result = FromGrpcStatus(status, what);
          uint64_t version = 0;
          if (result.ok()) {
            PullResponse reply;
            result = ParseWithPayloadPieces(&call->response, &reply, ExpectBytes(bytes, what),
                                            receive);
            version = reply.version();
          }
          Finish(call);
          done(result, version);
        });
  }

  void SendPush(const PushRequest& request, int connection, absl::Time deadline,
                const void* payload, size_t bytes, Done done, std::function<void()> released) {
    Call* call = Start(deadline);
    // UnaryCall takes its own reference to the message's slices: once `message` is gone, the
    // payload's release comes when gRPC is done with it.
    grpc::ByteBuffer message;
    SerializeWithPayload(request, payload, bytes, &RunAndDelete,
                         new std::function<void()>(std::move(released)), &message);
    const std::string what = absl::StrCat("push ", request.table(), " to ", address_);
    Stub(connection)->UnaryCall(&call->context, "/psrv.ParameterServer/Push", grpc::StubOptions(),
                                &message, &call->response,
                                [this, call, what, done = std::move(done)](grpc::Status status) {
                                  Finish(call);
                                  done(FromGrpcStatus(status, what));
                                });
  }

  void SendCommit(const CommitStepRequest& request, absl::Time deadline, Done done) {
    Call* call = Start(deadline);
    grpc::ByteBuffer message = Small(request);
    const std::string what = absl::StrCat("commit step ", request.step(), " on ", address_);
    Stub(0)->UnaryCall(&call->context, "/psrv.ParameterServer/CommitStep", grpc::StubOptions(),
                       &message, &call->response,
                       [this, call, what, done = std::move(done)](grpc::Status status) {
                         Finish(call);
                         done(FromGrpcStatus(status, what));
                       });
  }

  // What lives until the callback (the request only until UnaryCall returns).
  struct Call {
    grpc::ClientContext context;
    grpc::ByteBuffer response;
  };

  static void RunAndDelete(void* arg) {
    auto* fn = static_cast<std::function<void()>*>(arg);
    if (*fn) (*fn)();
    delete fn;
  }

  grpc::GenericStub* Stub(int connection) {
    return stubs_[static_cast<size_t>(connection) % stubs_.size()].get();
  }

  Call* Start(absl::Time deadline) {
    Call* call = new Call();
    call->context.set_deadline(absl::ToChronoTime(deadline));
    Register(call);
    return call;
  }

  static grpc::ByteBuffer Small(const google::protobuf::MessageLite& message) {
    std::string bytes = message.SerializeAsString();
    grpc::Slice slice(bytes);
    return grpc::ByteBuffer(&slice, 1);
  }

  void Register(Call* call) ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    live_.insert(call);
  }

  void Finish(Call* call) {
    {
      absl::MutexLock lock(&mu_);
      live_.erase(call);
    }
    delete call;
  }

  const std::string address_;
  std::vector<std::unique_ptr<grpc::GenericStub>> stubs_;
  absl::Mutex mu_;
  std::set<Call*> live_ ABSL_GUARDED_BY(mu_);
  int corked_ ABSL_GUARDED_BY(mu_) = 0;
  std::map<int, std::vector<HeldPull>> held_pulls_ ABSL_GUARDED_BY(mu_);  // By connection.
  std::map<int, std::vector<HeldPush>> held_pushes_ ABSL_GUARDED_BY(mu_);
  std::vector<HeldCommit> held_commits_ ABSL_GUARDED_BY(mu_);
};

}  // namespace

std::unique_ptr<ServerTransport> CreateGrpcServerTransport(const std::string& address,
                                                           int connections) {
  return std::make_unique<GrpcServerTransport>(address, connections);
}

}  // namespace psrv
