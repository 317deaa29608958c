// libFuzzer target: a push or a pull (first input byte) decoded from the rest of the input as the
// gRPC service decodes it, then handed to a ShardStore holding a SYNC and an ASYNC job. Aborts on
// an error without a message or a refused push that changed the parameters. Built by fuzz/run.sh
// (clang; `manual`: not part of //...).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <google/protobuf/stubs/logging.h>

#include "common/buffer_pool.h"
#include "common/wire.h"
#include "server/shard_store.h"

namespace psrv {
namespace {

CreateShardsRequest Job(const std::string& id, ConsistencyMode mode) {
  CreateShardsRequest r;
  r.set_job_id(id);
  r.set_consistency(mode);
  r.set_num_workers(2);
  r.mutable_optimizer()->set_kind(SGD);
  r.mutable_optimizer()->set_learning_rate(0.1f);
  ShardSpec* s = r.add_shards();
  s->mutable_table()->set_name("w");
  s->mutable_table()->add_shape(16);
  s->mutable_range()->set_end(16);
  return r;
}

ShardStore* Store() {
  static ShardStore* store = [] {
    google::protobuf::SetLogHandler(nullptr);
    auto* s = new ShardStore();
    if (!s->CreateShards(Job("async", ASYNC)).ok() || !s->CreateShards(Job("sync", SYNC)).ok()) {
      std::abort();
    }
    return s;
  }();
  return store;
}

std::vector<char> Values(const char* job) {
  PullRequest pull;
  pull.set_job_id(job);
  pull.set_table("w");
  pull.mutable_range()->set_end(16);
  pull.set_dtype(FP32);
  std::vector<char> out;
  Store()->Pull(pull, [&](absl::Status s, uint64_t, PullPayload p) {
    if (s.ok()) out.assign(p.data(), p.data() + p.size());
  });
  return out;
}

void CheckAnswer(const absl::Status& status) {
  if (!status.ok() && status.message().empty()) std::abort();
}

}  // namespace
}  // namespace psrv

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace psrv;
  if (size == 0) return 0;
  ShardStore* store = Store();
  grpc::Slice slice(data + 1, size - 1);
  grpc::ByteBuffer buffer(&slice, 1);
  if (data[0] % 2 == 0) {
    PullRequest header;
    absl::Status parsed = ParseWithPayload(&buffer, &header, [](size_t n) -> absl::StatusOr<char*> {
      if (n != 0) return absl::InvalidArgumentError("a pull request carries no values");
      return nullptr;
    });
    CheckAnswer(parsed);
    if (parsed.ok()) {
      store->Pull(header, [](absl::Status s, uint64_t, PullPayload) { CheckAnswer(s); });
    }
    return 0;
  }
  const std::vector<char> before_async = Values("async"), before_sync = Values("sync");
  PushRequest header;
  PooledBuffer payload;
  absl::Status status = ParseWithPayload(&buffer, &header, [&](size_t n) -> absl::StatusOr<char*> {
    absl::Status checked = store->CheckPush(header, n).status();
    if (!checked.ok()) return checked;
    payload = BufferPool::Global()->Acquire(n);
    return payload.data();
  });
  if (status.ok()) {
    bool answered = false;
    store->Push(header, std::move(payload), [&](absl::StatusOr<uint64_t> v) {
      answered = true;
      status = v.status();
    });
    if (!answered) std::abort();  // Unreplicated shards answer at once.
  }
  CheckAnswer(status);
  if (!status.ok() && (Values("async") != before_async || Values("sync") != before_sync)) {
    std::abort();  // A refused push changed the parameters.
  }
  return 0;
}
