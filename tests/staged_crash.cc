#include "tests/staged_crash.h"

#include <memory>

#include "absl/status/statusor.h"
#include "storage/rocksdb_engine.h"

namespace kv::testing {

absl::Status StageMachineCrash(const std::string& data_dir) {
  absl::StatusOr<std::unique_ptr<RocksDbEngine>> engine =
      RocksDbEngine::Open(data_dir, RocksDbOptions());
  if (!engine.ok()) return engine.status();
  WriteBatch batch;
  // The format of LocalStore's run record (storage/FORMAT.md, meta column).
  batch.Put(Column::kMeta, "run_state", "v1;synced=0;clean=0;boot=the-boot-before-the-crash");
  return (*engine)->Write(batch, WriteOptions{/*sync=*/true});
}

}  // namespace kv::testing
