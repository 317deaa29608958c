// How a worker's training steps overlap with the parameter servers (docs/ARCHITECTURE.md, "The
// step"). With overlap on:
//   PULL     step s's pulls were sent during step s-1, as soon as each chunk of step s-1 was pushed
//            (a SYNC server answers once it applied step s-1 on that shard); forward awaits only
//            the ranges it is about to read (AwaitParameters), so layer 0 computes while the last
//            layers' parameters still travel.
//   COMPUTE  the model (ParameterStream).
//   PUSH     backward hands each group of gradients over as it is final (GradientsReady): every
//            chunk whose keys are all final is narrowed to bf16 (its squared norm noted in the same
//            pass) on one of the pipeline's two pusher threads, in turn, and pushed from its sender
//            thread (gRPC writes the message on the thread that starts the call: the next chunks
//            are narrowed meanwhile), while the model goes on. With gradient clipping in a SYNC
//            job the pushes carry scale_follows and the clipping factor follows in CommitStep once
//            backward is done (the servers scale; the result is the same as pushing the clipped
//            gradient). ASYNC jobs clip before pushing.
// With overlap off, the same step runs in sequence: every pull is in before compute, and every push
// is sent after it (the next pulls right behind them: a SYNC server answers them once the step is
// applied; ASYNC: once every push was). Both give the same parameters, bit for bit, wherever the
// servers' sums do not depend on the order pushes arrive in: with clipping (added in rank order)
// or up to 2 workers. Overlap pays when the model computes elsewhere (a GPU); a CPU model that uses
// every core loses more to the competition for them than it gains (bench/README.md).
//
// Parameters and gradients are double-buffered (steps use the two buffers in turn), so step s+1's
// pulls and step s's pushes never touch what the model of the other step reads or writes.
#ifndef PSRV_WORKER_STEP_PIPELINE_H_
#define PSRV_WORKER_STEP_PIPELINE_H_

#include <stdlib.h>

#include <cstdint>
#include <functional>
#include <new>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/work_queue.h"
#include "proto/types.pb.h"
#include "worker/model/parameter_stream.h"
#include "worker/resilient_client.h"

namespace psrv {

// Allocates whole pages: a buffer shares no page with another allocation (a GPU model pins the
// pipeline's buffers with cudaHostRegister, page by page).
template <typename T>
struct PageAllocator {
  using value_type = T;
  static constexpr size_t kPage = 4096;
  PageAllocator() = default;
  template <typename U>
  PageAllocator(const PageAllocator<U>&) {}
  T* allocate(size_t n) {
    void* p = nullptr;
    const size_t bytes = (n * sizeof(T) + kPage - 1) / kPage * kPage;
    if (posix_memalign(&p, kPage, bytes == 0 ? kPage : bytes) != 0) throw std::bad_alloc();
    return static_cast<T*>(p);
  }
  void deallocate(T* p, size_t) { free(p); }
  template <typename U>
  bool operator==(const PageAllocator<U>&) const { return true; }
  template <typename U>
  bool operator!=(const PageAllocator<U>&) const { return false; }
};

// Gradient clipping: the factor that brings a gradient of L2 norm `norm` down to `clip` (1 when it
// is not above it, or clip <= 0: off).
inline float GradientClipScale(double norm, float clip) {
  return clip > 0 && norm > clip ? static_cast<float>(clip / norm) : 1.0f;
}

// Thread-compatible: one training thread calls everything (the model calls the ParameterStream
// methods from inside Compute, on that thread); pushes are narrowed on the pipeline's pusher
// threads and started on its sender thread.
class StepPipeline : public ParameterStream {
 public:
  struct Options {
    bool overlap = true;
    float grad_clip = 0;  // Clip each step's gradient to this global L2 norm; 0: off.
    ConsistencyMode consistency = SYNC;
    // A pipeline stage holds part of the gradient: called with the sum of squares of its part,
    // returns the whole model's (the stages of its group add theirs; every stage must get the
    // same number). Unset: this worker's gradient is the whole one.
    std::function<absl::StatusOr<double>(double)> combine_squares;
  };

  // `client` is not owned and must outlive the pipeline.
  StepPipeline(ResilientClient* client, const Options& options);
  // Stops the client's calls (which use this pipeline's buffers) before the buffers go.
  ~StepPipeline();

  // Starts pulling step `first`.
  void Start(uint64_t first);

  // Step `step` (first, then one after another): its parameter buffer (filled as pulls arrive;
  // see AwaitParameters) and gradient buffer (the model writes it).
  void BeginStep(uint64_t step);
  const float* params() const { return params_[buffer_].data(); }
  float* grads() { return grads_[buffer_].data(); }

  // SYNC with backup workers (TrainingSpec.aggregate_first), before the model computes: if the
  // step just begun was already applied by every server without this worker (the pulls found
  // every shard past it), the step becomes the first one some server has not applied (the
  // parameters pulled are those it starts from), so that its pushes count again. Waits for every
  // pull of the step and for the previous step's pushes. Returns the step.
  absl::StatusOr<uint64_t> CatchUp();

  // Every parameter of the current step in place (a validation loss, a sample).
  absl::Status AwaitAllParameters();

  // ParameterStream, for the model. Errors are kept for status(): the model computes on.
  void AwaitParameters(const FlatRange& range) override;
  void GradientsReady(const FlatRange& range) override;

  // After compute: clips, sends what is left of the step's gradient (and the clipping factor),
  // and starts the next step's pulls (ASYNC: once every push was applied).
  absl::Status FinishStep();

  // After the last step: waits for the parameters after it (SYNC: every worker's last push
  // applied); params() then holds them.
  absl::Status FinishRun();

  // Time AwaitParameters blocked since ResetWaited (the compute phase's waits for pulls).
  void ResetWaited() { waited_ = absl::ZeroDuration(); }
  absl::Duration waited() const { return waited_; }

  // L2 norm of the last finished step's gradient, before clipping.
  double grad_norm() const { return grad_norm_; }
  // The first error the ParameterStream methods met (they cannot return it); OK if none.
  const absl::Status& status() const { return status_; }

 private:
  // Pushes target t of the current step (its norm noted first) and, SYNC with overlap, starts
  // its pull of the next step. On the training thread, once pushers_ and sender_ drained; during
  // backward its halves run on a pusher (NarrowTarget), then on sender_ (SendTarget).
  void PushTarget(size_t t, bool scale_follows);
  // PushTarget's two halves: the bf16 payload and the norm's part (returns whether it narrowed:
  // false for FP32 wire or compressed pushes, which the client prepares), then the push (and
  // pull).
  bool NarrowTarget(size_t t);
  void SendTarget(size_t t, bool scale_follows, bool narrowed);
  // Waits until every push handed to the pushers was narrowed and started.
  void DrainPushes();
  // Starts every target's pull of the next step.
  void StartPulls();
  // Sum of squares of target t's gradients (double, fixed order: the same in both modes).
  double SumOfSquares(size_t t) const;

  ResilientClient* const client_;
  const Options options_;
  const size_t n_;
  // SYNC with clipping (pushes not compressed): the factor follows in CommitStep.
  const bool defer_scale_;
  using HostBuffer = std::vector<float, PageAllocator<float>>;
  HostBuffer params_[2];  // (num_parameters) steps use them in turn: buffer_, then 1 - buffer_.
  HostBuffer grads_[2];   // (num_parameters) as params_.
  uint64_t step_ = 0;
  int buffer_ = 1;                  // The current step's buffers (the first step's: 0).
  uint64_t buffer_step_[2] = {0, 0};  // The step that used each buffer last (0: none).
  std::vector<size_t> ready_keys_;   // (targets) keys of the step's gradient final so far.
  std::vector<char> pushed_;         // (targets) pushed this step.
  std::vector<double> squares_;      // (targets) sum of squares, once final.
  std::vector<char> pulled_;         // (targets) this step's pull came back (AwaitParameters).
  double grad_norm_ = 0;
  absl::Duration waited_;
  absl::Status status_;
  WorkQueue sender_;  // Starts the pushes the pushers narrowed (gRPC writes on the calling thread).
  // Chunks are handed to the pushers in turn: two narrow side by side (the narrowing is bound by
  // one core's memory bandwidth: 43 MB of gradient in 8 ms on a Xeon VM).
  static constexpr int kPushers = 2;
  int next_pusher_ = 0;
  WorkQueue pushers_[kPushers];  // Last: drained and joined first.
};

}  // namespace psrv

#endif  // PSRV_WORKER_STEP_PIPELINE_H_
