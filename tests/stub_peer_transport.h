// StubPeerTransport: a PeerTransport for unit tests whose every call answers UNIMPLEMENTED, named
// after the call. Test transports derive from it and override only the calls their component
// makes. (PeerTransport's anti-entropy and handoff calls already answer UNIMPLEMENTED.)
#ifndef KV_TESTS_STUB_PEER_TRANSPORT_H_
#define KV_TESTS_STUB_PEER_TRANSPORT_H_

#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "node/peer_transport.h"

namespace kv::testing {

class StubPeerTransport : public PeerTransport {
 public:
  void MergeRecords(const Member&, std::vector<EncodedRecord>,
                    std::function<void(absl::Status)> done) override {
    done(absl::UnimplementedError("MergeRecords"));
  }
  void ReadRecord(const Member&, std::string,
                  std::function<void(absl::StatusOr<std::string>)> done) override {
    done(absl::UnimplementedError("ReadRecord"));
  }
  void ListKeys(const Member&, std::string, std::string, uint32_t,
                std::function<void(absl::StatusOr<ListPage>)> done) override {
    done(absl::UnimplementedError("ListKeys"));
  }
  void ForwardWrite(const Member&, WriteCommand, QuorumSpec,
                    std::function<void(absl::StatusOr<WriteReply>)> done) override {
    done(absl::UnimplementedError("ForwardWrite"));
  }
};

}  // namespace kv::testing

#endif  // KV_TESTS_STUB_PEER_TRANSPORT_H_
