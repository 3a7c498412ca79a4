// CommitQueue and WriteGroup: group commit keeps the semantics of one-at-a-time writes (reads see
// earlier changes of the group, a failed mutation or a failed write changes nothing), commits on
// the right thread, and never deadlocks when called back into.
#include "node/commit_queue.h"

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "node/executor.h"
#include "storage/memory_engine.h"

namespace kv {
namespace {

// Holds scheduled work until the test runs it.
class ManualExecutor : public Executor {
 public:
  void Schedule(std::function<void()> fn) override { pending_.push_back(std::move(fn)); }
  size_t RunAll() {
    size_t ran = 0;
    while (!pending_.empty()) {
      std::function<void()> fn = std::move(pending_.front());
      pending_.erase(pending_.begin());
      fn();
      ++ran;
    }
    return ran;
  }
  size_t pending() const { return pending_.size(); }

 private:
  std::vector<std::function<void()>> pending_;
};

// A MemoryEngine that records the batches written and can fail them.
class RecordingEngine : public MemoryEngine {
 public:
  absl::Status Write(const WriteBatch& batch, const WriteOptions& options) override {
    if (fail_writes) return absl::InternalError("injected write failure");
    batches.push_back(batch);
    return MemoryEngine::Write(batch, options);
  }
  bool fail_writes = false;
  std::vector<WriteBatch> batches;
};

// Reads an integer under `key`, writes it plus one, and reports the value it wrote.
class Increment : public CommitQueue::Mutation {
 public:
  Increment(std::string key, std::function<void(absl::Status, int)> done)
      : key_(std::move(key)), done_(std::move(done)) {}
  absl::Status Prepare(WriteGroup& group) override {
    absl::StatusOr<std::string> stored = group.Get(Column::kData, key_);
    int value = 0;
    if (stored.ok() && !absl::SimpleAtoi(*stored, &value)) return absl::DataLossError("not int");
    if (!stored.ok() && !absl::IsNotFound(stored.status())) return stored.status();
    written_ = value + 1;
    group.Put(Column::kData, key_, absl::StrCat(written_));
    return absl::OkStatus();
  }
  void Complete(absl::Status status) override { done_(std::move(status), written_); }

 private:
  const std::string key_;
  const std::function<void(absl::Status, int)> done_;
  int written_ = 0;
};

// Runs arbitrary functions as a mutation.
class FunctionMutation : public CommitQueue::Mutation {
 public:
  FunctionMutation(std::function<absl::Status(WriteGroup&)> prepare,
                   std::function<void(absl::Status)> complete)
      : prepare_(std::move(prepare)), complete_(std::move(complete)) {}
  absl::Status Prepare(WriteGroup& group) override { return prepare_(group); }
  void Complete(absl::Status status) override { complete_(std::move(status)); }

 private:
  std::function<absl::Status(WriteGroup&)> prepare_;
  std::function<void(absl::Status)> complete_;
};

std::string Value(Engine& engine, const std::string& key) {
  absl::StatusOr<std::string> value = engine.Get(Column::kData, key);
  return value.ok() ? *value
                    : "<" + std::string(absl::StatusCodeToString(value.status().code())) + ">";
}

TEST(CommitQueueTest, AGroupSeesItsOwnChangesAndIsWrittenOnce) {
  RecordingEngine engine;
  ManualExecutor executor;
  CommitQueue queue(&engine, WriteOptions(), &executor);
  std::vector<int> completed;
  for (int i = 0; i < 3; ++i) {
    queue.Submit(std::make_unique<Increment>("n", [&](absl::Status status, int written) {
      EXPECT_TRUE(status.ok()) << status;
      completed.push_back(written);
    }));
  }
  EXPECT_TRUE(completed.empty());  // with an executor, nothing runs on the submitting thread
  EXPECT_EQ(executor.pending(), 1u);
  executor.RunAll();
  EXPECT_EQ(completed, (std::vector<int>{1, 2, 3}));
  EXPECT_EQ(Value(engine, "n"), "3");
  ASSERT_EQ(engine.batches.size(), 1u);
  EXPECT_EQ(engine.batches[0].ops().size(), 1u);  // only the latest change of the key
}

// A mutation that starts its group runs its Prepare at a cut: the engine already holds what was
// queued before it, and nothing queued after it has been prepared. The ones after it join its
// group.
TEST(CommitQueueTest, AMutationThatStartsAGroupIsPreparedAfterEverythingBeforeIsWritten) {
  // Prepare's observations go to `seen` and `after_seen` (the queue deletes the mutation).
  class Cut : public CommitQueue::Mutation {
   public:
    Cut(std::function<void()> at_cut) : at_cut_(std::move(at_cut)) {}
    bool StartsGroup() const override { return true; }
    absl::Status Prepare(WriteGroup& /*group*/) override {
      at_cut_();
      return absl::OkStatus();
    }
    void Complete(absl::Status status) override { EXPECT_TRUE(status.ok()) << status; }

   private:
    const std::function<void()> at_cut_;
  };
  RecordingEngine engine;
  ManualExecutor executor;
  CommitQueue queue(&engine, WriteOptions(), &executor);
  int after_prepared = 0;
  std::string seen;
  int after_seen = -1;
  auto write = [](std::string key, int* prepared) {
    return std::make_unique<FunctionMutation>(
        [key, prepared](WriteGroup& group) {
          if (prepared != nullptr) ++*prepared;
          group.Put(Column::kData, key, "v");
          return absl::OkStatus();
        },
        [](absl::Status status) { EXPECT_TRUE(status.ok()) << status; });
  };
  queue.Submit(write("before", nullptr));
  queue.Submit(std::make_unique<Cut>([&] {
    seen = Value(engine, "before");  // the engine itself, not the group
    after_seen = after_prepared;
  }));
  queue.Submit(write("after", &after_prepared));
  executor.RunAll();  // one committing task takes the three
  EXPECT_EQ(seen, "v");
  EXPECT_EQ(after_seen, 0);
  EXPECT_EQ(after_prepared, 1);
  ASSERT_EQ(engine.batches.size(), 2u);  // [before], [cut, after]
  EXPECT_EQ(engine.batches[0].ops().size(), 1u);
  EXPECT_EQ(engine.batches[1].ops().size(), 1u);
  EXPECT_EQ(Value(engine, "after"), "v");
}

TEST(CommitQueueTest, RunAllCommitsItsMutationsInOneGroupAndReportsTheFirstError) {
  RecordingEngine engine;
  ManualExecutor executor;
  CommitQueue queue(&engine, WriteOptions(), &executor);
  std::vector<int> written;
  Increment a("a", [&](absl::Status, int w) { written.push_back(w); });
  FunctionMutation bad([](WriteGroup&) { return absl::DataLossError("bad record"); },
                       [](absl::Status) {});
  Increment a_again("a", [&](absl::Status, int w) { written.push_back(w); });
  Increment b("b", [&](absl::Status, int w) { written.push_back(w); });
  CommitQueue::Mutation* all[] = {&a, &bad, &a_again, &b};
  const absl::Status status = queue.RunAll(all);  // commits on this thread: nobody else does
  EXPECT_TRUE(absl::IsDataLoss(status)) << status;
  EXPECT_EQ(written, (std::vector<int>{1, 2, 1}));
  EXPECT_EQ(Value(engine, "a"), "2");
  EXPECT_EQ(Value(engine, "b"), "1");
  EXPECT_EQ(engine.batches.size(), 1u);  // one engine write for all of them
  EXPECT_EQ(executor.pending(), 0u);
  EXPECT_TRUE(queue.RunAll({}).ok());
}

TEST(CommitQueueTest, WithoutExecutorSubmitCommitsOnTheCallingThread) {
  RecordingEngine engine;
  CommitQueue queue(&engine, WriteOptions(), nullptr);
  int written = 0;
  queue.Submit(std::make_unique<Increment>("n", [&](absl::Status, int w) { written = w; }));
  EXPECT_EQ(written, 1);
  EXPECT_EQ(Value(engine, "n"), "1");
}

TEST(CommitQueueTest, SubmitsUnderAHoldCommitTogetherWhenItEnds) {
  RecordingEngine engine;
  CommitQueue queue(&engine, WriteOptions(), nullptr);
  std::vector<int> written;
  {
    CommitQueue::Hold hold(&queue);
    for (const char* key : {"a", "b", "a"}) {
      queue.Submit(std::make_unique<Increment>(key, [&](absl::Status status, int w) {
        EXPECT_TRUE(status.ok()) << status;
        written.push_back(w);
      }));
    }
    EXPECT_TRUE(written.empty()) << "a held Submit committed at once";
    EXPECT_TRUE(engine.batches.empty());
  }
  EXPECT_EQ(written, (std::vector<int>{1, 1, 2}));
  EXPECT_EQ(engine.batches.size(), 1u);  // one group for the three
  EXPECT_EQ(Value(engine, "a"), "2");

  // Without a hold, each Submit on an idle queue commits alone.
  queue.Submit(std::make_unique<Increment>("a", [](absl::Status, int) {}));
  queue.Submit(std::make_unique<Increment>("b", [](absl::Status, int) {}));
  EXPECT_EQ(engine.batches.size(), 3u);
}

TEST(CommitQueueTest, UnderAHoldWithAnExecutorTheCommitIsScheduledWhenItEnds) {
  RecordingEngine engine;
  ManualExecutor executor;
  CommitQueue queue(&engine, WriteOptions(), &executor);
  int completed = 0;
  {
    CommitQueue::Hold hold(&queue);
    queue.Submit(std::make_unique<Increment>("n", [&](absl::Status, int) { ++completed; }));
    queue.Submit(std::make_unique<Increment>("n", [&](absl::Status, int) { ++completed; }));
    EXPECT_EQ(executor.pending(), 0u);
  }
  EXPECT_EQ(executor.pending(), 1u);
  executor.RunAll();
  EXPECT_EQ(completed, 2);
  EXPECT_EQ(engine.batches.size(), 1u);
}

TEST(CommitQueueTest, RunUnderAHoldCommitsTheHeldMutationsAtOnce) {
  RecordingEngine engine;
  CommitQueue queue(&engine, WriteOptions(), nullptr);
  int held_written = 0;
  CommitQueue::Hold hold(&queue);
  queue.Submit(std::make_unique<Increment>("n", [&](absl::Status, int w) { held_written = w; }));
  // The hold claimed the queue; Run must commit here rather than wait for the hold to end.
  int run_written = 0;
  Increment run("n", [&](absl::Status, int w) { run_written = w; });
  EXPECT_TRUE(queue.Run(run).ok());
  EXPECT_EQ(held_written, 1);
  EXPECT_EQ(run_written, 2);
  EXPECT_EQ(Value(engine, "n"), "2");
}

TEST(CommitQueueTest, AnotherThreadsRunTakesOverAHeldQueueAndVoidsTheHoldsClaim) {
  RecordingEngine engine;
  ManualExecutor executor;
  CommitQueue queue(&engine, WriteOptions(), &executor);
  int held_written = 0;
  {
    CommitQueue::Hold hold(&queue);
    queue.Submit(std::make_unique<Increment>("n", [&](absl::Status, int w) { held_written = w; }));
    std::thread other([&] {
      int written = 0;
      Increment run("n", [&](absl::Status, int w) { written = w; });
      EXPECT_TRUE(queue.Run(run).ok());  // commits the held mutation too, on this thread
      EXPECT_EQ(written, 2);
    });
    other.join();
    EXPECT_EQ(Value(engine, "n"), "2");
  }
  // The hold's end starts no second committer: only the held mutation's completion is pending.
  EXPECT_EQ(executor.pending(), 1u);
  executor.RunAll();
  EXPECT_EQ(held_written, 1);
  EXPECT_EQ(engine.batches.size(), 1u);
}

TEST(CommitQueueTest, AFailedPrepareChangesNothingAndOthersCommit) {
  RecordingEngine engine;
  ManualExecutor executor;
  CommitQueue queue(&engine, WriteOptions(), &executor);
  std::vector<absl::Status> statuses(3);
  queue.Submit(std::make_unique<Increment>("a", [&](absl::Status s, int) { statuses[0] = s; }));
  queue.Submit(std::make_unique<FunctionMutation>(
      [](WriteGroup&) { return absl::InvalidArgumentError("bad request"); },
      [&](absl::Status s) { statuses[1] = s; }));
  queue.Submit(std::make_unique<Increment>("b", [&](absl::Status s, int) { statuses[2] = s; }));
  executor.RunAll();
  EXPECT_TRUE(statuses[0].ok());
  EXPECT_TRUE(absl::IsInvalidArgument(statuses[1])) << statuses[1];
  EXPECT_TRUE(statuses[2].ok());
  EXPECT_EQ(Value(engine, "a"), "1");
  EXPECT_EQ(Value(engine, "b"), "1");
}

TEST(CommitQueueTest, AFailedWriteFailsTheWholeGroupAndChangesNothing) {
  RecordingEngine engine;
  ManualExecutor executor;
  CommitQueue queue(&engine, WriteOptions(), &executor);
  std::vector<absl::Status> statuses;
  for (const char* key : {"a", "b", "a"}) {
    queue.Submit(std::make_unique<Increment>(
        key, [&](absl::Status s, int) { statuses.push_back(std::move(s)); }));
  }
  engine.fail_writes = true;
  executor.RunAll();
  ASSERT_EQ(statuses.size(), 3u);
  for (const absl::Status& s : statuses) EXPECT_TRUE(absl::IsInternal(s)) << s;
  EXPECT_EQ(Value(engine, "a"), "<NOT_FOUND>");
  EXPECT_EQ(Value(engine, "b"), "<NOT_FOUND>");

  // The next group starts from what is stored, not from the failed group's changes.
  engine.fail_writes = false;
  int written = 0;
  queue.Submit(std::make_unique<Increment>("a", [&](absl::Status, int w) { written = w; }));
  executor.RunAll();
  EXPECT_EQ(written, 1);
}

TEST(CommitQueueTest, BatchesHoldTheLatestChangePerKeyInKeyOrderAfterAppendedChanges) {
  RecordingEngine engine;
  CommitQueue queue(&engine, WriteOptions(), nullptr);
  FunctionMutation mutation(
      [](WriteGroup& group) {
        group.Put(Column::kData, "c", "1");
        group.Put(Column::kData, "a", "1");
        group.batch()->Put(Column::kOutbox, "entry", "x");
        group.Delete(Column::kData, "c");
        group.Put(Column::kData, "b", "2");
        group.Put(Column::kIdempotency, "t", "3");
        EXPECT_TRUE(absl::IsNotFound(group.Get(Column::kData, "c").status()));
        EXPECT_EQ(group.Get(Column::kData, "a").value(), "1");
        EXPECT_TRUE(absl::IsNotFound(group.Get(Column::kOutbox, "entry").status()));
        return absl::OkStatus();
      },
      [](absl::Status) {});
  ASSERT_TRUE(queue.Run(mutation).ok());
  ASSERT_EQ(engine.batches.size(), 1u);
  std::vector<std::string> ops;
  for (const WriteBatch::Op& op : engine.batches[0].ops()) {
    ops.push_back(absl::StrCat(ColumnName(op.column), ":", op.key,
                               op.type == WriteBatch::OpType::kPut ? "=" + op.value : " deleted"));
  }
  EXPECT_EQ(ops, (std::vector<std::string>{"outbox:entry=x", "data:a=1", "data:b=2",
                                           "data:c deleted", "idempotency:t=3"}));
}

TEST(CommitQueueTest, GroupsAreCappedInSize) {
  RecordingEngine engine;
  ManualExecutor executor;
  CommitQueue queue(&engine, WriteOptions(), &executor);
  const size_t total = CommitQueue::kMaxGroupMutations + 10;
  size_t completed = 0;
  for (size_t i = 0; i < total; ++i) {
    queue.Submit(
        std::make_unique<Increment>(absl::StrCat("k", i), [&](absl::Status, int) { ++completed; }));
  }
  executor.RunAll();
  EXPECT_EQ(completed, total);
  ASSERT_EQ(engine.batches.size(), 2u);
  EXPECT_EQ(engine.batches[0].ops().size(), CommitQueue::kMaxGroupMutations);
}

TEST(CommitQueueTest, RunFromACompleteCallbackCommitsAtOnce) {
  for (bool with_executor : {false, true}) {
    SCOPED_TRACE(with_executor ? "with executor" : "without executor");
    RecordingEngine engine;
    ManualExecutor executor;
    CommitQueue queue(&engine, WriteOptions(), with_executor ? &executor : nullptr);
    int nested_written = 0;
    queue.Submit(std::make_unique<Increment>("n", [&](absl::Status, int) {
      Increment nested("n", [&](absl::Status, int w) { nested_written = w; });
      EXPECT_TRUE(queue.Run(nested).ok());
    }));
    executor.RunAll();
    EXPECT_EQ(nested_written, 2);
    EXPECT_EQ(Value(engine, "n"), "2");
  }
}

TEST(CommitQueueTest, RunTakesOverACommitStillWaitingInTheExecutor) {
  RecordingEngine engine;
  ManualExecutor executor;  // never run before Run(): as if this thread were its only worker
  CommitQueue queue(&engine, WriteOptions(), &executor);
  int first = 0;
  queue.Submit(std::make_unique<Increment>("n", [&](absl::Status, int w) { first = w; }));
  int second = 0;
  Increment mine("n", [&](absl::Status, int w) { second = w; });
  ASSERT_TRUE(queue.Run(mine).ok());
  EXPECT_EQ(second, 2);  // Run returns once its own mutation is written
  EXPECT_EQ(engine.batches.size(), 1u);
  // Left for the executor: the scheduled commit (nothing left to do) and the completion of the
  // submitted mutation.
  EXPECT_EQ(executor.RunAll(), 2u);
  EXPECT_EQ(first, 1);
  EXPECT_EQ(engine.batches.size(), 1u);
}

TEST(CommitQueueTest, CompletionsRunInSubmissionOrderAcrossGroups) {
  RecordingEngine engine;
  ManualExecutor executor;
  CommitQueue queue(&engine, WriteOptions(), &executor);
  std::vector<int> order;
  const size_t total = CommitQueue::kMaxGroupMutations * 2 + 3;
  for (size_t i = 0; i < total; ++i) {
    queue.Submit(std::make_unique<Increment>(
        absl::StrCat("k", i % 7), [&order, i](absl::Status, int) { order.push_back(int(i)); }));
  }
  executor.RunAll();
  ASSERT_EQ(order.size(), total);
  for (size_t i = 0; i < total; ++i) EXPECT_EQ(order[i], int(i));
  EXPECT_EQ(engine.batches.size(), 3u);
}

TEST(CommitQueueTest, ConcurrentSubmittersLoseNothing) {
  MemoryEngine engine;
  ThreadPoolExecutor executor(3);
  CommitQueue queue(&engine, WriteOptions(), &executor);
  constexpr int kThreads = 4;
  constexpr int kEach = 200;
  std::atomic<int> completed{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kEach; ++i) {
        if (i % 2 == 0) {
          queue.Submit(std::make_unique<Increment>("shared", [&](absl::Status s, int) {
            EXPECT_TRUE(s.ok()) << s;
            ++completed;
          }));
        } else {
          Increment sync(absl::StrCat("own", t), [&](absl::Status, int) { ++completed; });
          EXPECT_TRUE(queue.Run(sync).ok());
        }
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  executor.Shutdown();
  EXPECT_EQ(completed.load(), kThreads * kEach);
  EXPECT_EQ(Value(engine, "shared"), absl::StrCat(kThreads * kEach / 2));
  for (int t = 0; t < kThreads; ++t) {
    EXPECT_EQ(Value(engine, absl::StrCat("own", t)), absl::StrCat(kEach / 2));
  }
}

}  // namespace
}  // namespace kv
