// EngineOperationJournal: kvnode's OperationJournal (node/operations.h) and StartTokenJournal
// (node/start_tokens.h), in the engine's meta column. Each operation is one key, "operation/" +
// its id, whose value is a StoredOperation (proto/replica.proto); each start token one key,
// "start_token/" + the token, whose value is a StoredStartToken. Save overwrites a key, Erase
// deletes it. Writes are not synced: like an acknowledged write, they survive a crash of the
// process through the write-ahead log.
//
// LoadAll and LoadAllTokens read every such key; a value that does not parse, or holds no valid
// id, is logged and deleted (these records are the node's report on its jobs, never data it
// needs to start). Not OK only for an I/O error or corruption the engine reports.
//
// Thread-safe; the engine must outlive the journal.
#ifndef KV_NODE_OPERATION_JOURNAL_H_
#define KV_NODE_OPERATION_JOURNAL_H_

#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "node/operations.h"
#include "node/start_tokens.h"
#include "storage/engine.h"

namespace kv {

class EngineOperationJournal : public OperationJournal, public StartTokenJournal {
 public:
  explicit EngineOperationJournal(Engine* engine) : engine_(engine) {}

  absl::StatusOr<std::vector<OperationInfo>> LoadAll() override;
  absl::Status Save(const OperationInfo& op) override;
  absl::Status Erase(absl::string_view id) override;

  absl::StatusOr<std::vector<Record>> LoadAllTokens() override;
  absl::Status SaveToken(const Record& record) override;
  absl::Status EraseToken(absl::string_view token) override;

  // The meta column key of operation `id`.
  static std::string Key(absl::string_view id);
  // The StoredOperation bytes of `op`, and back (DATA_LOSS if they do not parse or name no
  // valid operation id).
  static std::string Encode(const OperationInfo& op);
  static absl::StatusOr<OperationInfo> Decode(absl::string_view bytes);

 private:
  // Calls `take` with every meta key under `prefix` and its value; the keys `take` refuses (a
  // status saying why) are logged as an unreadable `what` and deleted.
  absl::Status Scan(
      absl::string_view prefix, absl::string_view what,
      const std::function<absl::Status(absl::string_view key, absl::string_view value)>& take);

  Engine* const engine_;
};

}  // namespace kv

#endif  // KV_NODE_OPERATION_JOURNAL_H_
