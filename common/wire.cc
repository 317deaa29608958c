#include "common/wire.h"

#include <algorithm>
#include <cstring>
#include <memory>
#include <string>
#include <utility>

#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/io/zero_copy_stream_impl_lite.h>
#include <google/protobuf/wire_format_lite.h>
#include <grpcpp/support/proto_buffer_reader.h>
#include <grpcpp/support/slice.h>

#include "absl/strings/str_cat.h"
#include "common/bf16.h"

namespace psrv {

using google::protobuf::internal::WireFormatLite;
using google::protobuf::io::CodedInputStream;
using google::protobuf::io::CodedOutputStream;
using google::protobuf::io::StringOutputStream;

void SerializeWithPayload(const google::protobuf::MessageLite& header, const void* data,
                          size_t size, void (*release)(void*), void* release_arg,
                          grpc::ByteBuffer* out) {
  SerializeWithPayloads(header, {PayloadSlice{data, size, release, release_arg}}, out);
}

void SerializeWithPayloads(const google::protobuf::MessageLite& header,
                           const std::vector<PayloadSlice>& payload, grpc::ByteBuffer* out) {
  size_t size = 0;
  for (const PayloadSlice& piece : payload) size += piece.size;
  std::string prefix;
  header.AppendToString(&prefix);
  {
    StringOutputStream stream(&prefix);
    CodedOutputStream coded(&stream);
    coded.WriteTag(WireFormatLite::MakeTag(kPayloadFieldNumber,
                                           WireFormatLite::WIRETYPE_LENGTH_DELIMITED));
    coded.WriteVarint64(size);
  }
  std::vector<grpc::Slice> slices;
  slices.reserve(payload.size() + 1);
  slices.emplace_back(prefix);
  for (const PayloadSlice& piece : payload) {
    slices.emplace_back(const_cast<void*>(piece.data), piece.size, piece.release,
                        piece.release_arg);
  }
  *out = grpc::ByteBuffer(slices.data(), slices.size());
}

namespace {

// Where the payload is in a message: its length and the offset of its first byte.
struct PayloadPosition {
  bool present = false;
  uint64_t size = 0;
  int offset = 0;
};

// The first pass: copies every field but the payload to `header_bytes` and finds the payload,
// checking that its declared length is within the bytes actually left in the message.
absl::StatusOr<PayloadPosition> ScanMessage(grpc::ByteBuffer* buffer, std::string* header_bytes) {
  const uint64_t message_bytes = buffer->Length();
  grpc::ProtoBufferReader reader(buffer);
  CodedInputStream input(&reader);
  input.SetTotalBytesLimit(kMaxMessageBytes);
  PayloadPosition payload;
  {
    StringOutputStream header_stream(header_bytes);
    CodedOutputStream header_out(&header_stream);
    for (uint32_t tag = input.ReadTag(); tag != 0; tag = input.ReadTag()) {
      if (WireFormatLite::GetTagFieldNumber(tag) == kPayloadFieldNumber &&
          WireFormatLite::GetTagWireType(tag) == WireFormatLite::WIRETYPE_LENGTH_DELIMITED) {
        uint64_t size = 0;
        if (payload.present || !input.ReadVarint64(&size) || size > kMaxMessageBytes) {
          return absl::InvalidArgumentError("malformed message: bad tensor payload field");
        }
        const uint64_t left = message_bytes - static_cast<uint64_t>(input.CurrentPosition());
        if (size > left) {
          return absl::InvalidArgumentError(
              absl::StrCat("malformed message: tensor payload declares ", size, " bytes, ", left,
                           " are left in the message"));
        }
        payload = {true, size, input.CurrentPosition()};
        if (!input.Skip(static_cast<int>(size))) {
          return absl::InvalidArgumentError("malformed message: tensor payload truncated");
        }
        continue;
      }
      if (!WireFormatLite::SkipField(&input, tag, &header_out)) {
        return absl::InvalidArgumentError("malformed message: cannot parse protobuf field");
      }
    }
  }
  if (!input.ConsumedEntireMessage()) {
    return absl::InvalidArgumentError("malformed message: stray end-group tag");
  }
  return payload;
}

}  // namespace

absl::Status ParseWithPayloadPieces(grpc::ByteBuffer* buffer,
                                    google::protobuf::MessageLite* header,
                                    const PayloadCheck& check, const PayloadPiece& piece) {
  std::string header_bytes;
  absl::StatusOr<PayloadPosition> payload = ScanMessage(buffer, &header_bytes);
  if (!payload.ok()) return payload.status();
  if (!header->ParseFromString(header_bytes)) {
    return absl::InvalidArgumentError("malformed message: cannot parse request header");
  }
  if (absl::Status wanted = check(payload->size); !wanted.ok()) return wanted;
  if (payload->size == 0) return absl::OkStatus();
  // The second pass: straight to the payload, then gRPC's buffers as they are.
  grpc::ProtoBufferReader reader(buffer);
  const void* data = nullptr;
  int size = 0;
  uint64_t done = 0;
  if (!reader.Skip(payload->offset)) {
    return absl::InvalidArgumentError("malformed message: tensor payload truncated");
  }
  while (done < payload->size && reader.Next(&data, &size)) {
    const uint64_t take = std::min<uint64_t>(static_cast<uint64_t>(size), payload->size - done);
    piece(static_cast<const char*>(data), take, done);
    done += take;
  }
  if (done != payload->size) {
    // (ScanMessage saw the bytes: a buffer that changed between the passes.)
    return absl::InvalidArgumentError(absl::StrCat(
        "malformed message: tensor payload truncated (expected ", payload->size, " bytes)"));
  }
  return absl::OkStatus();
}

absl::Status ParseWithPayload(grpc::ByteBuffer* buffer, google::protobuf::MessageLite* header,
                              const PayloadDestination& destination) {
  PayloadPiece copy;
  return ParseWithPayloadPieces(
      buffer, header,
      [&](size_t size) -> absl::Status {
        absl::StatusOr<char*> chosen = destination(size);
        if (!chosen.ok()) return chosen.status();
        copy = CopyTo(*chosen);
        return absl::OkStatus();
      },
      [&](const char* data, size_t size, size_t offset) { copy(data, size, offset); });
}

absl::Status ParseWithoutPayload(grpc::ByteBuffer* buffer, google::protobuf::MessageLite* header,
                                 const std::string& refusal) {
  return ParseWithPayload(buffer, header, [&refusal](size_t size) -> absl::StatusOr<char*> {
    if (size != 0) return absl::InvalidArgumentError(refusal);
    return nullptr;
  });
}

PayloadPiece SplitPayload(std::vector<size_t> sizes, std::vector<PayloadPiece> receivers) {
  struct Items {
    std::vector<size_t> sizes;
    std::vector<PayloadPiece> receivers;
    size_t item = 0;   // The item the next piece starts in,
    size_t begin = 0;  // and its first byte in the payload.
  };
  auto items = std::make_shared<Items>(Items{std::move(sizes), std::move(receivers)});
  return [items](const char* data, size_t size, size_t offset) {
    Items& s = *items;
    while (size > 0 && s.item < s.sizes.size()) {
      const size_t end = s.begin + s.sizes[s.item];
      if (offset >= end) {
        s.begin = end;
        ++s.item;
        continue;
      }
      const size_t take = std::min(size, end - offset);
      if (s.receivers[s.item]) s.receivers[s.item](data, take, offset - s.begin);
      data += take;
      size -= take;
      offset += take;
    }
  };
}

PayloadCheck ExpectBytes(size_t bytes, std::string what) {
  return [bytes, what = std::move(what)](size_t size) {
    return size == bytes ? absl::OkStatus()
                         : absl::DataLossError(
                               absl::StrCat(what, ": expected ", bytes, " bytes, got ", size));
  };
}

PayloadPiece CopyTo(char* destination) {
  return [destination](const char* data, size_t size, size_t offset) {
    std::memcpy(destination + offset, data, size);
  };
}

PayloadPiece FloatsInto(float* out, bool bf16, size_t count) {
  if (!bf16) return CopyTo(reinterpret_cast<char*>(out));
  const bool streaming = count >= kBf16StreamingMinValues;
  auto widener = std::make_shared<Bf16Widener>(out, streaming);
  return [widener](const char* data, size_t size, size_t) { widener->Add(data, size); };
}

}  // namespace psrv
