#include "common/wire.h"

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "proto/parameter_server.pb.h"

namespace psrv {
namespace {

int released = 0;
void CountRelease(void*) { ++released; }

TEST(WireTest, RoundTripWritesPayloadIntoChosenBuffer) {
  std::vector<float> tensor(1000);
  for (size_t i = 0; i < tensor.size(); ++i) tensor[i] = 0.5f * i;
  PushRequest header;
  header.set_job_id("job-1");
  header.set_table("embedding");
  header.mutable_range()->set_begin(10);
  header.mutable_range()->set_end(1010);
  header.set_step(7);
  released = 0;
  {
    grpc::ByteBuffer buffer;
    SerializeWithPayload(header, tensor.data(), tensor.size() * 4, CountRelease, nullptr, &buffer);
    std::vector<float> out(1000);
    PushRequest parsed;
    ASSERT_TRUE(ParseWithPayload(&buffer, &parsed, [&](size_t size) -> absl::StatusOr<char*> {
                  EXPECT_EQ(size, 4000u);
                  return reinterpret_cast<char*>(out.data());
                }).ok());
    EXPECT_EQ(parsed.job_id(), "job-1");
    EXPECT_EQ(parsed.table(), "embedding");
    EXPECT_EQ(parsed.range().end(), 1010u);
    EXPECT_EQ(parsed.step(), 7u);
    EXPECT_TRUE(parsed.values().empty());
    EXPECT_EQ(out, tensor);
  }
  EXPECT_EQ(released, 1);  // The aliased memory is handed back once the buffer is gone.
}

// Several tensors as one payload (a batch): one after another, each slice released on its own;
// an ordinary protobuf parser sees their concatenation as the message's `values`.
TEST(WireTest, APayloadOfSeveralSlicesIsTheirConcatenation) {
  const std::vector<float> first = {1.5f, -2.0f, 3.25f};
  const std::vector<uint16_t> second = {0x3f80, 0xc000};
  PushBatchRequest header;
  header.add_pushes()->set_table("a");
  released = 0;
  {
    grpc::ByteBuffer buffer;
    SerializeWithPayloads(header,
                          {PayloadSlice{first.data(), first.size() * 4, CountRelease, nullptr},
                           PayloadSlice{second.data(), second.size() * 2, CountRelease, nullptr}},
                          &buffer);
    std::vector<grpc::Slice> slices;
    ASSERT_TRUE(buffer.Dump(&slices).ok());
    std::string bytes;
    for (const grpc::Slice& slice : slices) {
      bytes.append(reinterpret_cast<const char*>(slice.begin()), slice.size());
    }
    PushBatchRequest parsed;
    ASSERT_TRUE(parsed.ParseFromString(bytes));
    EXPECT_EQ(parsed.pushes(0).table(), "a");
    std::string expected(reinterpret_cast<const char*>(first.data()), first.size() * 4);
    expected.append(reinterpret_cast<const char*>(second.data()), second.size() * 2);
    EXPECT_EQ(parsed.values(), expected);
  }
  EXPECT_EQ(released, 2);
}

// Pieces cut anywhere reach each item's receiver with offsets from the item's first byte; an
// empty item and one without a receiver are passed over.
TEST(WireTest, SplitPayloadHandsEachItemItsOwnBytes) {
  const std::string payload = "abcXYZdefghij";  // Items: "abc", "", "XYZ" (skipped), "defghij".
  std::vector<std::string> got(4);
  auto into = [&](int i) {
    return [&got, i](const char* data, size_t size, size_t offset) {
      EXPECT_EQ(offset, got[i].size());
      got[i].append(data, size);
    };
  };
  PayloadPiece split = SplitPayload({3, 0, 3, 7}, {into(0), into(1), nullptr, into(3)});
  size_t piece = 1;  // Pieces of 1, 2, 3, 4, 1, ... bytes.
  for (size_t offset = 0; offset < payload.size(); offset += piece, piece = piece % 4 + 1) {
    split(payload.data() + offset, std::min(piece, payload.size() - offset), offset);
  }
  EXPECT_EQ(got, (std::vector<std::string>{"abc", "", "", "defghij"}));
}

TEST(WireTest, OrdinaryProtobufEncodingParses) {
  PushRequest message;
  message.set_table("t");
  message.set_values(std::string("\x01\x02\x03\x04", 4));
  grpc::ByteBuffer buffer;
  std::string bytes = message.SerializeAsString();
  grpc::Slice slice(bytes);
  buffer = grpc::ByteBuffer(&slice, 1);
  char out[4];
  PushRequest parsed;
  ASSERT_TRUE(ParseWithPayload(&buffer, &parsed, [&](size_t size) -> absl::StatusOr<char*> {
                EXPECT_EQ(size, 4u);
                return out;
              }).ok());
  EXPECT_EQ(parsed.table(), "t");
  EXPECT_EQ(std::memcmp(out, "\x01\x02\x03\x04", 4), 0);
}

TEST(WireTest, DestinationErrorIsReturned) {
  PushRequest message;
  message.set_values("abcd");
  std::string bytes = message.SerializeAsString();
  grpc::Slice slice(bytes);
  grpc::ByteBuffer buffer(&slice, 1);
  PushRequest parsed;
  absl::Status status = ParseWithPayload(&buffer, &parsed, [](size_t) -> absl::StatusOr<char*> {
    return absl::InvalidArgumentError("wrong length");
  });
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
}

TEST(WireTest, MissingPayloadAsksForZeroBytes) {
  PushRequest message;
  message.set_table("t");
  std::string bytes = message.SerializeAsString();
  grpc::Slice slice(bytes);
  grpc::ByteBuffer buffer(&slice, 1);
  PushRequest parsed;
  size_t asked = 99;
  ASSERT_TRUE(ParseWithPayload(&buffer, &parsed, [&](size_t size) -> absl::StatusOr<char*> {
                asked = size;
                return nullptr;
              }).ok());
  EXPECT_EQ(asked, 0u);
}

TEST(WireTest, GarbageIsInvalidArgument) {
  std::string bytes = "\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff";
  grpc::Slice slice(bytes);
  grpc::ByteBuffer buffer(&slice, 1);
  PushRequest parsed;
  absl::Status status =
      ParseWithPayload(&buffer, &parsed, [](size_t) -> absl::StatusOr<char*> { return nullptr; });
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
}

// Parses `bytes` with a destination that must not be called: the status, and whether it was.
absl::Status ParseWithoutAllocating(const std::string& bytes, bool* asked) {
  grpc::Slice slice(bytes);
  grpc::ByteBuffer buffer(&slice, 1);
  PushRequest parsed;
  *asked = false;
  return ParseWithPayload(&buffer, &parsed, [asked](size_t) -> absl::StatusOr<char*> {
    *asked = true;
    return absl::InternalError("must not be called");
  });
}

// The attack: a 6-byte body declaring a 1 GiB payload. Nothing may be asked for (before the fix,
// the destination was called with 1 GiB and the server took a buffer that big from the pool).
TEST(WireTest, PayloadLongerThanTheMessageIsRefusedBeforeAnyAllocation) {
  bool asked;
  absl::Status status =
      ParseWithoutAllocating(std::string("\x7a\x80\x80\x80\x80\x04", 6), &asked);  // 2^30.
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_FALSE(asked);
}

TEST(WireTest, PayloadOneByteShortIsRefusedBeforeAnyAllocation) {
  PushRequest message;
  message.set_values("abcd");
  std::string bytes = message.SerializeAsString();
  bytes.pop_back();
  bool asked;
  absl::Status status = ParseWithoutAllocating(bytes, &asked);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_FALSE(asked);
}

// The destination can check the payload's size against the header (range x dtype) before it
// takes a buffer, wherever field 15 comes in the message.
TEST(WireTest, HeaderIsParsedBeforeTheDestinationIsAsked) {
  PushRequest message;
  message.set_values("abcdefgh");
  message.mutable_range()->set_begin(0);
  message.mutable_range()->set_end(2);
  message.set_table("after-the-payload");
  std::string bytes = message.SerializeAsString();
  grpc::Slice slice(bytes);
  grpc::ByteBuffer buffer(&slice, 1);
  PushRequest parsed;
  char out[8];
  ASSERT_TRUE(ParseWithPayload(&buffer, &parsed, [&](size_t size) -> absl::StatusOr<char*> {
                EXPECT_EQ(parsed.table(), "after-the-payload");
                EXPECT_EQ(parsed.range().end(), 2u);
                EXPECT_EQ(size, 8u);
                return out;
              }).ok());
  EXPECT_EQ(std::string(out, 8), "abcdefgh");
}

// A message cut into several slices, as gRPC's receive buffers hold one: `cuts` are the offsets
// where a new slice starts.
grpc::ByteBuffer Sliced(const std::string& bytes, std::vector<size_t> cuts) {
  cuts.push_back(bytes.size());
  std::vector<grpc::Slice> slices;
  size_t begin = 0;
  for (size_t end : cuts) {
    slices.emplace_back(bytes.data() + begin, end - begin);
    begin = end;
  }
  return grpc::ByteBuffer(slices.data(), slices.size());
}

TEST(WireTest, PiecesCoverThePayloadInOrderAcrossSlices) {
  PushRequest message;
  message.set_table("table");  // An odd-sized header: the payload starts unaligned.
  std::string payload(1001, '\0');
  for (size_t i = 0; i < payload.size(); ++i) payload[i] = static_cast<char>(i * 7);
  message.set_values(payload);
  const std::string bytes = message.SerializeAsString();
  for (const std::vector<size_t>& cuts :
       std::vector<std::vector<size_t>>{{}, {3}, {9, 10, 11, 500, 1000}, {bytes.size() - 1}}) {
    grpc::ByteBuffer buffer = Sliced(bytes, cuts);
    PushRequest parsed;
    std::string received;
    size_t checked = 0;
    ASSERT_TRUE(ParseWithPayloadPieces(
                    &buffer, &parsed,
                    [&](size_t size) {
                      checked = size;
                      EXPECT_EQ(parsed.table(), "table");  // The header is parsed first.
                      return absl::OkStatus();
                    },
                    [&](const char* data, size_t size, size_t offset) {
                      EXPECT_EQ(offset, received.size());
                      EXPECT_GT(size, 0u);
                      received.append(data, size);
                    })
                    .ok());
    EXPECT_EQ(checked, payload.size());
    EXPECT_EQ(received, payload) << cuts.size() << " cuts";
    // ParseWithPayload copies the same bytes.
    std::string copied(payload.size(), 'x');
    ASSERT_TRUE(ParseWithPayload(&buffer, &parsed, [&](size_t) -> absl::StatusOr<char*> {
                  return copied.data();
                }).ok());
    EXPECT_EQ(copied, payload);
  }
}

TEST(WireTest, ACheckErrorIsReturnedAndNoPieceIsHandedOver) {
  PushRequest message;
  message.set_values(std::string(64, 'v'));
  grpc::ByteBuffer buffer = Sliced(message.SerializeAsString(), {10, 20});
  PushRequest parsed;
  int pieces = 0;
  absl::Status status = ParseWithPayloadPieces(
      &buffer, &parsed, [](size_t) { return absl::DataLossError("wrong size"); },
      [&](const char*, size_t, size_t) { ++pieces; });
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(pieces, 0);
  // A malformed message: neither the check nor a piece.
  grpc::ByteBuffer garbage = Sliced(std::string("\x7a\xff\xff\xff\x0f", 5), {2});
  bool asked = false;
  status = ParseWithPayloadPieces(
      &garbage, &parsed, [&](size_t) { asked = true; return absl::OkStatus(); },
      [&](const char*, size_t, size_t) { ++pieces; });
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(asked);
  EXPECT_EQ(pieces, 0);
}

}  // namespace
}  // namespace psrv
