// phase_bench: times, in one process and with no network, each per-byte step that a push or a pull
// of one tensor goes through in the worker and in ps_server (the real code: common/wire.h,
// server/shard.h), beside plain memcpy. It explains where transport_bench's time goes: subtract
// these from the end-to-end time per operation and what is left is the kernel, gRPC and waiting.
// The "proposal:" rows are not project code: they show what the server's own per-byte work would
// cost if rewritten (see bench/README.md).
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <grpcpp/support/byte_buffer.h>
#include <grpcpp/support/slice.h>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "bench/sample_stats.h"
#include "common/buffer_pool.h"
#include "common/key_range.h"
#include "common/wire.h"
#include "proto/parameter_server.pb.h"
#include "server/apply.h"
#include "server/shard.h"

ABSL_FLAG(std::vector<std::string>, sizes, std::vector<std::string>({"1M", "4M", "16M", "64M"}),
          "Tensor sizes (K, M, G = KiB, MiB, GiB).");
ABSL_FLAG(double, seconds, 0.4, "Time per phase and size.");
ABSL_FLAG(int, receive_slice_kib, 64,
          "Size of the slices a received message is split into (gRPC reads into many slices).");

namespace psrv {
namespace {

// Median wall time of `op` in seconds, repeated for about `seconds` (at least 5 times).
double MedianSeconds(const std::function<void()>& op, double seconds) {
  op();  // Warm caches, pools and page tables.
  std::vector<double> samples;
  const absl::Time end = absl::Now() + absl::Seconds(seconds);
  while (samples.size() < 5 || absl::Now() < end) {
    const absl::Time start = absl::Now();
    op();
    samples.push_back(absl::ToDoubleSeconds(absl::Now() - start));
  }
  return Quantile(samples, 0.5);
}

// A copy of `message` split into `slice_bytes`-sized slices, as gRPC hands a received message over.
grpc::ByteBuffer AsReceived(grpc::ByteBuffer* message, size_t slice_bytes) {
  std::vector<grpc::Slice> parts;
  message->Dump(&parts);
  std::string flat;
  for (const grpc::Slice& part : parts) {
    flat.append(reinterpret_cast<const char*>(part.begin()), part.size());
  }
  std::vector<grpc::Slice> slices;
  for (size_t offset = 0; offset < flat.size(); offset += slice_bytes) {
    slices.emplace_back(flat.data() + offset, std::min(slice_bytes, flat.size() - offset));
  }
  return grpc::ByteBuffer(slices.data(), slices.size());
}

void NoRelease(void*) {}

// ---- Proposal loops (see the file comment).

// True if every value is finite, without an early exit, so the compiler can vectorise it.
bool AllFinite(const float* __restrict values, size_t n) {
  uint32_t bad = 0;
  for (size_t i = 0; i < n; ++i) {
    uint32_t bits;
    std::memcpy(&bits, &values[i], sizeof(bits));
    bad |= static_cast<uint32_t>((bits & 0x7f800000u) == 0x7f800000u);
  }
  return bad == 0;
}

void SgdApply(const float* __restrict grad, float* __restrict params, size_t n, float lr) {
  for (size_t i = 0; i < n; ++i) params[i] -= lr * grad[i];
}

void Row(const std::string& phase, uint64_t bytes, double seconds) {
  absl::PrintF("  %-58s %8.3f ms  %6.2f GB/s\n", phase, seconds * 1e3, bytes / seconds / 1e9);
}

void MeasureSize(uint64_t bytes) {
  const double seconds = absl::GetFlag(FLAGS_seconds);
  const size_t n = bytes / sizeof(float);
  const size_t slice_bytes = static_cast<size_t>(absl::GetFlag(FLAGS_receive_slice_kib)) << 10;
  std::vector<float> grads(n, 1e-3f);   // (n) the worker's gradient buffer.
  std::vector<float> params(n, 0.0f);   // (n) the worker's parameter buffer.
  std::vector<float> scratch(n, 0.0f);  // (n) a copy target.

  absl::PrintF("%s (%d floats)\n", FormatByteSize(bytes), n);
  Row("reference: memcpy", bytes,
      MedianSeconds([&] { std::memcpy(scratch.data(), grads.data(), bytes); }, seconds));

  // Worker, push: header + aliased gradient (no copy).
  PushRequest push_header;
  push_header.set_job_id("bench-1");
  push_header.set_table("bench");
  *push_header.mutable_range() = MakeRange(0, n);
  push_header.set_dtype(FP32);
  push_header.set_step(1);
  Row("worker push: SerializeWithPayload (payload aliased)", bytes, MedianSeconds([&] {
        grpc::ByteBuffer out;
        SerializeWithPayload(push_header, grads.data(), bytes, &NoRelease, nullptr, &out);
      }, seconds));

  // Server, push: parse (one copy into a pooled buffer), then Shard::Push (check + SGD).
  grpc::ByteBuffer push_message;
  SerializeWithPayload(push_header, grads.data(), bytes, &NoRelease, nullptr, &push_message);
  grpc::ByteBuffer push_received = AsReceived(&push_message, slice_bytes);
  Row("server push: ParseWithPayload into pooled buffer (copy)", bytes, MedianSeconds([&] {
        PushRequest header;
        PooledBuffer payload;
        absl::Status status =
            ParseWithPayload(&push_received, &header, [&](size_t size) -> absl::StatusOr<char*> {
              payload = BufferPool::Global()->Acquire(size);
              return payload.data();
            });
        if (!status.ok()) absl::FPrintF(stderr, "parse: %s\n", status.ToString());
      }, seconds));

  ShardConfig config;
  config.job_id = "bench-1";
  config.table.set_name("bench");
  config.table.add_shape(n);
  config.table.mutable_init()->set_kind(InitSpec::ONES);
  config.range = MakeRange(0, n);
  config.consistency = ASYNC;
  config.optimizer.set_kind(SGD);
  config.optimizer.set_learning_rate(1e-9f);
  config.num_workers = 1;
  Shard shard(config);  // Not replicated: every push is answered before Push returns.
  Row("server push: Shard::Push (finite check + SGD apply)", bytes, MedianSeconds([&] {
        // The shard takes the pooled buffer the service parsed the payload into; here one from
        // the warm pool (its bytes are a gradient parsed above, or zeros: the cost is the same).
        shard.Push(push_header, BufferPool::Global()->Acquire(bytes),
                   [](absl::StatusOr<uint64_t> version) {
                     if (!version.ok()) {
                       absl::FPrintF(stderr, "push: %s\n", version.status().ToString());
                     }
                   });
      }, seconds));
  std::unique_ptr<Optimizer> sgd = Optimizer::Create(config.optimizer, config.table, n);
  Row("  of which: the optimizer's Apply (SGD) alone", bytes,
      MedianSeconds([&] { sgd->Apply(grads.data(), scratch.data(), 0, n, 1); }, seconds));

  // Server, pull: Shard::Pull copies the range into a pooled buffer under the shard's lock.
  PullRequest pull_header;
  pull_header.set_job_id("bench-1");
  pull_header.set_table("bench");
  *pull_header.mutable_range() = MakeRange(0, n);
  pull_header.set_dtype(FP32);
  Row("server pull: Shard::Pull (copy out under lock)", bytes, MedianSeconds([&] {
        shard.Pull(pull_header, [](absl::Status, uint64_t, PullPayload) {});
      }, seconds));

  // Worker, pull: parse the reply, payload copied once into the parameter buffer.
  PullResponse reply;
  reply.set_version(1);
  reply.set_dtype(FP32);
  *reply.mutable_range() = MakeRange(0, n);
  grpc::ByteBuffer reply_message;
  SerializeWithPayload(reply, scratch.data(), bytes, &NoRelease, nullptr, &reply_message);
  grpc::ByteBuffer reply_received = AsReceived(&reply_message, slice_bytes);
  Row("worker pull: ParseWithPayload into params (copy)", bytes, MedianSeconds([&] {
        PullResponse header;
        absl::Status status = ParseWithPayload(
            &reply_received, &header,
            [&](size_t) -> absl::StatusOr<char*> {
              return reinterpret_cast<char*>(params.data());
            });
        if (!status.ok()) absl::FPrintF(stderr, "parse: %s\n", status.ToString());
      }, seconds));

  // Server, a SYNC step of a single worker pushing BF16 (the GPT recipes' path): the shard's
  // gradient in 4 chunks with scale_follows (each copied into a pooled buffer, as the service's
  // parse does), then the commit, which aggregates, applies AdamW and narrows the new values for
  // BF16 pulls. `bytes` counts the FP32 parameters updated.
  {
    ShardConfig sync = config;
    sync.consistency = SYNC;
    sync.optimizer.set_kind(ADAMW);
    sync.optimizer.set_learning_rate(1e-6f);
    sync.optimizer.set_beta1(0.9f);
    sync.optimizer.set_beta2(0.99f);
    sync.optimizer.set_epsilon(1e-8f);
    Shard step_shard(sync);
    PullRequest bf16_pull = pull_header;
    bf16_pull.set_dtype(BF16);
    step_shard.Pull(bf16_pull, [](absl::Status, uint64_t, PullPayload) {});  // Narrow from now.
    std::vector<uint16_t> bf16_grads(n, 0x3a83);  // ~1e-3 in bfloat16.
    constexpr size_t kChunks = 4;
    uint64_t step = 0;
    Row("server SYNC step: 1 worker, 4 BF16 pushes, commit, AdamW", bytes,
        MedianSeconds([&] {
          ++step;
          for (size_t c = 0; c < kChunks; ++c) {
            const size_t begin = n * c / kChunks, end = n * (c + 1) / kChunks;
            PushRequest chunk = push_header;
            *chunk.mutable_range() = MakeRange(begin, end);
            chunk.set_dtype(BF16);
            chunk.set_step(step);
            chunk.set_scale_follows(true);
            PooledBuffer payload = BufferPool::Global()->Acquire((end - begin) * sizeof(uint16_t));
            std::memcpy(payload.data(), bf16_grads.data() + begin, payload.size());
            step_shard.Push(chunk, std::move(payload), [](absl::StatusOr<uint64_t> version) {
              if (!version.ok()) absl::FPrintF(stderr, "push: %s\n", version.status().ToString());
            });
          }
          const absl::Status committed = step_shard.Commit(0, step, 0.5f);
          if (!committed.ok()) absl::FPrintF(stderr, "commit: %s\n", committed.ToString());
        }, seconds));
  }

  // What the server's push work could cost: a vectorisable finite check and SGD, each reading the
  // received slices in place (no parse copy).
  Row("proposal: vectorised finite check", bytes, MedianSeconds([&] {
        if (!AllFinite(grads.data(), n)) absl::FPrintF(stderr, "not finite\n");
      }, seconds));
  Row("proposal: vectorised SGD (restrict, lr in a register)", bytes,
      MedianSeconds([&] { SgdApply(grads.data(), scratch.data(), n, 1e-9f); }, seconds));
  absl::PrintF("\n");
}

}  // namespace
}  // namespace psrv

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "Times each per-byte step of a push and a pull (serialize, parse, shard check and apply, "
      "copy out) in one process, beside memcpy.\nUsage: phase_bench [--sizes=1M,16M]");
  absl::ParseCommandLine(argc, argv);
  absl::PrintF("Per-operation time of each phase (median), GB/s of tensor payload\n\n");
  for (const std::string& text : absl::GetFlag(FLAGS_sizes)) {
    absl::StatusOr<uint64_t> bytes = psrv::ParseByteSize(text);
    if (!bytes.ok() || *bytes % sizeof(float) != 0) {
      absl::FPrintF(stderr, "--sizes: bad size \"%s\"\n", text);
      return 2;
    }
    psrv::MeasureSize(*bytes);
  }
  return 0;
}
