#include "tests/test_util.h"

#include <stdlib.h>

#include <algorithm>
#include <atomic>
#include <fstream>
#include <memory>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/subprocess.h"
#include "gtest/gtest.h"
#include "tools/cpp/runfiles/runfiles.h"
#include "worker/parameter_client.h"

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

LocalClusterOptions TestClusterOptions(const std::string& log_dir, int servers, int workers) {
  LocalClusterOptions options;
  options.binaries.coordinator = Runfile("coordinator/ps_coordinator");
  options.binaries.server = Runfile("server/ps_server");
  options.binaries.worker = Runfile("worker/ps_worker");
  options.num_servers = servers;
  options.num_workers = workers;
  options.log_dir = log_dir;
  return options;
}

std::string LocalServerName(const std::string& log_dir, const std::string& address) {
  for (int i = 0; i < 8; ++i) {
    const std::string port = ReadFile(absl::StrCat(log_dir, "/server-", i, ".port"));
    if (!port.empty() && absl::StrCat("127.0.0.1:", std::stoi(port)) == address) {
      return absl::StrCat("server ", i);
    }
  }
  return "";
}

JobStatus WaitForJob(CoordinatorClient* client, const std::string& job,
                     const std::function<bool(const JobStatus&)>& done, absl::Duration timeout,
                     const std::string& log_dir) {
  const absl::Time deadline = absl::Now() + timeout;
  while (absl::Now() < deadline) {
    absl::StatusOr<JobStatus> status = client->GetJob(job);
    if (status.ok() && done(*status)) return *status;
    absl::SleepFor(absl::Milliseconds(20));
  }
  ADD_FAILURE() << "timed out waiting on " << job << "; logs in " << log_dir;
  return client->GetJob(job).value_or(JobStatus());
}

size_t CountDifferent(const std::vector<float>& a, const std::vector<float>& b) {
  size_t differ = a.size() > b.size() ? a.size() - b.size() : b.size() - a.size();
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) differ += a[i] != b[i];
  return differ;
}

JobSpec SmallMlpJob(ConsistencyMode mode, uint32_t servers, uint32_t workers, uint64_t steps) {
  JobSpec spec;
  spec.set_name("integration");
  spec.set_num_servers(servers);
  spec.set_num_workers(workers);
  spec.mutable_data()->set_path(Runfile("tests/testdata/shakespeare_200k.txt"));
  spec.mutable_model()->set_kind("mlp");
  spec.mutable_model()->set_context(6);
  spec.mutable_model()->set_embedding_dim(16);
  spec.mutable_model()->set_hidden_dim(128);
  TrainingSpec* t = spec.mutable_training();
  t->set_steps(steps);
  t->set_batch_size(32);
  t->set_consistency(mode);
  t->mutable_optimizer()->set_kind(MOMENTUM);
  t->mutable_optimizer()->set_learning_rate(0.05f);
  t->mutable_optimizer()->set_momentum(0.9f);
  t->set_report_every(10);
  t->set_sample_length(80);
  return spec;
}

std::vector<float> ServedParameters(const JobStatus& status) {
  absl::StatusOr<std::unique_ptr<ParameterClient>> client =
      ParameterClient::Create(status.shard_map(), 0);
  EXPECT_TRUE(client.ok()) << client.status();
  if (!client.ok()) return {};
  std::vector<float> values((*client)->num_parameters());
  absl::Status pulled = (*client)->Pull(0, values.data(), absl::Seconds(10));
  EXPECT_TRUE(pulled.ok()) << pulled;
  return values;
}

}  // namespace psrv
