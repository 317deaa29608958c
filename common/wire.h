// Tensor payloads on gRPC without copies: a protobuf message whose field 15 (`bytes values`) holds a
// raw tensor is serialized as [header bytes][field-15 tag and length][tensor memory, aliased], and
// parsed back with the tensor written straight into a caller-chosen buffer. The bytes on the wire are
// ordinary protobuf, so any gRPC client can talk to the same methods.
#ifndef PSRV_COMMON_WIRE_H_
#define PSRV_COMMON_WIRE_H_

#include <cstddef>
#include <functional>
#include <string>
#include <vector>

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

// SerializeWithPayload for a payload made of several pieces, one after another (a batch of
// tensors: PushBatch, PullBatch): each is aliased like `data` above, and released on its own.
struct PayloadSlice {
  const void* data;
  size_t size;
  void (*release)(void*);
  void* release_arg;
};
void SerializeWithPayloads(const google::protobuf::MessageLite& header,
                           const std::vector<PayloadSlice>& payload, grpc::ByteBuffer* out);

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

// ParseWithPayload for a message that must carry no payload: INVALID_ARGUMENT `refusal` if it
// has one (of any length but 0).
absl::Status ParseWithoutPayload(grpc::ByteBuffer* buffer, google::protobuf::MessageLite* header,
                                 const std::string& refusal);

// Whether a payload of `size` bytes is wanted (the header is parsed by then): OK, or the error
// ParseWithPayloadPieces returns.
using PayloadCheck = std::function<absl::Status(size_t size)>;
// A piece of a payload as gRPC's receive buffers hold it: `size` bytes at `data`, which are the
// payload's bytes from `offset` on. The pieces come in order and cover the payload; their
// addresses have no particular alignment, and a value may be split between two pieces.
using PayloadPiece = std::function<void(const char* data, size_t size, size_t offset)>;

// ParseWithPayload without the copy: once the message is read through and `header` parsed (as
// above), `check(size)` says whether the payload is wanted, then `piece` receives it in place,
// for a consumer that reads it once anyway (e.g. widening BF16 into its destination, or copying
// it while checking it). With no field 15, check(0) and no pieces.
absl::Status ParseWithPayloadPieces(grpc::ByteBuffer* buffer,
                                    google::protobuf::MessageLite* header,
                                    const PayloadCheck& check, const PayloadPiece& piece);

// A receiver for a payload made of several items one after another (a batch): item i is the
// next sizes[i] bytes, and its pieces go to receivers[i] with offsets from the item's first byte
// (a null receiver: its bytes are skipped). Pieces must come in order, as
// ParseWithPayloadPieces hands them over; bytes past the last item are dropped.
PayloadPiece SplitPayload(std::vector<size_t> sizes, std::vector<PayloadPiece> receivers);

// The usual check and receivers. ExpectBytes: OK for exactly `bytes` bytes, else DATA_LOSS
// "`what`: expected N bytes, got M". CopyTo: copies each piece to destination + offset.
// FloatsInto: the payload's values, FP32 (`bf16` false: copied) or BF16 (widened, Bf16Widener),
// as floats into `out`; one receiver per payload (a BF16 one keeps the state of a split value).
// `count`, the payload's values if known, picks the widening: from kBf16StreamingMinValues on,
// around the cache (Bf16BytesToFloatsStreaming).
PayloadCheck ExpectBytes(size_t bytes, std::string what);
PayloadPiece CopyTo(char* destination);
PayloadPiece FloatsInto(float* out, bool bf16, size_t count = 0);

}  // namespace psrv

#endif  // PSRV_COMMON_WIRE_H_
