// Push and pull requests of job "job", table "w" (FP32), as the server's tests build them.
#ifndef PSRV_SERVER_TEST_REQUESTS_H_
#define PSRV_SERVER_TEST_REQUESTS_H_

#include <cstdint>

#include "proto/parameter_server.pb.h"

namespace psrv {

inline PushRequest TestPushRequest(uint64_t step, uint32_t rank, uint64_t begin, uint64_t end) {
  PushRequest p;
  p.set_job_id("job");
  p.set_table("w");
  p.mutable_range()->set_begin(begin);
  p.mutable_range()->set_end(end);
  p.set_dtype(FP32);
  p.set_step(step);
  p.set_worker_rank(rank);
  return p;
}

inline PullRequest TestPullRequest(uint64_t step, uint64_t begin, uint64_t end) {
  PullRequest p;
  p.set_job_id("job");
  p.set_table("w");
  p.mutable_range()->set_begin(begin);
  p.mutable_range()->set_end(end);
  p.set_dtype(FP32);
  p.set_step(step);
  return p;
}

}  // namespace psrv

#endif  // PSRV_SERVER_TEST_REQUESTS_H_
