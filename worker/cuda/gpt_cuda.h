// The "gpt" model on one CUDA GPU: the CPU GptModel's architecture and flat parameter layout
// (common/model_layout.h GptTables), computed in bf16 with fp32 accumulation. Free of protobuf and
// gRPC, so that GPU benchmarks link only CUDA; gpt_cuda_model.h adapts it to LanguageModel.
#ifndef PSRV_WORKER_CUDA_GPT_CUDA_H_
#define PSRV_WORKER_CUDA_GPT_CUDA_H_

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "worker/cuda/blas.h"
#include "worker/cuda/device_buffer.h"
#include "worker/cuda/kernels.h"
#include "worker/cuda/layers.h"
#include "worker/cuda/token_buckets.h"
#include "worker/model/gpt_config.h"
#include "worker/model/gpt_views.h"
#include "worker/model/parameter_stream.h"

namespace psrv {
namespace cuda {

// The model's hyperparameters (worker/model/gpt_config.h, the CPU model's) and where and how to
// run it. The dropout masks are the CPU model's, bit for bit.
struct GptCudaConfig : GptConfig {
  int device = 0;            // CUDA device ordinal
  bool use_cublaslt = true;  // see BlasOptions
  // Attention through the flash kernels (no (B, NH, T, T) weights stored or computed in memory;
  // head size <= kFlashMaxHeadSize) instead of cuBLAS products around a materialised softmax.
  // Off by default until measured faster on a GPU (bench/gpu/).
  bool flash_attention = false;
  // With flash_attention: the fp32 CUDA-core kernels (flash_attention.cu) instead of the tensor-core
  // ones (flash_attention_tc.cu).
  bool flash_fp32 = false;
  // The MLP's GELU output is not kept for the backward but computed again from the fc output
  // there (llm.c's recompute): 4C bf16 per token and layer less memory (1.2 GB at GPT-2 small's
  // B 16, T 1024), one elementwise kernel per layer more; the same bits either way.
  bool recompute_gelu = true;
  // The MLP's fc product and its GELU as one cuBLASLt product (GELU_AUX_BIAS epilogue,
  // LinearGeluForward): one elementwise kernel and one pass over (B, T, 4C) less per layer in the
  // forward. The GELU then takes the fp32 product rather than its bf16 rounding, so results differ
  // from the unfused path within bf16 rounding (and, with recompute_gelu, the backward's recomputed
  // GELU from the forward's by as much, as in llm.c). Off by default until measured on a GPU.
  bool gelu_epilogue = false;
  // ForwardBackward's work (the parameters' conversion, forward, loss, backward: 46 launches per
  // layer with the materialised attention, 36 with flash, plus 15) captured into a CUDA graph
  // each step and launched as one: the GPU runs the kernels back to back instead of one launch
  // at a time. The graph is instantiated once and updated in place while the work keeps its
  // shape (re-instantiated otherwise). The same results bit
  // for bit. The streamed step (ForwardBackwardStreamed), which waits for the host between
  // layers, and the other calls run as before. Off by default until measured on a GPU.
  bool cuda_graph = false;
};

// INVALID_ARGUMENT naming the first field out of range: ValidateGptConfig, then the device and
// the flash kernels' head sizes.
absl::Status ValidateGptCudaConfig(const GptCudaConfig& config);

// One parameter table of the flat buffer, in the order and shapes of GptTables.
struct GptParamTable {
  std::string name;  // GptTables' name, e.g. "h.attn.qkv.weight"
  size_t offset;     // first element in the flat buffer
  size_t size;       // elements
  enum Init { kNormal, kOnes, kZeros } init;
  float stddev;  // kNormal: 0.02, or 0.02/sqrt(2L) for the residual projections
};
std::vector<GptParamTable> GptCudaTables(const GptCudaConfig& config);

// Forward and backward as the CPU GptModel (worker/model/gpt_model.h), with the precision of
// PyTorch's bf16 autocast: fp32 residual stream, LayerNorm and softmax statistics, and parameter
// gradients; bf16 operands of the matrix products (cuBLASLt/cuBLAS, fp32 accumulation) and bf16
// saved activations. The fp32 master parameters live in device_params() (uploaded by the caller);
// each step converts them to bf16 once.
//
// Owns its stream, cuBLAS handles and device buffers: parameters, gradients, and activations and
// scratch sized for the largest batch seen (re-allocated only when it grows). Every call is
// synchronous (returns when the GPU is done) and bitwise reproducible. Thread-compatible.
class GptCuda {
 public:
  static absl::StatusOr<std::unique_ptr<GptCuda>> Create(const GptCudaConfig& config);
  // One stage of a pipeline: `part` of `config` over its own flat buffer (GptPartLayout), with
  // activations for up to `slots` micro-batches in flight (StageForward/StageBackward).
  // INVALID_ARGUMENT for a bad config, part or slot count. The whole model (Create) is the part
  // WholeGpt(L) with one slot; ForwardBackward and the other whole-model calls need it.
  static absl::StatusOr<std::unique_ptr<GptCuda>> CreateStage(const GptCudaConfig& config,
                                                              const GptPart& part, int slots);
  ~GptCuda();
  GptCuda(const GptCuda&) = delete;
  GptCuda& operator=(const GptCuda&) = delete;

  const GptCudaConfig& config() const { return config_; }
  const GptPart& part() const { return part_; }
  int slots() const { return static_cast<int>(slots_.size()); }
  // Of the part (the whole model: all of them).
  size_t num_parameters() const { return num_parameters_; }

  // (num_parameters) fp32 on the device, in the flat layout.
  float* device_params() { return params_.as<float>(); }
  const float* device_grads() const { return grads_.as<float>(); }

  // host_params (num_parameters) -> device_params(); host memory may be pageable.
  absl::Status UploadParams(const float* host_params);
  // device_grads() -> host_grads (num_parameters).
  absl::Status DownloadGrads(float* host_grads);

  // Gradient accumulation on the device, after each ForwardBackward of a step's micro-batches:
  // the first copies device_grads() into a sum (allocated on first use), the others add them.
  // DownloadGradSum writes sum * scale to host_grads (num_parameters): the host's order of
  // operations (g0 + g1 + ..., then * scale), so the result equals summing on the host bit for bit.
  absl::Status AccumulateGrads(bool first);
  absl::Status DownloadGradSum(float* host_grads, float scale);

  // Training step on device_params(). rows: host (batch, T+1) token ids. Overwrites
  // device_grads() with d(mean loss)/d(params) and returns the mean loss; dropout masks from
  // `seed` alone. A token id outside [0, V) gives NaN and zero gradients.
  absl::StatusOr<float> ForwardBackward(const int32_t* rows, int batch, uint64_t seed);

  // The same step with its parameters arriving and its gradients leaving group by group
  // (GptParameterGroups): before forward enqueues the work that reads a group, the host awaits it
  // (stream->AwaitParameters) and uploads it from host_params (num_parameters, fp32), converting
  // it to bf16 on the GPU; as backward finishes a group, its gradients are copied to host_grads
  // (num_parameters) on a stream of their own while the GPU goes on with the layers below, and
  // handed over (stream->GradientsReady) once there. The host buffers are pinned on first use
  // (cudaHostRegister) so that the copies do not wait for the host. Same results as UploadParams,
  // ForwardBackward, DownloadGrads, bit for bit. A bad token id: NaN, zero gradients, none handed
  // over (the step fails).
  absl::StatusOr<float> ForwardBackwardStreamed(const float* host_params, const int32_t* rows,
                                                int batch, uint64_t seed, float* host_grads,
                                                ParameterStream* stream);
  // Mean loss of rows (batch, T+1) in evaluation mode; NaN for an out-of-range token id.
  absl::StatusOr<float> Loss(const int32_t* rows, int batch);
  // logits (V, host) of the token after tokens (length >= 1; the last T are used; ids clamped to
  // [0, V)), evaluation mode.
  absl::Status NextTokenLogits(const int32_t* tokens, int length, float* logits);

  // Pipeline stages (any part), on device_params() (UploadParams first). Forward of one
  // micro-batch of `batch` rows into activation `slot`, as the CPU GptModel::StageForward: `rows`
  // (host, batch x (T+1)) are read by the part with the embeddings (inputs) and the one with the
  // head (targets); `input` (host, (batch, T, C) fp32) is the previous stage's output (ignored
  // with the embeddings); dropout from `seed`, layer l of the whole model drawing the same masks
  // in any part. Writes `output` (host, (batch, T, C) fp32: the residual stream after the part's
  // last layer) unless the part has the head; returns the mean loss with the head, else 0; NaN
  // for a token id out of range (computed with the id read as 0). `training` false: no dropout,
  // no StageBackward. A batch larger than the activations were sized for while another slot
  // holds a micro-batch: FAILED_PRECONDITION.
  absl::StatusOr<float> StageForward(int slot, const int32_t* rows, const float* input, int batch,
                                     uint64_t seed, float* output, bool training);
  // Backward of `slot`'s micro-batch: `doutput` (host, (batch, T, C) fp32) d(loss)/d(output)
  // from the next stage (ignored with the head). Overwrites device_grads() with d(loss)/d(the
  // part's parameters) (AccumulateGrads sums them over micro-batches) and, unless the part has
  // the embeddings, writes d(loss)/d(input) into `dinput` (host, (batch, T, C)). Frees the slot.
  absl::Status StageBackward(int slot, const float* doutput, float* dinput);
  // Device bytes one slot's saved activations take at `batch` rows (the scratch every slot shares
  // is not counted).
  size_t SlotBytes(int batch) const;

  // Device bytes this model holds: parameters, gradients, activations, scratch, cuBLAS workspace.
  size_t device_bytes() const;
  // device_bytes() once a step of `batch` rows has run (activations sized for it), computed without
  // allocating them: what a GPU of that memory needs for the model (the CUDA context and
  // cuBLAS's own allocations aside). The activations' part alone in *activation_bytes if not null.
  size_t DeviceBytesAt(int batch, size_t* activation_bytes = nullptr) const;
  // Products run through cuBLASLt and through GemmEx so far.
  const Blas& blas() const { return *blas_; }
  // CUDA graphs instantiated and steps launched as a graph so far (cuda_graph).
  int64_t graph_instantiations() const { return graph_instantiations_; }
  int64_t graph_launches() const { return graph_launches_; }

 private:
  // Views of a flat buffer (parameters or gradients), one per table (worker/model/gpt_views.h).
  template <typename Float>
  using Tables = GptTableViews<Float>;

  // What one layer keeps for the backward, for B = reserved rows of T tokens.
  struct LayerActivations {
    bf16* ln1;         // (B, T, C)
    float* ln1_mean;   // (B, T)
    float* ln1_rstd;   // (B, T)
    bf16* qkvr;        // (3, B, NH, T, hs) q, k, v with their heads split out; with the
                       // tensor-core flash attention qkv itself, (B, T, 3C)
    bf16* att;         // (B, NH, T, T) softmax weights before dropout, zero above the diagonal
                       // (null with flash attention)
    float* lse;        // (B, NH, T) flash attention's row logsumexps (null without)
    bf16* atty;        // (B, T, C) attention output, heads side by side
    float* residual2;  // (B, T, C) residual stream after the attention
    bf16* ln2;         // (B, T, C)
    float* ln2_mean;   // (B, T)
    float* ln2_rstd;   // (B, T)
    bf16* fch;         // (B, T, 4C) fc output before the GELU
    bf16* fch_gelu;    // (B, T, 4C) gelu(fch); null with recompute_gelu (dfch's scratch then)
    float* residual3;  // (B, T, C) residual stream after the MLP: the layer's output
  };

  // Every activation and scratch buffer of one slot: views of one device allocation (acts_),
  // each 256-byte aligned. The strides of a call with fewer rows or tokens use that call's B and
  // T. The scratch (from qkv down, and logits) is slot 0's in every slot: only what a micro-batch
  // keeps from its forward to its backward is per slot. A part lacks the tables it does not hold
  // (layers: part.layers; lnf, dlogits, losses: the head only).
  struct Activations {
    int batch = 0;        // Rows of the slot's last forward.
    int num_buckets = 0;  // TokenBuckets of its inputs (the embedding backward's).
    uint64_t seed = 0;    // Its dropout seed.
    bool live = false;    // Holds a micro-batch awaiting its backward.
    // Token staging, copied from pinned host memory in one transfer: inputs, targets, buckets.
    int32_t* staging;                      // (5BT + 1)
    int32_t* inputs;                       // (B, T)
    int32_t* targets;                      // (B, T)
    int32_t* bucket_tokens;                // (<= BT) TokenBuckets of inputs
    int32_t* bucket_starts;                // (<= BT + 1)
    int32_t* bucket_positions;             // (BT)
    float* encoded;                        // (B, T, C) embeddings after dropout: the first residual
    std::vector<LayerActivations> layers;  // (L)
    bf16* lnf;                             // (B, T, C)
    float* lnf_mean;                       // (B, T)
    float* lnf_rstd;                       // (B, T)
    float* logits;                         // (V): NextTokenLogits' row
    bf16* dlogits;                         // (B, T, V): the logits, then their gradient in place
    float* losses;                         // (B, T)
    // Scratch of the forward and the backward.
    bf16* qkv;   // (B, T, 3C) the qkv product; d(qkv) in the backward
    bf16* proj;  // (B, T, C) an output projection; d(projection) in the backward
    AttentionScratch attention;
    float* dresidual;  // (B, T, C) d(loss)/d(residual stream)
    bf16* dbtc;        // (B, T, C)
    bf16* datty;       // (B, T, C)
    bf16* dfch;        // (B, T, 4C)
    float* reduce;     // column-reduction scratch of the bias and LayerNorm backward
  };

  GptCuda(const GptCudaConfig& config, const GptPart& part, int slots);
  absl::Status Init();

  template <typename Float>
  Tables<Float> View(Float* buffer) const;
  // Lays out (base == null: only measures) the activations of `slots` slots for `batch` rows
  // (slots->size() of them, slot 0 with the scratch); returns the bytes.
  size_t Carve(char* base, int batch, std::vector<Activations>* slots) const;
  // Grows the activations to `batch` rows (what the slots hold is lost).
  absl::Status Reserve(int batch);
  // RESOURCE_EXHAUSTED, naming the sizes and what to change, when `bytes` of activations for
  // `batch` rows cannot fit in the GPU's free memory (the current ones counted as free).
  absl::Status CheckActivationsFit(int batch, size_t bytes) const;
  // Splits rows (batch, T+1) into the pinned staging (inputs, targets, and with `buckets` the
  // inputs' TokenBuckets) and uploads it into a's; false for an out-of-range id (uploaded as 0).
  absl::StatusOr<bool> LoadRows(Activations& a, const int32_t* rows, int batch, bool buckets);
  // fp32 master parameters -> their bf16 copy.
  absl::Status ConvertParams();
  // Called with a parameter group's index (GptParameterGroups order): by Forward before it
  // enqueues the group's first reader, by Backward once it enqueued the group's last gradient.
  using GroupHook = std::function<absl::Status(int group)>;
  // The part's forward in slot `a`: a.inputs (B, t) through the embeddings (or a.encoded, the
  // previous stage's output, without them), the part's blocks and (with the head) the final
  // LayerNorm into a.lnf; `training` applies dropout with masks from `seed`.
  absl::Status Forward(Activations& a, int B, int t, bool training, uint64_t seed,
                       const GroupHook& before_group = nullptr);
  // Enqueues the logits of all B*T positions, the losses against targets (copied to
  // host_losses_) and, with `backward`, dlogits = d(mean loss)/d(logits). The head only.
  absl::Status HeadLoss(Activations& a, int B, bool backward);
  // Mean of host_losses_ once the stream has synchronised.
  float MeanLoss(int B) const;
  // The part's backward of slot `a` into grads_: from its loss (the head) or from
  // a.dresidual = d(loss)/d(output) (without it), leaving d(loss)/d(input) in a.dresidual.
  absl::Status Backward(Activations& a, int B, uint64_t seed,
                        const GroupHook& after_group = nullptr);
  // The index in groups_ of the embeddings (-1 without), of the part's layer l and of the head.
  int LayerGroup(int l) const { return (part_.embeddings ? 1 : 0) + l; }
  int HeadGroup() const { return LayerGroup(static_cast<int>(part_.layers)); }
  // FAILED_PRECONDITION unless this is the whole model (the calls of one model on one GPU).
  absl::Status CheckWhole(const char* call) const;
  absl::Status Synchronize();
  // Runs `enqueue` (work on stream_ only, nothing that waits for the device or allocates) as one
  // CUDA graph: captured, then graph_exec_ updated to it (or instantiated), then launched.
  absl::Status RunAsGraph(const std::function<absl::Status()>& enqueue);
  // Pins [data, data + bytes) for asynchronous copies, once per buffer (best effort: pageable
  // memory still works, with copies that wait for the host).
  void PinHostBuffer(const void* data, size_t bytes);

  GptCudaConfig config_;
  GptPart part_;
  size_t num_parameters_ = 0;
  bool params_converted_ = false;  // params_bf16_ is params_ (since the last UploadParams).
  cudaStream_t stream_ = nullptr;
  cudaStream_t copy_stream_ = nullptr;  // Gradient downloads of a streamed step.
  std::vector<ParameterGroup> groups_;  // GptParameterGroups, in forward order.
  std::vector<cudaEvent_t> computed_;   // (groups) a group's gradients are final on the device.
  std::vector<cudaEvent_t> copied_;     // (groups) ... and in host memory.
  std::vector<const void*> pinned_;     // Host buffers registered by PinHostBuffer.
  std::unique_ptr<Blas> blas_;
  cudaGraphExec_t graph_exec_ = nullptr;  // ForwardBackward's last graph (cuda_graph)
  int64_t graph_instantiations_ = 0;
  int64_t graph_launches_ = 0;
  DeviceBuffer params_;       // (num_parameters) fp32 master copy
  DeviceBuffer params_bf16_;  // (num_parameters) bf16 copy used by the products
  DeviceBuffer grads_;        // (num_parameters) fp32
  DeviceBuffer grad_sum_;     // (num_parameters) fp32, gradient accumulation's sum (lazily)
  DeviceBuffer acts_;
  std::vector<Activations> slots_;  // (slots) slots_[0] also holds the shared scratch.
  int reserved_batch_ = 0;
  PinnedBuffer host_staging_;  // (5BT + 1) int32, the layout of a_.staging
  PinnedBuffer host_losses_;   // (BT) fp32
  std::vector<int32_t> counts_;
  TokenBuckets buckets_;
};

}  // namespace cuda
}  // namespace psrv

#endif  // PSRV_WORKER_CUDA_GPT_CUDA_H_
