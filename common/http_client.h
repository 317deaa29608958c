// A minimal blocking HTTP/1.0 GET, for tests that read /metrics and the status page of real
// processes (no TLS, no redirects, no chunked bodies: what common/http_server.h sends).
#ifndef PSRV_COMMON_HTTP_CLIENT_H_
#define PSRV_COMMON_HTTP_CLIENT_H_

#include <map>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace psrv {

struct HttpGetResult {
  int status = 0;
  std::map<std::string, std::string> headers;  // Names lower-cased.
  std::string body;
};

// GET http://host:port<path> (host: an IPv4 address) with `headers` added to the request.
// UNAVAILABLE if it cannot connect, DEADLINE_EXCEEDED after `timeout`, DATA_LOSS for a malformed
// reply.
absl::StatusOr<HttpGetResult> HttpGet(const std::string& host, int port, const std::string& path,
                                      absl::Duration timeout = absl::Seconds(10),
                                      const std::map<std::string, std::string>& headers = {});

}  // namespace psrv

#endif  // PSRV_COMMON_HTTP_CLIENT_H_
