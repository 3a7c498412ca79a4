// ReadSmallRegularFile: the contents of a small file a program reads whole at start (kvnode's
// config file and TLS files, kvctl's and kvbench's TLS files, the client library's TLS files).
// In its own small library (kv_small_file, installed with the client library) so that the
// command-line tools and the client can use it without the storage engine.
#ifndef KV_STORAGE_SMALL_FILE_H_
#define KV_STORAGE_SMALL_FILE_H_

#include <cstddef>
#include <string>

#include "absl/status/statusor.h"

namespace kv {

// The contents of the regular file `path` if it holds at most `max_bytes`; otherwise
// INVALID_ARGUMENT whose message says why ("No such file or directory", "not a regular file",
// its size), for the caller to prefix with the setting and path it came from. Never waits for a
// writer (a FIFO is refused as not a regular file).
absl::StatusOr<std::string> ReadSmallRegularFile(const std::string& path, size_t max_bytes);

}  // namespace kv

#endif  // KV_STORAGE_SMALL_FILE_H_
