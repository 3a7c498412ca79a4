#include "node/leveling_peer_transport.h"

#include <utility>

#include "storage/format_level.h"

namespace kv {
namespace {

// `record` as a reader of `level` accepts it; unchanged if it cannot be decoded.
void Downgrade(std::string& record, uint32_t level) {
  absl::StatusOr<std::string> downgraded = EncodedRecordForLevel(record, level);
  if (downgraded.ok()) record = *std::move(downgraded);
}

}  // namespace

void LevelingPeerTransport::MergeRecords(const Member& peer, std::vector<EncodedRecord> records,
                                         std::function<void(absl::Status)> done) {
  const uint32_t level = levels_->MemberFormatLevel(peer.id);
  if (level < kReplacedWritesLevel) {
    for (EncodedRecord& r : records) Downgrade(r.record, level);
  }
  inner()->MergeRecords(peer, std::move(records), std::move(done));
}

}  // namespace kv
