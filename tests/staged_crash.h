// Stages, in a stopped kvnode's data directory, what a machine crash without sync_writes leaves
// for the next start to find: the record of the previous run says it neither stopped cleanly nor
// synced its writes, under another boot id than this machine's. The next start then takes a new
// actor epoch and catches up (node/local_store.h, "Actor epochs" and "Catching up"). A separate
// file because the storage engine's WriteOptions and the client library's share a name.
#ifndef KV_TESTS_STAGED_CRASH_H_
#define KV_TESTS_STAGED_CRASH_H_

#include <string>

#include "absl/status/status.h"

namespace kv::testing {

absl::Status StageMachineCrash(const std::string& data_dir);

}  // namespace kv::testing

#endif  // KV_TESTS_STAGED_CRASH_H_
