// How a model's training step overlaps with the parameter servers: forward waits only for the
// parameters it is about to read (the rest may still be arriving), and backward hands each range
// of the gradient over as soon as it is final (its push can start while backward goes on).
#ifndef PSRV_WORKER_MODEL_PARAMETER_STREAM_H_
#define PSRV_WORKER_MODEL_PARAMETER_STREAM_H_

#include <cstddef>
#include <vector>

namespace psrv {

// A range [offset, offset + count) of a model's flat buffer (parameters or gradients).
struct FlatRange {
  size_t offset = 0;
  size_t count = 0;
};

// The ranges one stage of a model reads (forward) or finishes (backward): e.g. a GPT layer's
// slices of its 12 per-layer tables.
using ParameterGroup = std::vector<FlatRange>;

// Implemented by the trainer (worker/step_pipeline.h); called by models from the thread running
// ForwardBackward / AccumulateGradients. Implementations are thread-safe.
class ParameterStream {
 public:
  virtual ~ParameterStream() = default;
  // Blocks until params[offset, offset + count) hold the values of the step being computed.
  virtual void AwaitParameters(const FlatRange& range) = 0;
  // grads[offset, offset + count) are final for this step: the model will not write them again
  // in this call, and the caller may send them (they must stay unchanged until the call returns).
  virtual void GradientsReady(const FlatRange& range) = 0;
};

}  // namespace psrv

#endif  // PSRV_WORKER_MODEL_PARAMETER_STREAM_H_
