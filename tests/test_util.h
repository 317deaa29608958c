// Helpers shared by the integration tests: binaries and data from Bazel runfiles, scratch
// directories, and running psctl against a cluster.
#ifndef PSRV_TESTS_TEST_UTIL_H_
#define PSRV_TESTS_TEST_UTIL_H_

#include <string>
#include <vector>

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

// How many of the two (equally long) parameter vectors' elements differ, bit for bit.
size_t CountDifferent(const std::vector<float>& a, const std::vector<float>& b);

// Every parameter of a job, as its servers hold them now (pulled with the status's shard map).
std::vector<float> ServedParameters(const JobStatus& status);

// A small byte-level MLP job on the test corpus (tests/testdata/shakespeare_200k.txt): SGD with
// momentum, reports every 10 steps, an 80-byte sample. Named "integration".
JobSpec SmallMlpJob(ConsistencyMode mode, uint32_t servers, uint32_t workers, uint64_t steps);

}  // namespace psrv

#endif  // PSRV_TESTS_TEST_UTIL_H_
