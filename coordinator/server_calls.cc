#include "coordinator/server_calls.h"

namespace psrv {

CallRound::CallRound() : pending_(std::make_shared<Pending>()) {}

void CallRound::WaitUntil(absl::Time deadline) const {
  absl::MutexLock lock(&pending_->mu);
  pending_->mu.AwaitWithDeadline(
      absl::Condition(+[](int* calls) { return *calls == 0; }, &pending_->calls), deadline);
}

bool ServerCalls::Start(std::function<void()> call, const CallRound* round) {
  {
    absl::MutexLock lock(&mu_);
    if (stopping_) return false;
    ++running_;
  }
  std::shared_ptr<CallRound::Pending> pending = round == nullptr ? nullptr : round->pending_;
  if (pending != nullptr) {
    absl::MutexLock lock(&pending->mu);
    ++pending->calls;
  }
  std::thread([this, call = std::move(call), pending = std::move(pending)]() mutable {
    call();
    call = nullptr;  // What it holds goes before Stop() can return.
    if (pending != nullptr) {
      absl::MutexLock lock(&pending->mu);
      --pending->calls;
    }
    absl::MutexLock lock(&mu_);
    --running_;
  }).detach();
  return true;
}

void ServerCalls::Stop() {
  absl::MutexLock lock(&mu_);
  stopping_ = true;
  mu_.Await(absl::Condition(+[](int* running) { return *running == 0; }, &running_));
}

}  // namespace psrv
