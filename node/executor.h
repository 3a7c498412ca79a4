// Executor: where the node runs work that may block (storage I/O), so that gRPC handlers do not
// (client writes aside: LocalStore commits them on a gRPC thread, see node/kv_service.h).
// ThreadPoolExecutor is the production implementation; InlineExecutor runs work at once on the
// caller's thread (unit tests, the simulation).
#ifndef KV_NODE_EXECUTOR_H_
#define KV_NODE_EXECUTOR_H_

#include <functional>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/inlined_vector.h"
#include "absl/synchronization/mutex.h"

namespace kv {

class Executor {
 public:
  virtual ~Executor() = default;
  // Runs `fn` at some later point (or now). Never drops work: after Shutdown() begins, new work
  // still runs, on the caller's thread.
  virtual void Schedule(std::function<void()> fn) = 0;
};

class InlineExecutor : public Executor {
 public:
  void Schedule(std::function<void()> fn) override { fn(); }
};

// A fixed pool of worker threads sharing one FIFO queue. The destructor runs every queued task
// and joins the workers. Thread-safe.
class ThreadPoolExecutor : public Executor {
 public:
  explicit ThreadPoolExecutor(int num_threads);
  ~ThreadPoolExecutor() override;
  ThreadPoolExecutor(const ThreadPoolExecutor&) = delete;
  ThreadPoolExecutor& operator=(const ThreadPoolExecutor&) = delete;

  void Schedule(std::function<void()> fn) override;
  // Runs queued tasks to completion and stops the workers; later Schedule calls run inline.
  void Shutdown();

 private:
  void WorkerLoop();

  absl::Mutex mu_;
  std::vector<std::function<void()>> queue_ ABSL_GUARDED_BY(mu_);
  size_t head_ ABSL_GUARDED_BY(mu_) = 0;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> workers_;
};

}  // namespace kv

#endif  // KV_NODE_EXECUTOR_H_
