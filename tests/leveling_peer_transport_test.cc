#include "node/leveling_peer_transport.h"

#include <map>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "storage/format_level.h"
#include "storage/record_codec.h"
#include "tests/stub_peer_transport.h"

namespace kv {
namespace {

class FixedLevels : public FormatLevels {
 public:
  uint32_t MemberFormatLevel(absl::string_view member_id) const override {
    auto it = levels.find(std::string(member_id));
    return it == levels.end() ? kFormatLevel : it->second;
  }
  uint32_t ClusterFormatLevel() const override { return kFormatLevel; }
  std::map<std::string, uint32_t> levels;
};

// Keeps what reaches it.
class CapturingTransport : public testing::StubPeerTransport {
 public:
  void MergeRecords(const Member& peer, std::vector<EncodedRecord> records,
                    std::function<void(absl::Status)> done) override {
    merged[peer.id] = std::move(records);
    done(absl::OkStatus());
  }
  std::map<std::string, std::vector<EncodedRecord>> merged;
};

std::string RecordWithReplacedWrite() {
  SiblingSet record;
  Sibling first;
  first.value = "a";
  first.idempotency_token = "t1";
  first.timestamp_micros = 1000;
  record.ApplyWrite("n1#1", CausalContext(), first);
  Sibling second = first;
  second.value = "b";
  second.idempotency_token = "t2";
  record.ApplyWrite("n1#1", record.ClientContext(), second);
  EXPECT_FALSE(record.replaced_writes().empty());
  return EncodeSiblingSet(record);
}

TEST(LevelingPeerTransportTest, OlderPeersGetRecordsTheyRead) {
  CapturingTransport inner;
  FixedLevels levels;
  levels.levels["old"] = kLegacyFormatLevel;
  LevelingPeerTransport transport(&inner, &levels);
  const std::string record = RecordWithReplacedWrite();
  const std::string legacy = EncodedRecordForLevel(record, kLegacyFormatLevel).value();
  ASSERT_NE(legacy, record);

  for (const std::string peer : {"old", "new"}) {
    absl::Status status = absl::UnknownError("not called");
    transport.MergeRecords(Member{peer, peer + ":1", ""},
                           {EncodedRecord{"k", record}, EncodedRecord{"bad", "garbage"}},
                           [&](absl::Status s) { status = s; });
    EXPECT_TRUE(status.ok()) << status;
  }
  ASSERT_EQ(inner.merged["old"].size(), 2u);
  EXPECT_EQ(inner.merged["old"][0].key, "k");
  EXPECT_EQ(inner.merged["old"][0].record, legacy);
  EXPECT_EQ(inner.merged["old"][1].record, "garbage");  // sent as it is; the peer rejects it
  ASSERT_EQ(inner.merged["new"].size(), 2u);
  EXPECT_EQ(inner.merged["new"][0].record, record);
}

}  // namespace
}  // namespace kv
