// openssl req/x509 runs behind MakeLocalCa. EC P-256 keys: generated in milliseconds.
#include "common/local_ca.h"

#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/status_macros.h"
#include "common/subprocess.h"

namespace psrv {
namespace {

std::string FindOpenssl() {
  const char* path = std::getenv("PATH");
  for (absl::string_view dir : absl::StrSplit(path != nullptr ? path : "/usr/bin:/bin", ':')) {
    const std::string candidate = absl::StrCat(dir, "/openssl");
    if (!dir.empty() && ::access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return "";
}

absl::Status RunOpenssl(const std::string& dir, std::vector<std::string> args) {
  const std::string log = dir + "/openssl.log";
  args.insert(args.begin(), FindOpenssl());
  Subprocess openssl;
  RETURN_IF_ERROR(openssl.Start(args, log));
  absl::StatusOr<int> code = openssl.Wait(absl::Seconds(30));
  if (!code.ok()) {
    openssl.Stop(absl::ZeroDuration());
    return absl::DeadlineExceededError(absl::StrCat("openssl ", args[1], " hung; see ", log));
  }
  if (*code != 0) {
    return absl::InternalError(
        absl::StrCat("openssl ", args[1], " exited with ", *code, "; see ", log));
  }
  return absl::OkStatus();
}

std::vector<std::string> NewEcKey(const std::string& key_path) {
  return {"-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout",
          key_path};
}

}  // namespace

bool OpensslAvailable() { return !FindOpenssl().empty(); }

absl::Status MakeLocalCa(const std::string& dir, const std::vector<CertificateRequest>& requests) {
  if (!OpensslAvailable()) {
    return absl::FailedPreconditionError(
        "the openssl command-line tool is not on PATH (apt-get install openssl)");
  }
  std::vector<std::string> ca = {"req", "-x509", "-days", "30", "-subj", "/O=psrv/CN=psrv local CA",
                                 "-out", dir + "/ca.crt"};
  for (std::string& arg : NewEcKey(dir + "/ca.key")) ca.push_back(std::move(arg));
  RETURN_IF_ERROR(RunOpenssl(dir, ca));
  char hostname[256] = {0};
  gethostname(hostname, sizeof(hostname) - 1);
  const std::string extensions = dir + "/san.ext";
  std::ofstream(extensions) << "subjectAltName=DNS:localhost,IP:127.0.0.1"
                            << (hostname[0] != 0 ? absl::StrCat(",DNS:", hostname) : "") << "\n";
  std::mt19937_64 random(std::random_device{}());
  for (const CertificateRequest& request : requests) {
    const std::string stem = absl::StrCat(dir, "/", request.name);
    const std::string subject = absl::StrCat(
        "/O=psrv", request.role.empty() ? "" : absl::StrCat("/OU=", request.role), "/CN=",
        request.name);
    std::vector<std::string> csr = {"req", "-subj", subject, "-out", stem + ".csr"};
    for (std::string& arg : NewEcKey(stem + ".key")) csr.push_back(std::move(arg));
    RETURN_IF_ERROR(RunOpenssl(dir, csr));
    RETURN_IF_ERROR(RunOpenssl(
        dir, {"x509", "-req", "-in", stem + ".csr", "-CA", dir + "/ca.crt", "-CAkey",
              dir + "/ca.key", "-set_serial", std::to_string(random() >> 2), "-days", "30",
              "-extfile", extensions, "-out", stem + ".crt"}));
  }
  return absl::OkStatus();
}

TlsFiles LocalCaFiles(const std::string& dir, const std::string& name) {
  return TlsFiles{absl::StrCat(dir, "/", name, ".crt"), absl::StrCat(dir, "/", name, ".key"),
                  dir + "/ca.crt"};
}

absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> LocalCaCredentials(
    const std::string& dir, const std::string& name) {
  TlsFiles files = LocalCaFiles(dir, name);
  if (name.empty()) files.cert = files.key = "";
  return MakeChannelCredentials(files);
}

}  // namespace psrv
