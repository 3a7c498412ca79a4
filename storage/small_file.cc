#include "storage/small_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace kv {

absl::StatusOr<std::string> ReadSmallRegularFile(const std::string& path, size_t max_bytes) {
  // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer (it is refused below
  // as not a regular file); reading a regular file does not block either way.
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) return absl::InvalidArgumentError(strerror(errno));
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    close(fd);
    return absl::InvalidArgumentError("not a regular file");
  }
  if (static_cast<uint64_t>(st.st_size) > max_bytes) {
    close(fd);
    return absl::InvalidArgumentError(
        absl::StrCat(st.st_size, " bytes, more than the ", max_bytes, " allowed"));
  }
  std::string contents;
  char buf[8192];
  ssize_t n = 0;
  while (contents.size() <= max_bytes) {
    n = read(fd, buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    contents.append(buf, static_cast<size_t>(n));
  }
  const int read_errno = errno;
  close(fd);
  if (n < 0) return absl::InvalidArgumentError(strerror(read_errno));
  if (contents.size() > max_bytes) {
    return absl::InvalidArgumentError(absl::StrCat("more than the ", max_bytes, " bytes allowed"));
  }
  return contents;
}

}  // namespace kv
