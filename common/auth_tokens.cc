// Token files, their checks, and the interceptor that sends a process's token.
#include "common/auth_tokens.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include <glog/logging.h>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/rpc_roles.h"
#include "common/status_macros.h"
#include "common/tls.h"

namespace psrv {
namespace {

// Set by EnableTokens before other threads run.
const std::string* process_token = nullptr;
const TokenTable* process_table = nullptr;
bool insecure_tokens_allowed = false;

absl::StatusOr<std::string> ReadWholeFile(const std::string& path, const char* what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::NotFoundError(
        absl::StrCat("cannot read the ", what, " ", path, ": ", std::strerror(errno)));
  }
  std::ostringstream contents;
  contents << in.rdbuf();
  return contents.str();
}

bool IsRole(absl::string_view role) {
  for (const char* known :
       {kRoleViewer, kRoleOperator, kRoleCoordinator, kRoleServer, kRoleWorker}) {
    if (role == known) return true;
  }
  return false;
}

// Adds the authorization header to each call's initial metadata.
class BearerTokenInterceptor final : public grpc::experimental::Interceptor {
 public:
  explicit BearerTokenInterceptor(const std::string* header) : header_(header) {}

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(
            grpc::experimental::InterceptionHookPoints::PRE_SEND_INITIAL_METADATA)) {
      methods->GetSendInitialMetadata()->emplace("authorization", *header_);
    }
    methods->Proceed();
  }

 private:
  const std::string* header_;  // Owned by the factory, which outlives the channel's calls.
};

class BearerTokenInterceptorFactory final
    : public grpc::experimental::ClientInterceptorFactoryInterface {
 public:
  explicit BearerTokenInterceptorFactory(const std::string& token)
      : header_(absl::StrCat("Bearer ", token)) {}

  grpc::experimental::Interceptor* CreateClientInterceptor(
      grpc::experimental::ClientRpcInfo*) override {
    return new BearerTokenInterceptor(&header_);
  }

 private:
  const std::string header_;
};

}  // namespace

bool ConstantTimeEquals(absl::string_view a, absl::string_view b) {
  unsigned char difference = a.size() == b.size() ? 0 : 1;
  const size_t n = std::max(a.size(), b.size());
  for (size_t i = 0; i < n; ++i) {
    const unsigned char x = i < a.size() ? a[i] : 0;
    const unsigned char y = i < b.size() ? b[i] : 0;
    difference |= x ^ y;
  }
  return difference == 0;
}

absl::StatusOr<TokenTable> TokenTable::Parse(absl::string_view text, absl::string_view source) {
  TokenTable table;
  int line_number = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++line_number;
    line = absl::StripAsciiWhitespace(line.substr(0, line.find('#')));
    if (line.empty()) continue;
    const std::vector<absl::string_view> fields =
        absl::StrSplit(line, absl::ByAnyChar(" \t"), absl::SkipEmpty());
    auto error = [&](absl::string_view why) {
      return absl::InvalidArgumentError(
          absl::StrCat(source, ":", line_number, ": ", why, " (each line: ROLE TOKEN)"));
    };
    if (fields.size() != 2) return error("not two fields");
    if (!IsRole(fields[0])) {
      return error(absl::StrCat("unknown role \"", fields[0],
                                "\" (viewer, operator, "
                                "coordinator, server or worker)"));
    }
    if (fields[1].size() < kMinTokenLength) {
      return error(absl::StrCat("token shorter than ", kMinTokenLength, " characters"));
    }
    if (table.RoleOf(fields[1]).has_value()) return error("token listed twice");
    table.entries_.push_back({std::string(fields[0]), std::string(fields[1])});
  }
  if (table.entries_.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": no tokens (each line: ROLE TOKEN)"));
  }
  return table;
}

absl::StatusOr<TokenTable> TokenTable::Read(const std::string& path) {
  ASSIGN_OR_RETURN(std::string text, ReadWholeFile(path, "token table"));
  return Parse(text, path);
}

std::optional<std::string> TokenTable::RoleOf(absl::string_view token) const {
  std::optional<std::string> role;
  for (const Entry& entry : entries_) {  // No early exit: every entry costs the same.
    if (ConstantTimeEquals(entry.token, token)) role = entry.role;
  }
  return role;
}

std::optional<std::string> ParseBearer(absl::string_view authorization) {
  constexpr absl::string_view kScheme = "bearer ";
  if (!absl::StartsWithIgnoreCase(authorization, kScheme)) return std::nullopt;
  absl::string_view token = absl::StripAsciiWhitespace(authorization.substr(kScheme.size()));
  if (token.empty()) return std::nullopt;
  return std::string(token);
}

absl::StatusOr<std::string> ReadTokenFile(const std::string& path) {
  ASSIGN_OR_RETURN(std::string text, ReadWholeFile(path, "token file"));
  const std::string token(absl::StripAsciiWhitespace(text));
  if (token.size() < kMinTokenLength || token.find_first_of(" \t\r\n") != std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat("the token file ", path,
                                                   " must hold one token of at least ",
                                                   kMinTokenLength, " characters without spaces"));
  }
  return token;
}

absl::Status EnableTokens(const TokenOptions& options) {
  if (options.token_file.empty() && options.auth_tokens_file.empty()) return absl::OkStatus();
  if (!TlsEnabled()) {
    if (!options.allow_insecure_tokens) {
      return absl::FailedPreconditionError(
          "bearer tokens travel only on TLS: set the TLS certificate flags "
          "too, or, where TLS "
          "ends at a proxy or mesh in front of this process, allow insecure "
          "tokens explicitly");
    }
    LOG(WARNING) << "bearer tokens on plaintext channels: anyone who can see "
                    "this process's "
                    "traffic can read them; only safe where a proxy or mesh "
                    "encrypts every hop";
  }
  std::unique_ptr<std::string> token;
  std::unique_ptr<TokenTable> table;
  if (!options.token_file.empty()) {
    ASSIGN_OR_RETURN(std::string read, ReadTokenFile(options.token_file));
    token = std::make_unique<std::string>(std::move(read));
  }
  if (!options.auth_tokens_file.empty()) {
    ASSIGN_OR_RETURN(TokenTable read, TokenTable::Read(options.auth_tokens_file));
    table = std::make_unique<TokenTable>(std::move(read));
  }
  delete process_token;
  delete process_table;
  process_token = token.release();
  process_table = table.release();
  insecure_tokens_allowed = options.allow_insecure_tokens;
  return absl::OkStatus();
}

const std::string& ProcessToken() {
  static const std::string* const empty = new std::string();
  return process_token == nullptr ? *empty : *process_token;
}

const TokenTable* ProcessTokenTable() { return process_table; }

bool InsecureTokensAllowed() { return insecure_tokens_allowed; }

std::vector<std::unique_ptr<grpc::experimental::ClientInterceptorFactoryInterface>>
BearerTokenInterceptors(const std::string& token) {
  std::vector<std::unique_ptr<grpc::experimental::ClientInterceptorFactoryInterface>> factories;
  if (!token.empty()) factories.push_back(std::make_unique<BearerTokenInterceptorFactory>(token));
  return factories;
}

}  // namespace psrv
