// EngineOperationJournal: kvnode's OperationJournal (node/operations.h). Each operation is one
// key of the engine's meta column, "operation/" + its id, whose value is a StoredOperation
// (proto/replica.proto); Save overwrites it, Erase deletes it. Writes are not synced: like an
// acknowledged write, they survive a crash of the process through the write-ahead log.
//
// LoadAll reads every such key; a value that does not parse, or holds no valid id, is logged
// and deleted (an operation record is the node's report on a job, never data it needs to
// start). Not OK only for an I/O error or corruption the engine reports.
//
// Thread-safe; the engine must outlive the journal.
#ifndef KV_NODE_OPERATION_JOURNAL_H_
#define KV_NODE_OPERATION_JOURNAL_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "node/operations.h"
#include "storage/engine.h"

namespace kv {

class EngineOperationJournal : public OperationJournal {
 public:
  explicit EngineOperationJournal(Engine* engine) : engine_(engine) {}

  absl::StatusOr<std::vector<OperationInfo>> LoadAll() override;
  absl::Status Save(const OperationInfo& op) override;
  absl::Status Erase(absl::string_view id) override;

  // The meta column key of operation `id`.
  static std::string Key(absl::string_view id);
  // The StoredOperation bytes of `op`, and back (DATA_LOSS if they do not parse or name no
  // valid operation id).
  static std::string Encode(const OperationInfo& op);
  static absl::StatusOr<OperationInfo> Decode(absl::string_view bytes);

 private:
  Engine* const engine_;
};

}  // namespace kv

#endif  // KV_NODE_OPERATION_JOURNAL_H_
