// ParseWithPayload fed random bytes and mutated valid messages of every request type that carries
// a payload, split into slices at random points (fixed seed): it answers OK (having asked once for
// a buffer no larger than the message) or an error with a message, and never reads past the bytes.
#include <cstdint>
#include <string>
#include <vector>

#include <google/protobuf/stubs/logging.h>

#include "common/proto_mutator.h"
#include "common/wire.h"
#include "gtest/gtest.h"
#include "proto/parameter_server.pb.h"

namespace psrv {
namespace {

constexpr int kIterations = 100000;  // Per request type (FUZZ_ITERATIONS overrides it).

// `bytes` as a ByteBuffer of 1..4 slices cut at random points.
grpc::ByteBuffer Sliced(const std::string& bytes, ProtoMutator* mutator) {
  std::vector<grpc::Slice> slices;
  size_t at = 0;
  const int cuts = static_cast<int>(mutator->Uniform(4));
  for (int i = 0; i < cuts && at < bytes.size(); ++i) {
    const size_t size = mutator->Uniform(bytes.size() - at + 1);
    slices.emplace_back(bytes.data() + at, size);
    at += size;
  }
  slices.emplace_back(bytes.data() + at, bytes.size() - at);
  return grpc::ByteBuffer(slices.data(), slices.size());
}

// The bytes SerializeWithPayload makes of `header` and `payload`.
std::string Serialized(const google::protobuf::Message& header, const std::string& payload) {
  grpc::ByteBuffer buffer;
  SerializeWithPayload(header, payload.data(), payload.size(), [](void*) {}, nullptr, &buffer);
  std::vector<grpc::Slice> slices;
  EXPECT_TRUE(buffer.Dump(&slices).ok());
  std::string bytes;
  for (const grpc::Slice& s : slices) bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
  return bytes;
}

template <typename Request>
void FuzzDecoder(Request valid, uint64_t seed) {
  google::protobuf::SetLogHandler(nullptr);  // Invalid UTF-8 would log at every parse.
  ProtoMutator mutator(seed, {"job", "w"});
  int ok = 0;
  const int iterations = FuzzIterations(kIterations);
  for (int i = 0; i < iterations; ++i) {
    Request header = valid;
    std::string payload = mutator.RandomBytes(64);
    std::string bytes;
    const uint64_t kind = mutator.Uniform(4);
    if (kind == 0) {
      bytes = mutator.RandomBytes(96);
    } else {
      if (kind == 1) mutator.MutateFields(&header);
      bytes = Serialized(header, payload);
      if (kind != 1 || mutator.OneIn(2)) mutator.MutateBytes(&bytes);
    }
    grpc::ByteBuffer buffer = Sliced(bytes, &mutator);
    Request parsed;
    int asked = 0;
    std::string out;
    const absl::Status status =
        ParseWithPayload(&buffer, &parsed, [&](size_t size) -> absl::StatusOr<char*> {
          ++asked;
          EXPECT_LE(size, bytes.size()) << "a payload larger than the message was accepted";
          out.assign(size, '\0');
          return out.data();
        });
    ASSERT_LE(asked, 1) << "iteration " << i;
    if (status.ok()) {
      ++ok;
      ASSERT_EQ(asked, 1) << "iteration " << i;
      const google::protobuf::FieldDescriptor* field15 =
          parsed.GetDescriptor()->FindFieldByNumber(kPayloadFieldNumber);
      if (field15 != nullptr) {  // Field 15 goes to the buffer only.
        ASSERT_TRUE(parsed.GetReflection()->GetString(parsed, field15).empty());
      }
      if (kind == 2 && bytes == Serialized(header, payload)) {
        ASSERT_EQ(out, payload);
      }
    } else {
      ASSERT_FALSE(status.message().empty()) << "iteration " << i;
    }
  }
  EXPECT_GT(ok, 0);
  EXPECT_LT(ok, iterations);
}

TEST(WireFuzzTest, PushRequest) {
  PushRequest r;
  r.set_job_id("job");
  r.set_table("w");
  r.mutable_range()->set_end(16);
  r.set_dtype(FP32);
  r.set_step(3);
  FuzzDecoder(r, 1);
}

TEST(WireFuzzTest, PullRequest) {
  PullRequest r;
  r.set_job_id("job");
  r.set_table("w");
  r.mutable_range()->set_end(16);
  r.set_dtype(BF16);
  FuzzDecoder(r, 2);
}

TEST(WireFuzzTest, ReplicateRequest) {
  ReplicateRequest r;
  r.set_job_id("job");
  r.set_table("w");
  r.mutable_range()->set_end(16);
  r.set_version(4);
  FuzzDecoder(r, 3);
}

TEST(WireFuzzTest, InstallShardRequest) {
  InstallShardRequest r;
  r.set_job_id("job");
  r.set_num_workers(2);
  r.mutable_shard()->mutable_table()->set_name("w");
  r.mutable_shard()->mutable_table()->add_shape(16);
  r.mutable_shard()->mutable_range()->set_end(16);
  r.add_from_step(1);
  FuzzDecoder(r, 4);
}

}  // namespace
}  // namespace psrv
