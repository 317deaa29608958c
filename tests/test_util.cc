#include "tests/test_util.h"

#include <stdlib.h>

#include <atomic>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "common/subprocess.h"
#include "tools/cpp/runfiles/runfiles.h"

namespace psrv {

std::string Runfile(const std::string& path) {
  using bazel::tools::cpp::runfiles::Runfiles;
  static Runfiles* runfiles = Runfiles::CreateForTest();
  return runfiles->Rlocation("psrv/" + path);
}

std::string TempDir(const std::string& name) {
  const char* dir = std::getenv("TEST_TMPDIR");
  std::string templ = absl::StrCat(dir ? dir : "/tmp", "/", name, "_XXXXXX");
  std::vector<char> buf(templ.begin(), templ.end());
  buf.push_back('\0');
  return mkdtemp(buf.data());
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

int RunPsctl(const std::string& coordinator, const std::string& log_dir,
             const std::vector<std::string>& args, std::string* out) {
  static std::atomic<int> runs{0};
  const std::string out_path = absl::StrCat(log_dir, "/psctl_", ++runs, ".out");
  std::vector<std::string> argv = {Runfile("client/psctl"), "--coordinator", coordinator};
  argv.insert(argv.end(), args.begin(), args.end());
  Subprocess psctl;
  if (!psctl.Start(argv, out_path).ok()) return -1;
  absl::StatusOr<int> code = psctl.Wait(absl::Seconds(60));
  *out = ReadFile(out_path);
  return code.ok() ? *code : -1;
}

}  // namespace psrv
