// Bearer tokens, for clusters whose TLS ends before the process (a proxy or a service mesh): a
// caller sends "authorization: Bearer TOKEN" on every call and gets the role the server's token
// table gives that token, as if it had a certificate with that OU (common/rpc_authorizer.h). Tokens
// travel only on TLS channels unless a process allows them on plaintext explicitly (README
// "Security", "Bearer tokens").
#ifndef PSRV_COMMON_AUTH_TOKENS_H_
#define PSRV_COMMON_AUTH_TOKENS_H_

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <grpcpp/support/client_interceptor.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace psrv {

// The shortest token accepted, on either side.
inline constexpr size_t kMinTokenLength = 16;

// The tokens a server accepts and the role of each: a file of lines "ROLE TOKEN" (roles of
// common/rpc_roles.h; # starts a comment; blank lines are skipped). Immutable, thread-safe.
class TokenTable {
 public:
  struct Entry {
    std::string role;
    std::string token;
  };

  // INVALID_ARGUMENT naming `source` and the line for anything else than "ROLE TOKEN", an unknown
  // role, a token shorter than kMinTokenLength, a token listed twice, or no token at all.
  static absl::StatusOr<TokenTable> Parse(absl::string_view text, absl::string_view source);
  // Parse of the file at `path`; NOT_FOUND if it cannot be read.
  static absl::StatusOr<TokenTable> Read(const std::string& path);

  // The role of `token`, or nullopt. Compares with every entry in constant time per byte, so the
  // time taken does not tell how much of a guess was right.
  std::optional<std::string> RoleOf(absl::string_view token) const;

  size_t size() const { return entries_.size(); }

 private:
  std::vector<Entry> entries_;
};

// Whether `a` and `b` are equal, in a time that depends only on their lengths.
bool ConstantTimeEquals(absl::string_view a, absl::string_view b);

// "Bearer TOKEN" (scheme case-insensitive) -> TOKEN; nullopt for anything else.
std::optional<std::string> ParseBearer(absl::string_view authorization);

// A process's own token: the file's contents, surrounding whitespace removed. NOT_FOUND if it
// cannot be read; INVALID_ARGUMENT if the token is shorter than kMinTokenLength or has spaces.
absl::StatusOr<std::string> ReadTokenFile(const std::string& path);

// The token settings of a process (the daemons' flags, psctl's).
struct TokenOptions {
  std::string token_file;              // This process's token, sent on every call it makes.
  std::string auth_tokens_file;        // The TokenTable its gRPC servers accept.
  bool allow_insecure_tokens = false;  // Tokens on plaintext channels (TLS ends at a proxy).
};

// Reads the files and makes them the process's. Call after EnableTls (common/tls.h), once, before
// any channel or server is made and before other threads start. Without TLS a token file or a table
// is FAILED_PRECONDITION unless allow_insecure_tokens (then a warning is logged).
absl::Status EnableTokens(const TokenOptions& options);

// This process's token ("" without one).
const std::string& ProcessToken();
// The table its servers accept (null without one).
const TokenTable* ProcessTokenTable();
// Whether tokens may be taken on a server without TLS.
bool InsecureTokensAllowed();

// Client interceptors that add "authorization: Bearer <token>" to every call of a channel; empty
// when `token` is empty. For grpc::experimental::CreateCustomChannelWithInterceptors.
std::vector<std::unique_ptr<grpc::experimental::ClientInterceptorFactoryInterface>>
BearerTokenInterceptors(const std::string& token);

}  // namespace psrv

#endif  // PSRV_COMMON_AUTH_TOKENS_H_
