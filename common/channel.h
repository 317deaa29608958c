// gRPC channels and servers configured the same way everywhere (message size limits for tensors).
#ifndef PSRV_COMMON_CHANNEL_H_
#define PSRV_COMMON_CHANNEL_H_

#include <memory>
#include <string>
#include <utility>

#include <grpcpp/channel.h>
#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/server_builder.h>

#include "common/auth_tokens.h"
#include "common/tls.h"
#include "common/wire.h"

namespace psrv {

// A channel to `address` (host:port or unix:PATH) that accepts tensor-sized messages: insecure, or
// mutual TLS with this process's certificate once EnableTls ran (common/tls.h); every call carries
// this process's bearer token once EnableTokens ran with one (common/auth_tokens.h). With
// `credentials`: those instead of the process's (a tool that talks as several identities).
inline std::shared_ptr<grpc::Channel> CreateChannelWithCredentials(
    const std::string& address, std::shared_ptr<grpc::ChannelCredentials> credentials) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(kMaxMessageBytes);
  args.SetMaxSendMessageSize(kMaxMessageBytes);
  // Each server gets its own connection even when addresses repeat (no subchannel sharing).
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  // Cluster addresses are reached directly: an http_proxy set for the web must not capture them.
  args.SetInt(GRPC_ARG_ENABLE_HTTP_PROXY, 0);
  // A peer that restarts (the coordinator, with its state) is reached again within a second: with
  // gRPC's default backoff (1 s growing to 120 s) a node would stay away for longer than the 10
  // heartbeat intervals after which the coordinator declares it DEAD.
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
  return grpc::experimental::CreateCustomChannelWithInterceptors(
      address, std::move(credentials), args, BearerTokenInterceptors(ProcessToken()));
}

inline std::shared_ptr<grpc::Channel> CreateChannel(const std::string& address) {
  return CreateChannelWithCredentials(address, ProcessChannelCredentials());
}

// Sets tensor-sized message limits on a server under construction.
inline void ConfigureServerBuilder(grpc::ServerBuilder* builder) {
  builder->SetMaxReceiveMessageSize(kMaxMessageBytes);
  builder->SetMaxSendMessageSize(kMaxMessageBytes);
}

}  // namespace psrv

#endif  // PSRV_COMMON_CHANNEL_H_
