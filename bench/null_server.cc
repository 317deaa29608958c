// null_server: a stand-in for ps_server that does no work, for transport_bench's baseline. It
// answers the ParameterServer methods over the same wire format (common/wire.h) through gRPC's
// generic callback API: Push drops the received message unparsed, Pull answers with the requested
// number of bytes aliased from a static buffer (no copy), CreateShards and DropJob succeed. What is
// left of a push or pull against it is gRPC, the kernel and the worker's own work.
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <unistd.h>

#include <grpcpp/generic/async_generic_service.h>
#include <grpcpp/server.h>
#include <grpcpp/server_builder.h>
#include <grpcpp/support/byte_buffer.h>
#include <grpcpp/support/server_callback.h>

#include "absl/base/thread_annotations.h"
#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "common/channel.h"
#include "common/key_range.h"
#include "common/shutdown.h"
#include "common/subprocess.h"
#include "common/wire.h"
#include "proto/parameter_server.pb.h"

ABSL_FLAG(std::string, host, "127.0.0.1", "Address to listen on.");
ABSL_FLAG(int, port, 0, "Port to listen on; 0 picks a free port (see --port_file).");
ABSL_FLAG(std::string, port_file, "", "If set, the port bound is written here once serving.");
ABSL_FLAG(std::string, unix_socket, "",
          "If set, also listen on this Unix domain socket (reached as unix:PATH).");

namespace psrv {
namespace {

void NoRelease(void*) {}

// Zero-filled buffers handed out (aliased) as pull payloads, one per size, never freed.
class PayloadSource {
 public:
  // Thread-safe.
  const char* Get(size_t bytes) {
    absl::MutexLock lock(&mu_);
    std::unique_ptr<std::vector<char>>& buffer = buffers_[bytes];
    if (buffer == nullptr) buffer = std::make_unique<std::vector<char>>(bytes, 0);
    return buffer->data();
  }

 private:
  absl::Mutex mu_;
  std::map<size_t, std::unique_ptr<std::vector<char>>> buffers_ ABSL_GUARDED_BY(mu_);
};

// One call: read the request, answer, finish.
class NullReactor : public grpc::ServerGenericBidiReactor {
 public:
  NullReactor(grpc::GenericCallbackServerContext* context, PayloadSource* payloads)
      : context_(context), payloads_(payloads) {
    StartRead(&request_);
  }

  void OnReadDone(bool ok) override {
    if (!ok) {
      Finish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "no request message"));
      return;
    }
    const std::string& method = context_->method();
    if (method == "/psrv.ParameterServer/Pull") {
      PullRequest header;
      absl::Status parsed = ParseWithPayload(
          &request_, &header, [](size_t) -> absl::StatusOr<char*> { return nullptr; });
      if (!parsed.ok()) {
        Finish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, std::string(parsed.message())));
        return;
      }
      PullResponse reply;
      reply.set_version(1);
      reply.set_dtype(FP32);
      *reply.mutable_range() = header.range();
      const size_t bytes = RangeSize(header.range()) * sizeof(float);
      SerializeWithPayload(reply, payloads_->Get(bytes), bytes, &NoRelease, nullptr, &response_);
    } else {
      // Push, CreateShards, DropJob: an empty reply parses as their (all-default) response.
      grpc::Slice empty;
      response_ = grpc::ByteBuffer(&empty, 1);
    }
    StartWriteAndFinish(&response_, grpc::WriteOptions(), grpc::Status::OK);
  }

  void OnDone() override { delete this; }

 private:
  grpc::GenericCallbackServerContext* const context_;
  PayloadSource* const payloads_;
  grpc::ByteBuffer request_;
  grpc::ByteBuffer response_;
};

class NullService : public grpc::CallbackGenericService {
 public:
  grpc::ServerGenericBidiReactor* CreateReactor(
      grpc::GenericCallbackServerContext* context) override {
    return new NullReactor(context, &payloads_);
  }

 private:
  PayloadSource payloads_;
};

int Run() {
  absl::Notification* terminate = InstallTerminationHandler();
  NullService service;
  grpc::ServerBuilder builder;
  ConfigureServerBuilder(&builder);
  int port = 0;
  const std::string listen =
      absl::StrCat(absl::GetFlag(FLAGS_host), ":", absl::GetFlag(FLAGS_port));
  builder.AddListeningPort(listen, grpc::InsecureServerCredentials(), &port);
  const std::string unix_socket = absl::GetFlag(FLAGS_unix_socket);
  if (!unix_socket.empty()) {
    ::unlink(unix_socket.c_str());
    builder.AddListeningPort(absl::StrCat("unix:", unix_socket), grpc::InsecureServerCredentials());
  }
  builder.RegisterCallbackGenericService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0) {
    absl::FPrintF(stderr, "null_server: cannot listen on %s\n", listen);
    return 1;
  }
  if (!absl::GetFlag(FLAGS_port_file).empty()) {
    absl::Status status = WritePortFile(absl::GetFlag(FLAGS_port_file), port);
    if (!status.ok()) {
      absl::FPrintF(stderr, "null_server: %s\n", status.ToString());
      return 1;
    }
  }
  terminate->WaitForNotification();
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
  return 0;
}

}  // namespace
}  // namespace psrv

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "A ParameterServer stand-in that does no work (transport_bench's baseline).\n"
      "Usage: null_server [--host=127.0.0.1] [--port=0] [--port_file=F]");
  absl::ParseCommandLine(argc, argv);
  return psrv::Run();
}
