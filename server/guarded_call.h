// Keeps exceptions inside ps_server's gRPC handlers: one that escaped a callback handler reached
// gRPC as UNIMPLEMENTED with no message; here it becomes INTERNAL naming the method and what().
#ifndef PSRV_SERVER_GUARDED_CALL_H_
#define PSRV_SERVER_GUARDED_CALL_H_

#include <grpcpp/support/server_callback.h>
#include <grpcpp/server_context.h>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace psrv {

// Runs `body`: OK, or INTERNAL "<method>: <what()>" if it threw (anything: "unknown exception").
absl::Status CatchExceptions(absl::string_view method, absl::FunctionRef<void()> body);

// A unary handler's body, run with the call's reactor, which it finishes (now or from a callback).
// If it throws, the call is finished with CatchExceptions' INTERNAL; so `body` must throw only
// before it finished the reactor or handed it on (every allocation of a request happens there).
grpc::ServerUnaryReactor* GuardedCall(grpc::CallbackServerContext* context,
                                      absl::string_view method,
                                      absl::FunctionRef<void(grpc::ServerUnaryReactor*)> body);

}  // namespace psrv

#endif  // PSRV_SERVER_GUARDED_CALL_H_
