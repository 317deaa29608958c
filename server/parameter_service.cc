#include "server/parameter_service.h"

#include <functional>
#include <optional>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/buffer_pool.h"
#include "common/grpc_status.h"
#include "common/status_macros.h"
#include "common/wire.h"
#include "server/apply.h"
#include "server/gradient_check.h"
#include "server/guarded_call.h"

namespace psrv {
namespace {

void SerializeSmall(const google::protobuf::MessageLite& message, grpc::ByteBuffer* out) {
  std::string bytes = message.SerializeAsString();
  grpc::Slice slice(bytes);
  *out = grpc::ByteBuffer(&slice, 1);
}

// Parses a request with a tensor payload into `header` and a pooled buffer.
absl::Status ParseRequest(const grpc::ByteBuffer* request, google::protobuf::MessageLite* header,
                          PooledBuffer* payload) {
  return ParseWithPayload(const_cast<grpc::ByteBuffer*>(request), header,
                          [payload](size_t size) -> absl::StatusOr<char*> {
                            *payload = BufferPool::Global()->Acquire(size);
                            return payload->data();
                          });
}

// Finishes a call whose answer is a version (the responses of Push, Replicate, InstallShard).
template <typename Response>
void FinishWithVersion(grpc::ServerUnaryReactor* reactor, grpc::ByteBuffer* response,
                       const absl::StatusOr<uint64_t>& version) {
  if (version.ok()) {
    Response reply;
    reply.set_version(*version);
    SerializeSmall(reply, response);
  }
  reactor->Finish(ToGrpcStatus(version.status()));
}

// A raw call answered at once with a version: parses the request and its payload, then `handle`.
template <typename Request, typename Response, typename Handle>
grpc::ServerUnaryReactor* AnswerWithVersion(grpc::CallbackServerContext* context,
                                            const char* method, const grpc::ByteBuffer* request,
                                            grpc::ByteBuffer* response, Handle handle) {
  return GuardedCall(context, method, [&](grpc::ServerUnaryReactor* reactor) {
    Request header;
    PooledBuffer payload;
    absl::Status status = ParseRequest(request, &header, &payload);
    FinishWithVersion<Response>(reactor, response,
                                status.ok() ? handle(header, payload)
                                            : absl::StatusOr<uint64_t>(status));
  });
}

// The callback that finishes a typed call with the store's answer.
template <typename Response>
std::function<void(absl::StatusOr<Response>)> Finisher(grpc::ServerUnaryReactor* reactor,
                                                       Response* response) {
  return [reactor, response](absl::StatusOr<Response> result) {
    if (result.ok()) *response = std::move(*result);
    reactor->Finish(ToGrpcStatus(result.status()));
  };
}

// Items of a PushBatch or PullBatch call.
constexpr int kMaxBatchItems = 4096;

absl::Status CheckBatchSize(int items, const char* what) {
  if (items == 0 || items > kMaxBatchItems) {
    return absl::InvalidArgumentError(absl::StrCat("a ", what, " has 1 to ", kMaxBatchItems,
                                                   " items, not ", items));
  }
  return absl::OkStatus();
}

void SetItemResult(const absl::Status& status, uint64_t version, ItemResult* result) {
  result->set_code(static_cast<int>(status.code()));
  result->set_message(std::string(status.message()));
  if (status.ok()) result->set_version(version);
}

// The answers of a batch's items, which come in any order and on any thread; the call is finished
// when the last one is in. `pending` starts at the items plus one, for the handler itself, so
// that items answered while the handler still hands others out do not finish it early.
template <typename Response>
struct BatchAnswers {
  BatchAnswers(grpc::ServerUnaryReactor* reactor, grpc::ByteBuffer* response, int items)
      : reactor(reactor), response(response), pending(items + 1) {
    for (int i = 0; i < items; ++i) reply.add_results();
  }
  grpc::ServerUnaryReactor* const reactor;
  grpc::ByteBuffer* const response;
  absl::Mutex mu;
  Response reply ABSL_GUARDED_BY(mu);
  int pending ABSL_GUARDED_BY(mu);
  std::vector<PullPayload> values ABSL_GUARDED_BY(mu);  // (PullBatch) per item.
};

}  // namespace

grpc::ServerUnaryReactor* ParameterService::CreateShards(grpc::CallbackServerContext* context,
                                                         const CreateShardsRequest* request,
                                                         CreateShardsResponse*) {
  return GuardedCall(context, "CreateShards", [&](grpc::ServerUnaryReactor* reactor) {
    reactor->Finish(ToGrpcStatus(store_->CreateShards(*request)));
  });
}

grpc::ServerUnaryReactor* ParameterService::DropJob(grpc::CallbackServerContext* context,
                                                    const DropJobRequest* request,
                                                    DropJobResponse*) {
  return GuardedCall(context, "DropJob", [&](grpc::ServerUnaryReactor* reactor) {
    reactor->Finish(ToGrpcStatus(store_->DropJob(request->job_id())));
  });
}

grpc::ServerUnaryReactor* ParameterService::SetWorkers(grpc::CallbackServerContext* context,
                                                       const SetWorkersRequest* request,
                                                       SetWorkersResponse*) {
  return GuardedCall(context, "SetWorkers", [&](grpc::ServerUnaryReactor* reactor) {
    reactor->Finish(ToGrpcStatus(store_->SetWorkers(*request)));
  });
}

grpc::ServerUnaryReactor* ParameterService::CommitStep(grpc::CallbackServerContext* context,
                                                       const CommitStepRequest* request,
                                                       CommitStepResponse*) {
  return GuardedCall(context, "CommitStep", [&](grpc::ServerUnaryReactor* reactor) {
    reactor->Finish(ToGrpcStatus(store_->CommitStep(*request)));
  });
}

grpc::ServerUnaryReactor* ParameterService::SaveCheckpoint(grpc::CallbackServerContext* context,
                                                           const SaveCheckpointRequest* request,
                                                           SaveCheckpointResponse* response) {
  return GuardedCall(context, "SaveCheckpoint", [&](grpc::ServerUnaryReactor* reactor) {
    store_->SaveCheckpoint(*request, Finisher(reactor, response));
  });
}

grpc::ServerUnaryReactor* ParameterService::Pull(grpc::CallbackServerContext* context,
                                                 const grpc::ByteBuffer* request,
                                                 grpc::ByteBuffer* response) {
  return GuardedCall(context, "Pull", [&](grpc::ServerUnaryReactor* reactor) {
    PullRequest header;
    absl::Status parsed = ParseWithoutPayload(const_cast<grpc::ByteBuffer*>(request), &header,
                                              "a pull request carries no values");
    if (!parsed.ok()) {
      reactor->Finish(ToGrpcStatus(parsed));
      return;
    }
    store_->Pull(header, [reactor, response, range = header.range(), dtype = header.dtype()](
                             absl::Status status, uint64_t version, PullPayload values) {
      if (status.ok()) {
        PullResponse reply;
        reply.set_version(version);
        reply.set_dtype(dtype);
        *reply.mutable_range() = range;
        // The reply aliases the shard's snapshot, which it keeps until gRPC has sent it.
        const char* data = values.data();
        const size_t size = values.size();
        SerializeWithPayload(reply, data, size, &PullPayload::ReturnReleased, values.Release(),
                             response);
      }
      reactor->Finish(ToGrpcStatus(status));
    });
  });
}

grpc::ServerUnaryReactor* ParameterService::Push(grpc::CallbackServerContext* context,
                                                 const grpc::ByteBuffer* request,
                                                 grpc::ByteBuffer* response) {
  return GuardedCall(context, "Push", [&](grpc::ServerUnaryReactor* reactor) {
    PushRequest header;
    PooledBuffer payload;
    std::optional<CopyCheckingFinite> copy;
    // The push's values are checked for NaN and Inf as they are copied off the wire.
    absl::Status status = ParseWithPayloadPieces(
        const_cast<grpc::ByteBuffer*>(request), &header,
        [&](size_t size) -> absl::Status {
          RETURN_IF_ERROR(store_->CheckPush(header, size).status());
          payload = BufferPool::Global()->Acquire(size);
          copy.emplace(payload.data(), header.dtype());
          return absl::OkStatus();
        },
        [&](const char* data, size_t size, size_t offset) { copy->Add(data, size, offset); });
    if (!status.ok()) {
      reactor->Finish(ToGrpcStatus(status));
      return;
    }
    // (A sparse push's values are checked again once ShardStore has widened them.)
    store_->Push(
        header, std::move(payload),
        [reactor, response](absl::StatusOr<uint64_t> version) {
          FinishWithVersion<PushResponse>(reactor, response, version);
        },
        copy->result());
  });
}

grpc::ServerUnaryReactor* ParameterService::PushBatch(grpc::CallbackServerContext* context,
                                                      const grpc::ByteBuffer* request,
                                                      grpc::ByteBuffer* response) {
  return GuardedCall(context, "PushBatch", [&](grpc::ServerUnaryReactor* reactor) {
    PushBatchRequest header;
    // Per item: its byte count in `values`, and (if its checks passed) the buffer its values are
    // copied into, checked for NaN and Inf on the way; else its error.
    struct Item {
      size_t bytes = 0;
      absl::Status error;
      PooledBuffer payload;
      std::optional<CopyCheckingFinite> copy;
      const Shard* shard = nullptr;  // Where it goes, once its checks passed.
    };
    std::vector<Item> parts;
    PayloadPiece route;  // Each piece to the copies of the items it covers.
    absl::Status status = ParseWithPayloadPieces(
        const_cast<grpc::ByteBuffer*>(request), &header,
        [&](size_t size) -> absl::Status {
          RETURN_IF_ERROR(CheckBatchSize(header.pushes_size(), "push batch"));
          parts.resize(static_cast<size_t>(header.pushes_size()));
          size_t total = 0;
          for (int i = 0; i < header.pushes_size(); ++i) {
            const PushRequest& push = header.pushes(i);
            const uint64_t begin = push.range().begin(), end = push.range().end();
            if ((push.dtype() != FP32 && push.dtype() != BF16) || end < begin) {
              return absl::InvalidArgumentError(absl::StrCat(
                  "push batch item ", i, ": not a dense FP32 or BF16 push of a range"));
            }
            const size_t value_bytes = push.dtype() == BF16 ? 2 : 4;
            if (end - begin > (size - total) / value_bytes) {
              return absl::InvalidArgumentError(absl::StrCat(
                  "push batch: values hold ", size, " bytes, fewer than the items' ranges need"));
            }
            parts[i].bytes = (end - begin) * value_bytes;
            total += parts[i].bytes;
          }
          if (total != size) {
            return absl::InvalidArgumentError(absl::StrCat("push batch: values hold ", size,
                                                           " bytes, the items' ranges ", total));
          }
          std::vector<size_t> sizes;
          std::vector<PayloadPiece> copies;
          for (int i = 0; i < header.pushes_size(); ++i) {
            const PushRequest& push = header.pushes(i);
            Item& item = parts[i];
            sizes.push_back(item.bytes);
            copies.emplace_back();  // (None: the item's bytes are skipped.)
            if (!push.values().empty() || push.indices_size() > 0 || push.rows_size() > 0) {
              item.error = absl::InvalidArgumentError(
                  "a push batch item is dense and its values are the batch's");
              continue;
            }
            absl::StatusOr<std::shared_ptr<Shard>> shard = store_->CheckPush(push, item.bytes);
            item.error = shard.status();
            if (!item.error.ok()) continue;
            item.shard = shard->get();
            item.payload = BufferPool::Global()->Acquire(item.bytes);
            CopyCheckingFinite* copy = &item.copy.emplace(item.payload.data(), push.dtype());
            copies.back() = [copy](const char* data, size_t size, size_t offset) {
              copy->Add(data, size, offset);
            };
          }
          route = SplitPayload(std::move(sizes), std::move(copies));
          return absl::OkStatus();
        },
        [&](const char* data, size_t size, size_t offset) { route(data, size, offset); });
    if (!status.ok()) {
      reactor->Finish(ToGrpcStatus(status));
      return;
    }
    auto answers = std::make_shared<BatchAnswers<PushBatchResponse>>(
        reactor, response, header.pushes_size());
    auto answered = [answers](int i, const absl::StatusOr<uint64_t>& version) {
      absl::MutexLock lock(&answers->mu);
      if (i >= 0) {
        SetItemResult(version.status(), version.ok() ? *version : 0,
                      answers->reply.mutable_results(i));
      }
      if (--answers->pending > 0) return;
      SerializeSmall(answers->reply, answers->response);
      answers->reactor->Finish(grpc::Status::OK);
    };
    // The items that passed, by shard (a shard's own in the batch's order). Shards go side by
    // side: a batch that completes several shards' steps applies them in parallel, as a commit
    // does, instead of one after another on this thread.
    std::vector<std::vector<int>> by_shard;
    {
      absl::flat_hash_map<const Shard*, size_t> group;
      for (int i = 0; i < header.pushes_size(); ++i) {
        Item& item = parts[i];
        if (!item.error.ok()) {
          answered(i, item.error);
          continue;
        }
        auto [it, added] = group.emplace(item.shard, by_shard.size());
        if (added) by_shard.emplace_back();
        by_shard[it->second].push_back(i);
      }
    }
    ParallelChunks(by_shard.size(), 1, [&](size_t begin, size_t end) {
      for (size_t g = begin; g < end; ++g) {
        for (int i : by_shard[g]) {
          store_->Push(
              header.pushes(i), std::move(parts[i].payload),
              [answered, i](absl::StatusOr<uint64_t> version) { answered(i, version); },
              parts[i].copy->result());
        }
      }
    });
    answered(-1, uint64_t{0});  // The handler's own count.
  });
}

grpc::ServerUnaryReactor* ParameterService::PullBatch(grpc::CallbackServerContext* context,
                                                      const grpc::ByteBuffer* request,
                                                      grpc::ByteBuffer* response) {
  return GuardedCall(context, "PullBatch", [&](grpc::ServerUnaryReactor* reactor) {
    PullBatchRequest header;
    absl::Status parsed = ParseWithoutPayload(const_cast<grpc::ByteBuffer*>(request), &header,
                                              "a pull request carries no values");
    if (parsed.ok()) parsed = CheckBatchSize(header.pulls_size(), "pull batch");
    if (!parsed.ok()) {
      reactor->Finish(ToGrpcStatus(parsed));
      return;
    }
    const int items = header.pulls_size();
    auto answers = std::make_shared<BatchAnswers<PullBatchResponse>>(reactor, response, items);
    {
      absl::MutexLock lock(&answers->mu);
      answers->values.resize(static_cast<size_t>(items));
    }
    auto answered = [answers](int i, const absl::Status& status, uint64_t version,
                              PullPayload values) {
      absl::MutexLock lock(&answers->mu);
      if (i >= 0) {
        SetItemResult(status, version, answers->reply.mutable_results(i));
        if (status.ok()) answers->values[static_cast<size_t>(i)] = std::move(values);
      }
      if (--answers->pending > 0) return;
      // The reply aliases each shard's snapshot, which it keeps until gRPC has sent it.
      std::vector<PayloadSlice> slices;
      for (PullPayload& value : answers->values) {
        if (value.size() == 0) continue;
        const char* data = value.data();
        const size_t size = value.size();
        slices.push_back(PayloadSlice{data, size, &PullPayload::ReturnReleased, value.Release()});
      }
      SerializeWithPayloads(answers->reply, slices, answers->response);
      answers->reactor->Finish(grpc::Status::OK);
    };
    for (int i = 0; i < items; ++i) {
      store_->Pull(header.pulls(i), [answered, i](absl::Status status, uint64_t version,
                                                  PullPayload values) {
        answered(i, status, version, std::move(values));
      });
    }
    answered(-1, absl::OkStatus(), 0, PullPayload());  // The handler's own count.
  });
}

grpc::ServerUnaryReactor* ParameterService::Replicate(grpc::CallbackServerContext* context,
                                                      const grpc::ByteBuffer* request,
                                                      grpc::ByteBuffer* response) {
  return AnswerWithVersion<ReplicateRequest, ReplicateResponse>(
      context, "Replicate", request, response,
      [this](const ReplicateRequest& header, PooledBuffer& payload) {
        return store_->Replicate(header, payload.data(), payload.size());
      });
}

grpc::ServerUnaryReactor* ParameterService::InstallShard(grpc::CallbackServerContext* context,
                                                         const grpc::ByteBuffer* request,
                                                         grpc::ByteBuffer* response) {
  return AnswerWithVersion<InstallShardRequest, InstallShardResponse>(
      context, "InstallShard", request, response,
      [this](const InstallShardRequest& header, PooledBuffer& payload) {
        return store_->InstallShard(header, payload.data(), payload.size());
      });
}

grpc::ServerUnaryReactor* ParameterService::AddBackup(grpc::CallbackServerContext* context,
                                                      const AddBackupRequest* request,
                                                      AddBackupResponse* response) {
  return GuardedCall(context, "AddBackup", [&](grpc::ServerUnaryReactor* reactor) {
    store_->AddBackup(*request, Finisher(reactor, response));
  });
}

grpc::ServerUnaryReactor* ParameterService::Promote(grpc::CallbackServerContext* context,
                                                    const PromoteRequest* request,
                                                    PromoteResponse* response) {
  return GuardedCall(context, "Promote", [&](grpc::ServerUnaryReactor* reactor) {
    store_->Promote(*request, Finisher(reactor, response));
  });
}

}  // namespace psrv
