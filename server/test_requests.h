// Push and pull requests of job "job", table "w" (FP32), as the server's tests build them.
#ifndef PSRV_SERVER_TEST_REQUESTS_H_
#define PSRV_SERVER_TEST_REQUESTS_H_

#include <cstdint>

#include "proto/parameter_server.pb.h"

namespace psrv {

// A PushRequest or PullRequest for keys [begin, end) at `step`.
template <typename Request>
Request TestRequest(uint64_t step, uint64_t begin, uint64_t end) {
  Request r;
  r.set_job_id("job");
  r.set_table("w");
  r.mutable_range()->set_begin(begin);
  r.mutable_range()->set_end(end);
  r.set_dtype(FP32);
  r.set_step(step);
  return r;
}

inline PushRequest TestPushRequest(uint64_t step, uint32_t rank, uint64_t begin, uint64_t end) {
  PushRequest p = TestRequest<PushRequest>(step, begin, end);
  p.set_worker_rank(rank);
  return p;
}

inline PullRequest TestPullRequest(uint64_t step, uint64_t begin, uint64_t end) {
  return TestRequest<PullRequest>(step, begin, end);
}

}  // namespace psrv

#endif  // PSRV_SERVER_TEST_REQUESTS_H_
