// Job specs fed to ValidateJobSpec and to the coordinator's SubmitJob after random mutations of
// their fields and bytes (fixed seed): every answer is OK or an error with a message; a refused
// spec adds no job; an accepted one is scheduled (its shards created on fake servers) and
// cancelled without crashing.
#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>

#include <google/protobuf/stubs/logging.h>

#include "absl/strings/str_cat.h"
#include "common/job_spec.h"
#include "common/proto_mutator.h"
#include "coordinator/cluster.h"
#include "gtest/gtest.h"

namespace psrv {
namespace {

JobSpec Seed(ProtoMutator* mutator) {
  JobSpec spec;
  spec.set_num_servers(1 + static_cast<uint32_t>(mutator->Uniform(2)));
  spec.set_num_workers(1 + static_cast<uint32_t>(mutator->Uniform(2)));
  spec.mutable_data()->set_path("/tmp/corpus.txt");
  spec.mutable_training()->set_steps(10);
  if (mutator->OneIn(2)) spec.mutable_model()->set_kind("mlp");
  ApplyJobDefaults(&spec);
  return spec;
}

// A seed spec with its fields or its bytes mutated.
JobSpec Mutated(ProtoMutator* mutator) {
  JobSpec spec = Seed(mutator);
  if (mutator->OneIn(4)) {
    std::string bytes = spec.SerializeAsString();
    mutator->MutateBytes(&bytes);
    if (!spec.ParseFromString(bytes)) spec = Seed(mutator);
  }
  mutator->MutateFields(&spec);
  return spec;
}

TEST(JobSpecFuzzTest, ValidateJobSpecAnswersEveryMutatedSpec) {
  google::protobuf::SetLogHandler(nullptr);
  ProtoMutator mutator(7, {"mlp", "gpt", "/tmp/corpus.txt", "/tmp/ckpt"});
  int ok = 0;
  const int iterations = FuzzIterations(100000);
  for (int i = 0; i < iterations; ++i) {
    JobSpec spec = Mutated(&mutator);
    if (mutator.OneIn(2)) ApplyJobDefaults(&spec);
    const absl::Status status = ValidateJobSpec(spec);
    if (status.ok()) {
      ++ok;
    } else {
      ASSERT_FALSE(status.message().empty()) << spec.DebugString();
    }
  }
  EXPECT_GT(ok, 0);
}

TEST(JobSpecFuzzTest, SubmitJobAnswersEveryMutatedSpec) {
  google::protobuf::SetLogHandler(nullptr);
  absl::Time now = absl::FromUnixSeconds(1000000);
  ClusterCoordinator::Options options;
  options.clock = [&now] { return now; };
  options.reply_wait = absl::InfiniteDuration();
  options.create_shards = [](const std::string&, const CreateShardsRequest&) {
    return absl::OkStatus();
  };
  options.drop_job = [](const std::string&, const std::string&) { return absl::OkStatus(); };
  options.set_workers = [](const std::string&, const SetWorkersRequest&) {
    return absl::OkStatus();
  };
  options.shard_version = [](const std::string&, const std::string&) -> absl::StatusOr<uint64_t> {
    return 0;
  };
  options.server_status = [](const std::string&, const std::string&) -> absl::StatusOr<ServerStatus> {
    return ServerStatus();
  };
  options.add_backup = [](const std::string&, const AddBackupRequest&)
      -> absl::StatusOr<AddBackupResponse> { return AddBackupResponse(); };
  ClusterCoordinator cluster(options);
  for (const char* address : {"h:1", "h:2"}) {
    RegisterRequest r;
    r.set_role(SERVER);
    r.set_address(address);
    ASSERT_TRUE(cluster.Register(r).ok());
  }
  for (const char* address : {"w:1", "w:2"}) {
    RegisterRequest r;
    r.set_role(WORKER);
    r.set_address(address);
    ASSERT_TRUE(cluster.Register(r).ok());
  }
  ProtoMutator mutator(8, {"mlp", "gpt", "/tmp/corpus.txt", "/tmp/ckpt"});
  int accepted = 0;
  const int iterations = FuzzIterations(100000) / 5;
  for (int i = 0; i < iterations; ++i) {
    // Every job is listed (ListJobs is O(jobs): checked every 1000 specs).
    if (i % 1000 == 0) {
      ASSERT_EQ(cluster.ListJobs().jobs_size(), accepted);
    }
    const absl::StatusOr<std::string> id = cluster.SubmitJob(Mutated(&mutator));
    if (!id.ok()) {
      ASSERT_FALSE(id.status().message().empty());
      continue;
    }
    ASSERT_EQ(*id, absl::StrCat("job-", accepted + 1)) << "a refused spec took a job id";
    ++accepted;
    // Scheduled at once (on the fake servers) if the nodes suffice, then cancelled: the next
    // accepted spec finds the nodes free again.
    cluster.Tick();
    ASSERT_TRUE(cluster.GetJob(*id).ok());
    ASSERT_TRUE(cluster.CancelJob(*id).ok());
    cluster.Tick();
  }
  EXPECT_GT(accepted, 0);
  std::printf("%d specs: %d accepted\n", iterations, accepted);
}

}  // namespace
}  // namespace psrv
