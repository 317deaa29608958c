// The CPU execution model of emulation/simt.h: a block's threads are fibers run by a scheduler on
// the calling host thread; a fiber runs until it finishes or waits at a barrier, and a barrier
// opens when every live thread it concerns (the block, or the lane's warp) waits at it.
//
// Fibers are made once per host thread (makecontext) and then reused for thread after thread,
// block after block; switching is _setjmp/_longjmp (no signal-mask system call), which is what
// makes the simulator fast enough for whole-model tests. _longjmp onto another stack is what
// _FORTIFY_SOURCE's longjmp check forbids, hence the #undef.
#undef _FORTIFY_SOURCE
#include "worker/cuda/emulation/simt.h"

#include <setjmp.h>
#include <sys/mman.h>
#include <ucontext.h>

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <vector>

#include "absl/strings/str_cat.h"

namespace psrv {
namespace simt {
namespace {

constexpr int kWarp = 32;
// Per thread; the kernels keep a few scalars on their stacks, the rest is libm's and ours.
constexpr size_t kStackBytes = 64 * 1024;
// CUDA's limit on threads per block.
constexpr size_t kMaxThreadsPerBlock = 1024;

enum class State { kReady, kAtSyncThreads, kAtSyncWarp, kDone };

struct Fiber {
  ucontext_t context;  // the first entry only
  jmp_buf resume;      // where the fiber continues
  bool started = false;
  State state = State::kReady;
  ThreadIds ids;
  int linear = 0;  // x + y * Dx + z * Dx * Dy: warps are consecutive runs of 32
};

// Fiber stacks, mapped once per host thread for the largest block and reused.
class StackPool {
 public:
  ~StackPool() {
    if (base_ != nullptr) munmap(base_, bytes_);
  }
  char* Stack(size_t i) {
    if (base_ == nullptr) {
      bytes_ = kMaxThreadsPerBlock * kStackBytes;
      void* p = mmap(nullptr, bytes_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      if (p == MAP_FAILED) {
        std::fprintf(stderr, "simt: cannot map %zu bytes of fiber stacks\n", bytes_);
        std::abort();
      }
      base_ = static_cast<char*>(p);
    }
    return base_ + i * kStackBytes;
  }

 private:
  char* base_ = nullptr;
  size_t bytes_ = 0;
};

struct BlockRun {
  std::vector<Fiber>* fibers = nullptr;  // the first `threads` of the host thread's fibers
  size_t threads = 0;
  std::vector<uint64_t> exchange;  // one slot per thread, for the warp shuffles
  const std::function<void()>* body = nullptr;
  Fiber* current = nullptr;
  Fiber& fiber(size_t i) { return (*fibers)[i]; }
};

thread_local BlockRun* t_block = nullptr;
thread_local StackPool t_stacks;
thread_local std::vector<Fiber> t_fibers(kMaxThreadsPerBlock);
thread_local jmp_buf t_scheduler;
thread_local cudaError_t t_last_error = cudaSuccess;
thread_local std::string t_error_message;
thread_local bool t_block_failed = false;

void Fail(const std::string& message) {
  if (t_last_error == cudaSuccess) {
    t_last_error = cudaErrorLaunchFailure;
    t_error_message = message;
    std::fprintf(stderr, "simt launch error: %s\n", message.c_str());
  }
  t_block_failed = true;
}

std::string Where(const ThreadIds& ids) {
  return absl::StrCat("block (", ids.block_idx.x, ",", ids.block_idx.y, ",", ids.block_idx.z,
                      ") thread (", ids.thread_idx.x, ",", ids.thread_idx.y, ",", ids.thread_idx.z,
                      ")");
}

// Saves the running fiber and continues the scheduler.
void SwitchToScheduler(Fiber* fiber) {
  if (_setjmp(fiber->resume) == 0) _longjmp(t_scheduler, 1);
}

// A fiber's whole life: one CUDA thread after another, as the scheduler assigns them.
void FiberMain() {
  for (;;) {
    (*t_block->body)();
    Fiber* fiber = t_block->current;
    fiber->state = State::kDone;
    SwitchToScheduler(fiber);
  }
}

// Runs `fiber` until it finishes its thread or waits at a barrier.
void Resume(Fiber* fiber, size_t index) {
  if (_setjmp(t_scheduler) != 0) return;
  if (fiber->started) _longjmp(fiber->resume, 1);
  fiber->started = true;
  getcontext(&fiber->context);
  fiber->context.uc_stack.ss_sp = t_stacks.Stack(index);
  fiber->context.uc_stack.ss_size = kStackBytes;
  fiber->context.uc_link = nullptr;  // FiberMain never returns
  makecontext(&fiber->context, FiberMain, 0);
  ucontext_t unused;
  swapcontext(&unused, &fiber->context);  // Comes back through _longjmp(t_scheduler).
}

// Suspends the running fiber in `state` and returns when the scheduler resumes it.
void Wait(State state) {
  BlockRun* block = t_block;
  if (block == nullptr || block->current == nullptr) {
    std::fprintf(stderr, "simt: a barrier or shuffle outside a kernel\n");
    std::abort();
  }
  Fiber* fiber = block->current;
  fiber->state = state;
  SwitchToScheduler(fiber);
}

// Opens the barriers whose threads have all arrived; false when none can open (a deadlock).
bool Release(BlockRun& block) {
  const size_t n = block.threads;
  bool released = false;
  for (size_t warp = 0; warp < n; warp += kWarp) {
    const size_t end = std::min(n, warp + kWarp);
    size_t live = 0, waiting = 0;
    for (size_t i = warp; i < end; ++i) {
      if (block.fiber(i).state != State::kDone) ++live;
      if (block.fiber(i).state == State::kAtSyncWarp) ++waiting;
    }
    if (waiting > 0 && waiting == live) {
      for (size_t i = warp; i < end; ++i) {
        if (block.fiber(i).state == State::kAtSyncWarp) block.fiber(i).state = State::kReady;
      }
      released = true;
    }
  }
  if (released) return true;
  size_t live = 0, at_sync = 0;
  for (size_t i = 0; i < n; ++i) {
    if (block.fiber(i).state != State::kDone) ++live;
    if (block.fiber(i).state == State::kAtSyncThreads) ++at_sync;
  }
  if (at_sync > 0 && at_sync == live) {
    for (size_t i = 0; i < n; ++i) {
      if (block.fiber(i).state == State::kAtSyncThreads) block.fiber(i).state = State::kReady;
    }
    return true;
  }
  return false;
}

void RunBlock(BlockRun& block, dim3 grid, dim3 dims, uint3 block_idx) {
  const size_t n = block.threads;
  for (size_t i = 0; i < n; ++i) {
    Fiber& f = block.fiber(i);
    f.state = State::kReady;
    f.linear = static_cast<int>(i);
    f.ids.thread_idx =
        make_uint3(static_cast<unsigned>(i % dims.x), static_cast<unsigned>(i / dims.x % dims.y),
                   static_cast<unsigned>(i / (dims.x * dims.y)));
    f.ids.block_idx = block_idx;
    f.ids.block_dim = dims;
    f.ids.grid_dim = grid;
  }
  size_t live = n;
  while (live > 0) {
    for (size_t i = 0; i < n; ++i) {
      Fiber& f = block.fiber(i);
      if (f.state != State::kReady) continue;
      block.current = &f;
      Resume(&f, i);
      block.current = nullptr;
      if (f.state == State::kDone) --live;
    }
    if (live == 0) break;
    if (!Release(block)) {
      size_t at_sync = 0, at_warp = 0;
      const Fiber* example = nullptr;
      for (size_t i = 0; i < n; ++i) {
        const Fiber& f = block.fiber(i);
        if (f.state == State::kAtSyncThreads) ++at_sync;
        if (f.state == State::kAtSyncWarp) {
          ++at_warp;
          if (example == nullptr) example = &f;
        }
      }
      Fail(absl::StrCat("deadlock in block (", block_idx.x, ",", block_idx.y, ",", block_idx.z,
                        "): ", at_sync, " threads wait at __syncthreads(), ", at_warp,
                        " at a warp barrier or shuffle (first: ",
                        example != nullptr ? Where(example->ids) : std::string("none"), "), ",
                        n - live, " have exited"));
      // The waiting fibers are abandoned mid-kernel: they start afresh at their next use.
      for (size_t i = 0; i < n; ++i) {
        if (block.fiber(i).state != State::kDone) block.fiber(i).started = false;
      }
      return;
    }
  }
}

}  // namespace

const ThreadIds& Current() {
  if (t_block == nullptr || t_block->current == nullptr) {
    std::fprintf(stderr, "simt: threadIdx/blockIdx read outside a kernel\n");
    std::abort();
  }
  return t_block->current->ids;
}

void SyncThreads() { Wait(State::kAtSyncThreads); }

void SyncWarp() { Wait(State::kAtSyncWarp); }

int LaneId() {
  Current();  // Aborts outside a kernel.
  return t_block->current->linear % kWarp;
}

uint64_t ExchangeInWarp(uint64_t bits, int source_lane) {
  BlockRun* block = t_block;
  Current();  // Aborts outside a kernel.
  const int self = block->current->linear;
  block->exchange[self] = bits;
  Wait(State::kAtSyncWarp);
  const int source = self / kWarp * kWarp + source_lane;
  uint64_t out = bits;
  if (source_lane < 0 || source_lane >= kWarp || source >= static_cast<int>(block->threads)) {
    Fail(absl::StrCat("shuffle in ", Where(block->fiber(self).ids), " reads lane ", source_lane,
                      ", which does not exist"));
  } else if (block->fiber(source).state == State::kDone) {
    Fail(absl::StrCat("shuffle in ", Where(block->fiber(self).ids), " reads lane ", source_lane,
                      ", which has exited"));
  } else {
    out = block->exchange[source];
  }
  Wait(State::kAtSyncWarp);  // Every lane has read before a slot is written again.
  return out;
}

void RunGrid(dim3 grid, dim3 block_dims, size_t dynamic_shared_bytes,
             const std::function<void()>& thread_body) {
  const size_t threads = static_cast<size_t>(block_dims.x) * block_dims.y * block_dims.z;
  const size_t blocks = static_cast<size_t>(grid.x) * grid.y * grid.z;
  if (threads == 0 || threads > kMaxThreadsPerBlock || blocks == 0 || grid.y > 65535 ||
      grid.z > 65535 || block_dims.z > 64) {
    SetLaunchError(absl::StrCat("invalid launch configuration: grid (", grid.x, ",", grid.y, ",",
                                grid.z, ") block (", block_dims.x, ",", block_dims.y, ",",
                                block_dims.z, ")"));
    return;
  }
  if (dynamic_shared_bytes != 0) {
    SetLaunchError("dynamic shared memory is not modelled by the simulator");
    return;
  }
  if (t_block != nullptr) {
    SetLaunchError("a kernel launched from a kernel (dynamic parallelism) is not modelled");
    return;
  }
  BlockRun block;
  block.fibers = &t_fibers;
  block.threads = threads;
  block.exchange.assign(threads, 0);
  block.body = &thread_body;
  t_block = &block;
  t_block_failed = false;
  for (unsigned z = 0; z < grid.z && !t_block_failed; ++z) {
    for (unsigned y = 0; y < grid.y && !t_block_failed; ++y) {
      for (unsigned x = 0; x < grid.x && !t_block_failed; ++x) {
        RunBlock(block, grid, block_dims, make_uint3(x, y, z));
      }
    }
  }
  t_block = nullptr;
}

cudaError_t TakeLastError() {
  const cudaError_t error = t_last_error;
  t_last_error = cudaSuccess;
  return error;
}

std::string LastErrorMessage() { return t_error_message; }

void SetLaunchError(const std::string& message) {
  if (t_last_error == cudaSuccess) {
    t_last_error = cudaErrorInvalidConfiguration;
    t_error_message = message;
    std::fprintf(stderr, "simt launch error: %s\n", message.c_str());
  }
}

void KernelFault(const std::string& message) {
  Fail(absl::StrCat(message, " (", Where(Current()), ")"));
}

}  // namespace simt
}  // namespace psrv
