// Tensor payloads on gRPC without copies: a protobuf message whose field 15 (`bytes values`) holds a
// raw tensor is serialized as [header bytes][field-15 tag and length][tensor memory, aliased], and
// parsed back with the tensor written straight into a caller-chosen buffer. The bytes on the wire are
// ordinary protobuf, so any gRPC client can talk to the same methods.
#ifndef PSRV_COMMON_WIRE_H_
#define PSRV_COMMON_WIRE_H_

#include <cstddef>
#include <functional>

#include <google/protobuf/message_lite.h>
#include <grpcpp/support/byte_buffer.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace psrv {

inline constexpr int kPayloadFieldNumber = 15;

// Largest message the servers and clients accept (channel and server limits are set to it).
inline constexpr int kMaxMessageBytes = 1 << 30;

// Fills `out` with `header` followed by `size` bytes at `data` as field 15. The payload is not
// copied: gRPC calls `release(release_arg)` once it no longer reads `data` (which must stay valid
// and unchanged until then). `header` must not itself set field 15.
void SerializeWithPayload(const google::protobuf::MessageLite& header, const void* data,
                          size_t size, void (*release)(void*), void* release_arg,
                          grpc::ByteBuffer* out);

// Where a parsed payload of `size` bytes goes: a buffer of at least `size` bytes, or an error
// (e.g. INVALID_ARGUMENT for a wrong length), which ParseWithPayload returns.
using PayloadDestination = std::function<absl::StatusOr<char*>(size_t size)>;

// Parses `buffer` into `header` (every field but 15) and copies the field-15 payload once, into the
// buffer `destination` chooses. If the message has no field 15, `destination` is called with 0.
// Nothing is allocated before the message is checked: `destination` is called only once the whole
// message has been read through, the payload's declared length found to be there, and `header`
// parsed (so it may check the size against the header, e.g. range size x dtype size, before taking
// a buffer). INVALID_ARGUMENT for a malformed message or a payload longer than the bytes left.
absl::Status ParseWithPayload(grpc::ByteBuffer* buffer, google::protobuf::MessageLite* header,
                              const PayloadDestination& destination);

}  // namespace psrv

#endif  // PSRV_COMMON_WIRE_H_
