#include "common/wire.h"

#include <string>

#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/io/zero_copy_stream_impl_lite.h>
#include <google/protobuf/wire_format_lite.h>
#include <grpcpp/support/proto_buffer_reader.h>
#include <grpcpp/support/slice.h>

#include "absl/strings/str_cat.h"

namespace psrv {

using google::protobuf::internal::WireFormatLite;
using google::protobuf::io::CodedInputStream;
using google::protobuf::io::CodedOutputStream;
using google::protobuf::io::StringOutputStream;

void SerializeWithPayload(const google::protobuf::MessageLite& header, const void* data,
                          size_t size, void (*release)(void*), void* release_arg,
                          grpc::ByteBuffer* out) {
  std::string prefix;
  header.AppendToString(&prefix);
  {
    StringOutputStream stream(&prefix);
    CodedOutputStream coded(&stream);
    coded.WriteTag(WireFormatLite::MakeTag(kPayloadFieldNumber,
                                           WireFormatLite::WIRETYPE_LENGTH_DELIMITED));
    coded.WriteVarint64(size);
  }
  grpc::Slice slices[2] = {
      grpc::Slice(prefix),
      grpc::Slice(const_cast<void*>(data), size, release, release_arg),
  };
  *out = grpc::ByteBuffer(slices, 2);
}

absl::Status ParseWithPayload(grpc::ByteBuffer* buffer, google::protobuf::MessageLite* header,
                              const PayloadDestination& destination) {
  grpc::ProtoBufferReader reader(buffer);
  CodedInputStream input(&reader);
  input.SetTotalBytesLimit(kMaxMessageBytes);
  std::string header_bytes;
  bool saw_payload = false;
  {
    StringOutputStream header_stream(&header_bytes);
    CodedOutputStream header_out(&header_stream);
    for (uint32_t tag = input.ReadTag(); tag != 0; tag = input.ReadTag()) {
      if (WireFormatLite::GetTagFieldNumber(tag) == kPayloadFieldNumber &&
          WireFormatLite::GetTagWireType(tag) == WireFormatLite::WIRETYPE_LENGTH_DELIMITED) {
        uint64_t size = 0;
        if (saw_payload || !input.ReadVarint64(&size) || size > kMaxMessageBytes) {
          return absl::InvalidArgumentError("malformed message: bad tensor payload field");
        }
        saw_payload = true;
        absl::StatusOr<char*> dest = destination(size);
        if (!dest.ok()) return dest.status();
        if (size > 0 && !input.ReadRaw(*dest, static_cast<int>(size))) {
          return absl::InvalidArgumentError(
              absl::StrCat("malformed message: tensor payload truncated (expected ", size,
                           " bytes)"));
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
  if (!header->ParseFromString(header_bytes)) {
    return absl::InvalidArgumentError("malformed message: cannot parse request header");
  }
  if (!saw_payload) {
    absl::StatusOr<char*> dest = destination(0);
    if (!dest.ok()) return dest.status();
  }
  return absl::OkStatus();
}

}  // namespace psrv
