// GuardedCall (see guarded_call.h).
#include "server/guarded_call.h"

#include <exception>

#include <glog/logging.h>

#include "absl/strings/str_cat.h"
#include "common/grpc_status.h"

namespace psrv {

absl::Status CatchExceptions(absl::string_view method, absl::FunctionRef<void()> body) {
  std::string error;
  try {
    body();
    return absl::OkStatus();
  } catch (const std::exception& e) {
    error = absl::StrCat(method, ": ", e.what());
  } catch (...) {
    error = absl::StrCat(method, ": unknown exception");
  }
  LOG(ERROR) << error;
  return absl::InternalError(error);
}

grpc::ServerUnaryReactor* GuardedCall(grpc::CallbackServerContext* context,
                                      absl::string_view method,
                                      absl::FunctionRef<void(grpc::ServerUnaryReactor*)> body) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  absl::Status status = CatchExceptions(method, [&] { body(reactor); });
  if (!status.ok()) reactor->Finish(ToGrpcStatus(status));
  return reactor;
}

}  // namespace psrv
