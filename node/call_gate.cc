#include "node/call_gate.h"

namespace kv {

class CallGate::CountedReactor final : public grpc::ServerUnaryReactor {
 public:
  explicit CountedReactor(CallGate* gate) : gate_(gate) {}
  void OnDone() override {
    gate_->CallDone();
    delete this;
  }
  // Cancellation needs no action: the work already queued finishes the call (gRPC drops the
  // response), and FinishOnExecutor skips work for calls cancelled before they started.
  void OnCancel() override {}
  // OnDone is trivial (a counter and a delete; it never blocks or calls into gRPC), so gRPC may
  // run it on the thread that completes the call. Otherwise gRPC 1.51 hands every call's OnDone
  // to its own executor: a thread hop per call. Measured (kvbench, 1 node, CPU read from /proc,
  // 3 alternated pairs): 10.6-11.4 against 12.9-14.1 us of node CPU per Ping, and a ceiling
  // 12% higher; Put throughput unchanged. gRPC calls this hook internal (its default reactor,
  // ServerContext's, overrides it so); were it gone, `override` would fail to compile.
  bool InternalInlineable() override { return true; }

 private:
  CallGate* const gate_;
};

absl::Status CallGate::Check() const {
  if (open_.load(std::memory_order_acquire)) return absl::OkStatus();
  return absl::UnavailableError("kvnode is shutting down; retry on another node");
}

grpc::ServerUnaryReactor* CallGate::NewReactor() {
  {
    absl::MutexLock lock(&mu_);
    ++in_flight_;
  }
  return new CountedReactor(this);
}

void CallGate::CallDone() {
  absl::MutexLock lock(&mu_);
  // Only a closed gate has waiters; an open one saves every call the notification.
  if (--in_flight_ == 0 && !open_.load(std::memory_order_acquire)) idle_.Notify();
}

int CallGate::WaitUntilIdle(absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  auto idle = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return in_flight_ == 0; };
  idle_.AwaitWithTimeout(&mu_, absl::Condition(&idle), timeout);
  return in_flight_;
}

int CallGate::in_flight() {
  absl::MutexLock lock(&mu_);
  return in_flight_;
}

}  // namespace kv
