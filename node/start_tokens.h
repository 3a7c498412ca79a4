// StartTokens: the answers of the admin calls that start a long operation (StartRepair,
// ChangeMembership with commit), remembered by the caller's idempotency token, so that a retry
// of a call whose answer was lost gets the first answer instead of starting the job a second time
// (PRODUCT.md technique 3).
//
// A token is remembered with a fingerprint of its request (the caller's choice: the request's
// bytes without the token) and the answer (a response's bytes). The same token and fingerprint
// again return the remembered answer, marked deduplicated, without starting anything; the same
// token with another fingerprint is INVALID_ARGUMENT ("idempotency token reused with different
// parameters": a token names one request). Only starts
// that succeeded are remembered: a refused start (say FAILED_PRECONDITION while another change
// runs) leaves the token free, so that a later retry may start the job.
//
// Scope: one node. With a journal (Load; kvnode: node/operation_journal.h, the meta column, like
// the operations themselves), tokens outlive a restart: each one is written before Run returns
// its first answer, and erased when it expires or is evicted. Without one, memory only. A token is
// kept for Options::retention after its start, and at most Options::max_tokens of them (the oldest
// go first); its answer may name an operation the registry no longer keeps (GetOperation then
// answers NOT_FOUND, as for any expired id). Another node does not know it; the client library
// therefore retries a start on the node it first asked unless that node is unreachable.
//
// Thread-safe. Run calls `start` without its lock: a call with a token whose start is under way
// on another thread waits for that start's answer (so one token starts at most one job), up to
// its `max_wait` (the time left to the caller's deadline, measured on the monotonic clock;
// ABORTED after it, which clients retry), and
// calls with other tokens go on meanwhile. `start` must not call Run with its own token. Token
// expiry reads time only through the injected Clock, which must be a wall clock (kvnode:
// SystemClock): a token's start time is stored and compared with a later run's clock.
#ifndef KV_NODE_START_TOKENS_H_
#define KV_NODE_START_TOKENS_H_

#include <cstddef>
#include <deque>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/functional/function_ref.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "node/clock.h"
#include "storage/steady_timer.h"

namespace kv {

// Where StartTokens keeps its tokens across restarts. Called with the StartTokens lock held.
class StartTokenJournal {
 public:
  struct Record {
    std::string token;
    std::string fingerprint;
    std::string response;
    absl::Time started;
  };
  virtual ~StartTokenJournal() = default;
  // Every stored token; records that do not parse are logged and deleted. Not OK if the store
  // cannot be read.
  virtual absl::StatusOr<std::vector<Record>> LoadAllTokens() = 0;
  virtual absl::Status SaveToken(const Record& record) = 0;
  virtual absl::Status EraseToken(absl::string_view token) = 0;
};

class StartTokens {
 public:
  struct Options {
    // More than a busy day of starts (a repair every 10 s is 8,640), so that frequent repair
    // starts do not push a membership change's token out before its retention: a few hundred
    // bytes each (a change's answer lists its moves).
    size_t max_tokens = 10000;
    absl::Duration retention = absl::Hours(24);
  };
  // Longer tokens are INVALID_ARGUMENT (the same bound as a write's token).
  static constexpr size_t kMaxTokenBytes = 128;

  struct Answer {
    std::string response;  // the bytes `start` returned, now or for the token's first call
    bool deduplicated = false;
  };

  // `clock` must outlive this.
  StartTokens(const Clock* clock, Options options);
  explicit StartTokens(const Clock* clock) : StartTokens(clock, Options()) {}

  // With an empty token: runs `start` and returns its answer, remembering nothing. Otherwise the
  // remembered answer of `token` if it has one (INVALID_ARGUMENT if it was remembered with
  // another fingerprint), else runs `start` and remembers its answer if it succeeded. An error of
  // `start` is returned as is. While another call's start of `token` is under way, waits for it
  // at most `max_wait`, then answers ABORTED (ask again: the first start's answer is remembered
  // once it succeeds), so that retries of a slow start do not hold threads without bound.
  absl::StatusOr<Answer> Run(absl::string_view token, absl::string_view fingerprint,
                             absl::FunctionRef<absl::StatusOr<std::string>()> start,
                             absl::Duration max_wait = absl::InfiniteDuration());

  // Reads the tokens `journal` keeps and writes every later one to it (a failed write is logged;
  // the token is then kept in memory only). Call once, before Run; `journal` must outlive this.
  // Not OK (and nothing loaded) if the journal cannot be read.
  absl::Status Load(StartTokenJournal* journal);

  // Tokens remembered now (after dropping the expired ones).
  size_t size();

 private:
  struct Entry {
    std::string fingerprint;
    std::string response;
    absl::Time started;
  };

  // Drops expired tokens and those past Options::max_tokens; their journal records go at the
  // next EraseDropped (Run: size() never writes).
  void Prune(absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void EraseDropped() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const Clock* const clock_;
  const Options options_;

  absl::Mutex mu_;
  StartTokenJournal* journal_ ABSL_GUARDED_BY(mu_) = nullptr;
  std::map<std::string, Entry, std::less<>> entries_ ABSL_GUARDED_BY(mu_);
  std::deque<std::string> order_ ABSL_GUARDED_BY(mu_);  // tokens, oldest start first
  // Tokens whose `start` runs now, with their fingerprints.
  std::map<std::string, std::string, std::less<>> running_ ABSL_GUARDED_BY(mu_);
  SteadyCondition start_ended_;                            // notified when a token leaves running_
  std::vector<std::string> dropped_ ABSL_GUARDED_BY(mu_);  // see Prune
};

}  // namespace kv

#endif  // KV_NODE_START_TOKENS_H_
