// Helpers shared by the integration tests: binaries and data from Bazel runfiles, scratch
// directories, and running psctl against a cluster.
#ifndef PSRV_TESTS_TEST_UTIL_H_
#define PSRV_TESTS_TEST_UTIL_H_

#include <functional>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "client/coordinator_client.h"
#include "client/local_cluster.h"
#include "proto/job.pb.h"

namespace psrv {

// The runfile at `path` in this workspace, e.g. "server/ps_server".
std::string Runfile(const std::string& path);

// A fresh directory under $TEST_TMPDIR named `name`_XXXXXX.
std::string TempDir(const std::string& name);

// The whole file ("" if unreadable).
std::string ReadFile(const std::string& path);

// Runs psctl --coordinator=`coordinator` `args`, logging to a new file in `log_dir`. Returns the
// exit code (-1 if it did not end within a minute) and sets `*out` to its stdout and stderr.
int RunPsctl(const std::string& coordinator, const std::string& log_dir,
             const std::vector<std::string>& args, std::string* out);

// Options for a LocalCluster of the built binaries (from runfiles) with `servers` servers and
// `workers` workers, logging to `log_dir`.
LocalClusterOptions TestClusterOptions(const std::string& log_dir, int servers, int workers);

// The LocalCluster name ("server 1") of the server at `address` (127.0.0.1:port) of the cluster
// logging to `log_dir` ("" if none of its first 8 servers).
std::string LocalServerName(const std::string& log_dir, const std::string& address);

// Polls job `job` until `done(status)` or `timeout`; fails the test on timeout (naming the logs
// in `log_dir`) and returns the job's last status.
JobStatus WaitForJob(CoordinatorClient* client, const std::string& job,
                     const std::function<bool(const JobStatus&)>& done, absl::Duration timeout,
                     const std::string& log_dir);

// How many of the two (equally long) parameter vectors' elements differ, bit for bit.
size_t CountDifferent(const std::vector<float>& a, const std::vector<float>& b);

// Every parameter of a job, as its servers hold them now (pulled with the status's shard map).
std::vector<float> ServedParameters(const JobStatus& status);

// A small byte-level MLP job on the test corpus (tests/testdata/shakespeare_200k.txt): SGD with
// momentum, reports every 10 steps, an 80-byte sample. Named "integration".
JobSpec SmallMlpJob(ConsistencyMode mode, uint32_t servers, uint32_t workers, uint64_t steps);

}  // namespace psrv

#endif  // PSRV_TESTS_TEST_UTIL_H_
