// libFuzzer target: ParseWithPayload and ParseWithPayloadPieces (common/wire.h) on arbitrary
// bytes, cut into two slices at a point the input chooses, as PushRequest and as
// InstallShardRequest. Built by fuzz/run.sh (clang).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include <google/protobuf/stubs/logging.h>

#include "common/wire.h"
#include "proto/parameter_server.pb.h"

namespace {

template <typename Request>
void Parse(const uint8_t* data, size_t size) {
  const size_t cut = size == 0 ? 0 : data[0] % (size + 1);
  grpc::Slice slices[2] = {grpc::Slice(data, cut), grpc::Slice(data + cut, size - cut)};
  grpc::ByteBuffer buffer(slices, 2);
  Request header;
  std::string out;
  int asked = 0;
  const absl::Status status =
      psrv::ParseWithPayload(&buffer, &header, [&](size_t n) -> absl::StatusOr<char*> {
        if (++asked > 1 || n > size) std::abort();  // Asked twice, or for more than was sent.
        out.assign(n, '\0');
        return out.data();
      });
  if (status.ok() ? asked != 1 : status.message().empty()) std::abort();
  // The same without the copy: the pieces follow each other and cover exactly the size checked.
  size_t checked = 0, received = 0;
  asked = 0;
  const absl::Status pieces = psrv::ParseWithPayloadPieces(
      &buffer, &header,
      [&](size_t n) {
        if (++asked > 1 || n > size) std::abort();
        checked = n;
        return absl::OkStatus();
      },
      [&](const char* piece, size_t n, size_t offset) {
        if (asked != 1 || offset != received || n == 0 || piece == nullptr) std::abort();
        received += n;
      });
  if (pieces.ok() != status.ok() || (pieces.ok() && received != checked)) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  google::protobuf::SetLogHandler(nullptr);  // Invalid UTF-8 would log at every parse.
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Parse<psrv::PushRequest>(data, size);
  Parse<psrv::InstallShardRequest>(data, size);
  return 0;
}
