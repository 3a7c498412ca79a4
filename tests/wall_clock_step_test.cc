// The client library's attempts across a step of the wall clock. main() runs the tests again
// under libfaketime with FAKETIME_TIMESTAMP_FILE (read at every call), so that a test steps the
// process's wall clock (an NTP correction, a virtual machine resumed) while its monotonic clock
// runs on. The first test checks that a step is seen, so the others cannot pass for want of one.
//
// A call must end when its deadline says, not an hour later (a step back) nor at once (a step
// forward): one made right after a step (its gRPC deadline is read on the system clock, as gRPC
// reads it, not on abseil's clock, which follows a step only after a while), and an attempt that
// waited for a batch across the step (client/kv_client_coalescer.h: it keeps its deadline on the
// monotonic clock).
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/kv_client.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "kv.grpc.pb.h"
#include "storage/steady_timer.h"
#include "tests/test_util.h"

namespace kv {
namespace {

constexpr char kStepFile[] = "KV_WALL_CLOCK_STEP_FILE";
// The step file's name when the tests could not run under libfaketime.
constexpr char kNoStepFile[] = "none";

// Steps this process's wall clock to `offset` from the kernel's ("+0", "-1h", "+1h").
void SetWallClockOffset(const std::string& offset) {
  const std::string path = std::getenv(kStepFile);
  ASSERT_NE(path, kNoStepFile) << "not run under libfaketime: install Debian's faketime package "
                                  "(deploy/setup-deps.sh does)";
  testing::ReplaceFile(path, offset + "\n");  // read at every call: never seen half written
}

// A KV service that holds the calls it is told to hold until Release, and answers the others
// at once. Thread-safe.
class HoldingKv final : public v1::KV::CallbackService {
 public:
  ~HoldingKv() override { Release(); }
  // The next `count` calls (Put or PutBatch) are held.
  void HoldNext(int count) {
    absl::MutexLock lock(&mu_);
    to_hold_ = count;
  }
  // Answers every held call (OK).
  void Release() {
    std::vector<grpc::ServerUnaryReactor*> held;
    {
      absl::MutexLock lock(&mu_);
      held.swap(held_);
    }
    for (grpc::ServerUnaryReactor* reactor : held) reactor->Finish(grpc::Status::OK);
  }
  int calls() const {
    absl::MutexLock lock(&mu_);
    return calls_;
  }

  grpc::ServerUnaryReactor* Put(grpc::CallbackServerContext* context, const v1::PutRequest*,
                                v1::PutResponse* response) override {
    response->set_write_id("w");
    response->set_context("c");
    return Answer(context);
  }
  grpc::ServerUnaryReactor* PutBatch(grpc::CallbackServerContext* context,
                                     const v1::PutBatchRequest* request,
                                     v1::PutBatchResponse* response) override {
    for (int i = 0; i < request->puts_size(); ++i) {
      v1::PutBatchResult* result = response->add_results();
      result->mutable_response()->set_write_id("w");
      result->mutable_response()->set_context("c");
    }
    return Answer(context);
  }

 private:
  grpc::ServerUnaryReactor* Answer(grpc::CallbackServerContext* context) {
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    absl::MutexLock lock(&mu_);
    ++calls_;
    if (to_hold_ > 0) {
      --to_hold_;
      held_.push_back(reactor);
    } else {
      reactor->Finish(grpc::Status::OK);
    }
    return reactor;
  }

  mutable absl::Mutex mu_;
  int to_hold_ ABSL_GUARDED_BY(mu_) = 0;
  int calls_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<grpc::ServerUnaryReactor*> held_ ABSL_GUARDED_BY(mu_);
};

// A Put's outcome, filled on the client's thread.
struct Outcome {
  absl::Mutex mu;
  std::optional<absl::Status> status ABSL_GUARDED_BY(mu);
  absl::Time ended ABSL_GUARDED_BY(mu);  // SteadyNow()

  void Set(absl::Status s) {
    absl::MutexLock lock(&mu);
    status = std::move(s);
    ended = SteadyNow();
  }
  // Waits up to `timeout` (on the monotonic clock) for the outcome.
  bool Await(absl::Duration timeout) {
    const absl::Time until = SteadyNow() + timeout;
    while (SteadyNow() < until) {
      {
        absl::MutexLock lock(&mu);
        if (status.has_value()) return true;
      }
      absl::SleepFor(absl::Milliseconds(10));  // a relative sleep: nanosleep, not the wall clock
    }
    return false;
  }
};

class WallClockStepTest : public ::testing::Test {
 protected:
  void SetUp() override {
    SetWallClockOffset("+0");
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(&kv_);
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    ClientOptions options;
    options.endpoints = {absl::StrCat("127.0.0.1:", port)};
    options.call_deadline = kDeadline;
    options.retry.max_attempts = 1;  // the attempt's own outcome
    options.put_coalescing.max_in_flight = 1;
    options.put_coalescing.max_delay = absl::Milliseconds(300);
    absl::StatusOr<std::unique_ptr<Client>> client = Client::Create(options);
    ASSERT_TRUE(client.ok()) << client.status();
    client_ = *std::move(client);
    // Connected before the test's calls, so that none waits for the connection.
    absl::StatusOr<WriteResult> warm = client_->Put("warm", "v");
    ASSERT_TRUE(warm.ok()) << warm.status();
  }
  void TearDown() override {
    kv_.Release();
    client_.reset();
    if (server_ != nullptr) server_->Shutdown();
    SetWallClockOffset("+0");
  }
  // Waits (up to 10 s) until the server has seen `n` calls, the SetUp's one included.
  void AwaitCalls(int n) {
    const absl::Time until = SteadyNow() + absl::Seconds(10);
    while (kv_.calls() < n && SteadyNow() < until) absl::SleepFor(absl::Milliseconds(5));
    ASSERT_GE(kv_.calls(), n) << "the server did not see the calls in time";
  }
  void PutAsync(const std::string& key, Outcome* outcome) {
    client_->PutAsync(key, "v", WriteOptions{}, [outcome](absl::StatusOr<WriteResult> result) {
      outcome->Set(result.status());
    });
  }

  static constexpr absl::Duration kDeadline = absl::Seconds(2);
  HoldingKv kv_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<Client> client_;
};

// The premise: a step of this process's wall clock shows in absl::Now and not in SteadyNow.
TEST_F(WallClockStepTest, AStepMovesTheWallClockAndNotTheMonotonicOne) {
  const auto wall = std::chrono::system_clock::now();
  const absl::Time steady = SteadyNow();
  SetWallClockOffset("-1h");
  EXPECT_LT(absl::FromChrono(std::chrono::system_clock::now() - wall), absl::Minutes(-59))
      << "the wall clock did not step: is libfaketime (Debian's faketime package) installed?";
  EXPECT_LT(SteadyNow() - steady, absl::Minutes(1));
  EXPECT_GE(SteadyNow() - steady, absl::ZeroDuration());
}

// Two Puts wait for a batch behind a held one; the wall clock steps back an hour; the batch they
// leave in, held too, ends at their attempts' deadline, not an hour later.
TEST_F(WallClockStepTest, ABatchMadeAfterAStepBackEndsAtItsItemsDeadline) {
  kv_.HoldNext(2);  // the first Put, then the batch
  Outcome first, second, third;
  const absl::Time start = SteadyNow();
  PutAsync("first", &first);
  PutAsync("second", &second);  // wait: one call is in flight
  PutAsync("third", &third);
  ASSERT_NO_FATAL_FAILURE(AwaitCalls(2));  // the first one is held: the others wait
  SetWallClockOffset("-1h");
  ASSERT_TRUE(second.Await(kDeadline + absl::Seconds(8)))
      << "the waiting Put outlived its deadline by far: its batch's deadline followed the step";
  ASSERT_TRUE(third.Await(absl::Seconds(1)));
  ASSERT_TRUE(first.Await(absl::Seconds(1)));
  EXPECT_EQ(kv_.calls(), 3) << "the waiting Puts did not leave in one batch";
  absl::MutexLock lock(&second.mu);
  EXPECT_TRUE(absl::IsDeadlineExceeded(*second.status)) << *second.status;
  EXPECT_GE(second.ended - start, kDeadline - absl::Milliseconds(100));
  EXPECT_LT(second.ended - start, kDeadline + absl::Seconds(3));
}

// A Put waits behind a held one; the wall clock steps forward an hour; once the held one is
// answered the waiting one leaves (alone) and succeeds, rather than fail at once as past its
// deadline.
TEST_F(WallClockStepTest, AnAttemptThatWaitedAcrossAStepForwardStillHasItsTime) {
  kv_.HoldNext(1);
  Outcome first, second;
  PutAsync("first", &first);
  PutAsync("second", &second);
  ASSERT_NO_FATAL_FAILURE(AwaitCalls(2));  // the first one is held: the second waits
  SetWallClockOffset("+1h");
  kv_.Release();
  ASSERT_TRUE(first.Await(kDeadline + absl::Seconds(8)));
  ASSERT_TRUE(second.Await(kDeadline + absl::Seconds(8)));
  absl::MutexLock lock(&second.mu);
  EXPECT_TRUE(second.status->ok()) << *second.status;
}

// Steps the wall clock to `offset` while abseil's clock does not follow: reads abseil's clock as a
// process that is busy now and then does, so that abseil samples the kernel's clock rarely (it
// then extrapolates on the processor's cycle counter, and stays off by a step for up to about
// two seconds). Abseil may still sample right after the step: tries again a few times (from no
// step). Returns whether abseil's clock was left off by the step; the tests go on either way,
// without the case they are meant for if not.
bool StepWithAbseilBehind(const std::string& offset, absl::Duration step) {
  for (int attempt = 0; attempt < 4; ++attempt) {
    SetWallClockOffset("+0");
    for (int i = 0; i < 5; ++i) {
      absl::Now();
      absl::SleepFor(absl::Milliseconds(300));
    }
    SetWallClockOffset(offset);
    const absl::Duration abseil_off =
        absl::Now() - absl::FromChrono(std::chrono::system_clock::now());
    if (absl::AbsDuration(abseil_off + step) < absl::Minutes(1)) return true;
  }
  std::fprintf(stderr,
               "abseil's clock followed the step at once, four times: this run checks "
               "a step, but not one abseil's clock missed\n");
  return false;
}

// The helpers that turn deadlines between gRPC's form and durations read the clock gRPC reads.
TEST_F(WallClockStepTest, DeadlineHelpersReadTheClockGrpcReads) {
  StepWithAbseilBehind("-1h", -absl::Hours(1));
  const absl::Duration left = TimeUntil(WallDeadlineAfter(absl::Seconds(2)));
  EXPECT_GT(left, absl::Seconds(1));
  EXPECT_LE(left, absl::Seconds(2));
  const absl::Duration given =
      TimeUntil(std::chrono::system_clock::now() + std::chrono::seconds(2));
  EXPECT_GT(given, absl::Seconds(1));
  EXPECT_LE(given, absl::Seconds(2));
  EXPECT_EQ(TimeUntil(std::chrono::system_clock::time_point::max()), absl::InfiniteDuration());
  EXPECT_EQ(WallDeadlineAfter(absl::InfiniteDuration()),
            std::chrono::system_clock::time_point::max());
}

// A call made right after a step forward gets its whole deadline: gRPC reads the system clock to
// turn the deadline into its own, and so does the library, not abseil's clock, which has not
// followed the step yet (the deadline would be an hour in the past).
TEST_F(WallClockStepTest, ACallMadeRightAfterAStepForwardHasItsWholeDeadline) {
  StepWithAbseilBehind("+1h", absl::Hours(1));
  absl::StatusOr<WriteResult> put = client_->Put("ahead", "v");
  EXPECT_TRUE(put.ok()) << put.status();
}

// The same after a step back: the call ends at its deadline, not an hour later.
TEST_F(WallClockStepTest, ACallMadeRightAfterAStepBackEndsAtItsDeadline) {
  StepWithAbseilBehind("-1h", -absl::Hours(1));
  kv_.HoldNext(1);
  Outcome held;
  const absl::Time start = SteadyNow();
  PutAsync("held", &held);
  ASSERT_TRUE(held.Await(kDeadline + absl::Seconds(8))) << "the call outlived its deadline by far";
  absl::MutexLock lock(&held.mu);
  EXPECT_TRUE(absl::IsDeadlineExceeded(*held.status)) << *held.status;
  EXPECT_GE(held.ended - start, kDeadline - absl::Milliseconds(100));
}

}  // namespace
}  // namespace kv

int main(int argc, char** argv) {
  if (std::getenv(kv::kStepFile) == nullptr) {
    const std::string libfaketime = kv::testing::LibfaketimePath();
    // Without it the tests run as they are (listing them must work) and the first one fails.
    char dir_template[] = "/tmp/kv-wall-clock-step-XXXXXX";
    if (libfaketime.empty() || mkdtemp(dir_template) == nullptr) {
      setenv(kv::kStepFile, kv::kNoStepFile, 1);
      testing::InitGoogleTest(&argc, argv);
      return RUN_ALL_TESTS();
    }
    const std::string file = std::string(dir_template) + "/offset";
    kv::testing::WriteFile(file, "+0\n");
    for (const auto& [name, value] : kv::testing::FaketimeEnv(libfaketime)) {
      setenv(name.c_str(), value.c_str(), 1);
    }
    setenv("FAKETIME_TIMESTAMP_FILE", file.c_str(), 1);
    setenv("FAKETIME_NO_CACHE", "1", 1);
    setenv(kv::kStepFile, file.c_str(), 1);
    execv("/proc/self/exe", argv);
    std::perror("execv /proc/self/exe");
    return 1;
  }
  testing::InitGoogleTest(&argc, argv);
  const int result = RUN_ALL_TESTS();
  // The directory main made before running the tests again.
  const std::string file = std::getenv(kv::kStepFile);
  if (file.rfind("/tmp/kv-wall-clock-step-", 0) == 0) {
    std::remove(file.c_str());
    rmdir(file.substr(0, file.rfind('/')).c_str());
  }
  return result;
}
