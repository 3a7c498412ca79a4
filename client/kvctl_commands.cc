#include "client/kvctl_commands.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <limits>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "client/kvctl_admin.h"
#include "client/kvctl_cluster.h"
#include "client/kvctl_format.h"
#include "client/kvctl_replication.h"

namespace kv::kvctl {
namespace {

// More than any request may carry (ClientOptions::max_request_bytes): reading stops there, so an
// endless input (--file=/dev/zero, a runaway pipe) fails at once instead of filling memory.
constexpr size_t kMaxValueInput = size_t{64} << 20;

// Reads `in` to its end, or fails once it passes kMaxValueInput. `what` names it in errors.
absl::StatusOr<std::string> ReadBounded(std::FILE* in, const std::string& what) {
  std::string data;
  char buffer[1 << 16];
  while (true) {
    const size_t n = std::fread(buffer, 1, sizeof(buffer), in);
    data.append(buffer, n);
    if (data.size() > kMaxValueInput) {
      return UsageError(absl::StrCat(what, " holds more than ", kMaxValueInput >> 20,
                                     " MiB, more than a request may carry (a node's "
                                     "max_value_bytes is 1 MiB by default)"));
    }
    if (n < sizeof(buffer)) break;
  }
  if (std::ferror(in)) {
    // A local input mistake (stdin is a directory, say), like an unreadable --file.
    return UsageError(absl::StrCat("cannot read ", what, ": ", std::strerror(errno)));
  }
  return data;
}

bool stdin_closed = false;  // set once, by GuardStandardDescriptors, before any thread starts

absl::StatusOr<std::string> ReadStdin() {
  if (stdin_closed) {
    return UsageError(
        "put would read the value from stdin, which is closed; give VALUE or --file=F");
  }
  return ReadBounded(stdin, "stdin");
}

absl::StatusOr<std::string> ReadWholeFile(const std::string& path) {
  std::error_code error;
  if (std::filesystem::is_directory(path, error)) {
    return UsageError(absl::StrCat("cannot read --file ", path, ": it is a directory"));
  }
  std::FILE* in = std::fopen(path.c_str(), "rb");
  if (in == nullptr) {
    return UsageError(absl::StrCat("cannot read --file ", path, ": ", std::strerror(errno)));
  }
  absl::StatusOr<std::string> data = ReadBounded(in, absl::StrCat("--file ", path));
  std::fclose(in);
  return data;
}

// --w / --r: a replica count (1..N), "quorum" (a majority) or "all"; absent = server default.
absl::StatusOr<Quorum> QuorumFrom(const cli::ParsedArgs& flags, absl::string_view name) {
  std::optional<std::string> text = flags.Get(name);
  if (!text.has_value()) return Quorum::Default();
  if (*text == "quorum") return Quorum::Majority();
  if (*text == "all") return Quorum::All();
  uint32_t count = 0;
  if (!absl::SimpleAtoi(*text, &count) || count == 0) {
    return UsageError(absl::StrCat("--", name, " takes a replica count (1..N), 'quorum' or 'all'",
                                   ", not \"", *text, "\""));
  }
  return Quorum::Count(count);
}

// Context, idempotency token and W of put/delete.
absl::StatusOr<WriteOptions> WriteOptionsFrom(const cli::ParsedArgs& flags) {
  WriteOptions options;
  absl::StatusOr<Quorum> w = QuorumFrom(flags, "w");
  if (!w.ok()) return w.status();
  options.w = *w;
  if (std::optional<std::string> context = flags.Get("context"); context.has_value()) {
    // No context kvctl prints is empty: an empty one is a script's unset variable, and a write
    // without context would add a sibling instead of replacing what the script read.
    if (absl::StripAsciiWhitespace(*context).empty()) {
      return UsageError(
          "--context is empty; pass the context printed by kvctl get/put/delete, or leave the "
          "flag out for a write that replaces nothing (a sibling of what the key holds)");
    }
    absl::StatusOr<std::string> decoded = DecodeContext(*context);
    if (!decoded.ok()) return decoded.status();
    options.context = *std::move(decoded);
  }
  absl::StatusOr<std::string> token = TokenFlag(flags);
  if (!token.ok()) return token.status();
  options.idempotency_token = *std::move(token);
  return options;
}

void AddWriteResult(const WriteResult& result, absl::string_view token, CommandOutput& out) {
  out.json["write_id"] = result.write_id;
  out.json["idempotency_token"] = std::string(token);
  out.json["context"] = EncodeContext(result.context);
  out.json["deduplicated"] = result.deduplicated;
  absl::StrAppend(&out.text, "write_id: ", result.write_id, "\n");
  absl::StrAppend(&out.text, "context: ", EncodeContext(result.context), "\n");
  if (result.deduplicated) {
    absl::StrAppend(&out.text,
                    "deduplicated: the store had already applied this idempotency token; no new "
                    "version was created\n");
  }
}

std::string SiblingSummary(size_t count) {
  return absl::StrCat(count, " siblings (concurrent writes); pass --context to put to resolve");
}

}  // namespace

const std::vector<CommandSpec>& Commands() {
  static const auto* commands = new std::vector<CommandSpec>{
      {"put",
       1,
       2,
       {{"file"}, {"context"}, {"token"}, {"w"}, {"wait", false}, {"wait-timeout"}},
       "put KEY [VALUE|-] [--file=F] [--context=BASE64] [--token=TOKEN] [--w=W] [--wait "
       "[--wait-timeout=D]]",
       &RunPut},
      {"get", 1, 1, {{"r"}}, "get KEY [--r=R]", &RunGet},
      {"delete",
       1,
       1,
       {{"context"}, {"token"}, {"w"}, {"wait", false}, {"wait-timeout"}},
       "delete KEY [--context=BASE64] [--token=TOKEN] [--w=W] [--wait [--wait-timeout=D]]",
       &RunDelete},
      {"list",
       0,
       1,
       {{"limit"}, {"page-token"}, {"all", false}},
       "list [PREFIX] [--limit=N] [--page-token=T] [--all]",
       &RunList},
      {"describe-key", 1, 1, {}, "describe-key KEY", &RunDescribeKey},
      {"describe-write", 1, 1, {}, "describe-write WRITE_ID", &RunDescribeWrite},
      {"cluster",
       1,
       2,
       {{"ranges", false},
        {"commit", false},
        {"layout-version"},
        {"token"},
        {"wait", false},
        {"wait-timeout"}},
       "cluster status | cluster anti-entropy [--ranges] | cluster join|leave|remove NODE_ID "
       "[--commit [--layout-version=V] [--token=TOKEN] [--wait [--wait-timeout=D]]]",
       &RunCluster},
      {"repair",
       0,
       0,
       {{"peer"}, {"wait", false}, {"wait-timeout"}, {"token"}},
       "repair [--peer=ID] [--token=TOKEN] [--wait [--wait-timeout=D]]",
       &RunRepair},
      {"operation",
       1,
       2,
       {{"wait-timeout"}},
       "operation get ID | operation wait ID [--wait-timeout=D] | operation cancel ID | "
       "operation list",
       &RunOperation},
  };
  return *commands;
}

absl::StatusOr<std::string> TokenFlag(const cli::ParsedArgs& flags) {
  std::optional<std::string> token = flags.Get("token");
  if (!token.has_value()) return NewIdempotencyToken();
  if (token->empty()) return UsageError("--token must not be empty");
  return *std::move(token);
}

CommandOutput FailedMutation(const absl::Status& status, absl::string_view what,
                             absl::string_view token) {
  CommandOutput out;
  out.status = status;
  // Retryable (the library's own set), or an outcome the error leaves unknown.
  const bool may_have_applied = IsRetryableCode(status.code()) || absl::IsCancelled(status) ||
                                absl::IsUnknown(status) || absl::IsInternal(status) ||
                                absl::IsDataLoss(status);
  if (may_have_applied) {
    out.json["idempotency_token"] = std::string(token);
    out.status = absl::Status(
        status.code(),
        absl::StrCat(status.message(), " (the ", what, " may have taken effect or may succeed ",
                     "later: to retry it, repeat the command with --token=", token,
                     ", its idempotency token, so that it cannot take effect twice)"));
  }
  return out;
}

void GuardStandardDescriptors() {
  for (int fd = 0; fd <= 2; ++fd) {
    const int flags = fcntl(fd, F_GETFD);
    // A descriptor inherited through exec has FD_CLOEXEC clear: one that has it set was opened
    // by this process before main (gRPC's static initialization takes the lowest free number),
    // so the process started with this one closed.
    const bool closed_at_start =
        (flags == -1 && errno == EBADF) || (flags != -1 && (flags & FD_CLOEXEC));
    if (!closed_at_start) continue;
    if (fd == 0) stdin_closed = true;
    if (flags == -1) {
      // open() takes the lowest free number: this one, since those below it are open by now.
      const int held = open("/dev/null", fd == 0 ? O_RDONLY : O_WRONLY);
      if (held != fd && held >= 0) close(held);
    }
  }
}

absl::StatusOr<std::string> ReadPutValue(const CommandInput& input) {
  const std::optional<std::string> file = input.flags->Get("file");
  const bool has_value_arg = input.args.size() >= 2;
  if (file.has_value()) {
    if (has_value_arg) {
      return UsageError("put takes either a VALUE argument or --file, not both");
    }
    return ReadWholeFile(*file);
  }
  if (has_value_arg && input.args[1] != "-") return input.args[1];
  if (!has_value_arg && isatty(STDIN_FILENO)) {
    return UsageError(
        "put needs a value: give VALUE, --file=F, or pipe it to stdin (VALUE '-' reads stdin)");
  }
  return ReadStdin();
}

absl::StatusOr<CommandOutput> RunPut(Client& client, const CommandInput& input) {
  const std::string& key = input.args[0];
  absl::StatusOr<std::string> value = ReadPutValue(input);
  if (!value.ok()) return value.status();
  absl::StatusOr<WriteOptions> options = WriteOptionsFrom(*input.flags);
  if (!options.ok()) return options.status();
  absl::StatusOr<std::optional<absl::Duration>> wait = WaitTimeoutFrom(*input.flags);
  if (!wait.ok()) return wait.status();
  absl::StatusOr<WriteResult> result = client.Put(key, *value, *options);
  if (!result.ok()) return FailedMutation(result.status(), "put", options->idempotency_token);

  CommandOutput out;
  SetBytesField(out.json, "key", key);
  out.json["value_bytes"] = value->size();
  out.text = absl::StrCat("stored ", value->size(), value->size() == 1 ? " byte" : " bytes",
                          " under ", DisplayKey(key), "\n");
  AddWriteResult(*result, options->idempotency_token, out);
  if (wait->has_value()) WaitAndReport(client, result->write_id, **wait, out);
  return out;
}

absl::StatusOr<CommandOutput> RunGet(Client& client, const CommandInput& input) {
  const std::string& key = input.args[0];
  absl::StatusOr<Quorum> r = QuorumFrom(*input.flags, "r");
  if (!r.ok()) return r.status();
  ReadOptions options;
  options.r = *r;
  absl::StatusOr<GetResult> result = client.Get(key, options);
  if (!result.ok()) return result.status();

  CommandOutput out;
  const size_t count = result->siblings.size();
  SetBytesField(out.json, "key", key);
  out.json["siblings"] = nlohmann::json::array();
  for (const Version& version : result->siblings) {
    out.json["siblings"].push_back(VersionToJson(version));
  }
  out.json["sibling_count"] = count;
  out.json["context"] = EncodeContext(result->context);
  if (count == 1) {
    const Version& only = result->siblings[0];
    absl::StrAppend(&out.text, IsValidUtf8(only.value) ? "value: " : "value (base64): ",
                    DisplayBytes(only.value), "\n");
  } else {
    out.json["note"] = SiblingSummary(count);
    absl::StrAppend(&out.text, SiblingSummary(count), "\n");
    for (size_t i = 0; i < count; ++i) {
      const Version& version = result->siblings[i];
      absl::StrAppend(&out.text, "sibling ", i + 1, " (dot ", version.dot, ", written ",
                      FormatTimestamp(version.timestamp_micros), "): ", DisplayBytes(version.value),
                      "\n");
    }
  }
  absl::StrAppend(&out.text, "context: ", EncodeContext(result->context), "\n");
  return out;
}

absl::StatusOr<CommandOutput> RunDelete(Client& client, const CommandInput& input) {
  const std::string& key = input.args[0];
  absl::StatusOr<WriteOptions> options = WriteOptionsFrom(*input.flags);
  if (!options.ok()) return options.status();
  absl::StatusOr<std::optional<absl::Duration>> wait = WaitTimeoutFrom(*input.flags);
  if (!wait.ok()) return wait.status();
  absl::StatusOr<WriteResult> result = client.Delete(key, *options);
  if (!result.ok()) return FailedMutation(result.status(), "delete", options->idempotency_token);

  CommandOutput out;
  SetBytesField(out.json, "key", key);
  out.json["deleted"] = true;
  out.text = absl::StrCat("deleted ", DisplayKey(key), "\n");
  AddWriteResult(*result, options->idempotency_token, out);
  if (wait->has_value()) WaitAndReport(client, result->write_id, **wait, out);
  return out;
}

absl::StatusOr<CommandOutput> RunList(Client& client, const CommandInput& input) {
  const std::string prefix = input.args.empty() ? "" : input.args[0];
  uint32_t limit = 0;
  if (std::optional<std::string> text = input.flags->Get("limit"); text.has_value()) {
    absl::StatusOr<int64_t> parsed =
        cli::ParseIntFlag("limit", *text, 1, std::numeric_limits<uint32_t>::max());
    if (!parsed.ok()) return UsageError(parsed.status().message());
    limit = static_cast<uint32_t>(*parsed);
  }
  std::string page_token = input.flags->Get("page-token").value_or("");
  const bool all_pages = input.flags->GetBool("all", false);

  CommandOutput out;
  SetBytesField(out.json, "prefix", prefix);
  out.json["keys"] = nlohmann::json::array();
  size_t pages = 0;
  while (true) {
    absl::StatusOr<ListResult> page = client.List(prefix, page_token, limit);
    if (!page.ok()) return page.status();
    ++pages;
    for (const std::string& key : page->keys) {
      nlohmann::json entry = nlohmann::json::object();
      SetBytesField(entry, "key", key);
      out.json["keys"].push_back(std::move(entry));
      absl::StrAppend(&out.text, DisplayKey(key), "\n");
    }
    if (page->next_page_token.empty() || !all_pages) {
      page_token = page->next_page_token;
      break;
    }
    if (page->next_page_token == page_token) {
      return absl::InternalError(absl::StrCat("the store returned the same page token twice ('",
                                              page_token,
                                              "'); stopping instead of looping forever"));
    }
    page_token = page->next_page_token;
  }
  out.json["count"] = out.json["keys"].size();
  out.json["pages"] = pages;
  out.json["next_page_token"] = page_token;
  if (!page_token.empty()) {
    out.notice = absl::StrCat("more keys: pass --page-token=", page_token,
                              " for the next page, or --all for every page\n");
  }
  return out;
}

absl::StatusOr<CommandOutput> RunDescribeKey(Client& client, const CommandInput& input) {
  const std::string& key = input.args[0];
  absl::StatusOr<DescribeKeyResult> result = client.DescribeKey(key);
  if (!result.ok()) return result.status();

  CommandOutput out;
  SetBytesField(out.json, "key", key);
  out.json["converged"] = result->converged;
  out.json["replicas"] = nlohmann::json::array();
  std::vector<std::string> unreachable;
  for (const ReplicaView& replica : result->replicas) {
    if (!replica.reachable) unreachable.push_back(replica.node_id);
  }
  absl::StrAppend(&out.text, "key: ", DisplayKey(key), "\n", "converged: ");
  if (result->converged) {
    absl::StrAppend(&out.text, "yes (every replica holds the same versions)\n");
  } else if (!unreachable.empty()) {
    absl::StrAppend(&out.text, "NO (replica(s) ", absl::StrJoin(unreachable, ", "),
                    " could not be asked, so their versions are unknown)\n");
  } else {
    absl::StrAppend(&out.text,
                    "NO (replicas hold different versions; replication is still in progress or a "
                    "replica is behind)\n");
  }
  for (const ReplicaView& replica : result->replicas) {
    nlohmann::json json = {{"node_id", replica.node_id},
                           {"reachable", replica.reachable},
                           {"has_record", replica.has_record},
                           {"context", replica.context},
                           {"versions", nlohmann::json::array()}};
    if (!replica.error.empty()) json["error"] = replica.error;
    absl::StrAppend(&out.text, "replica ", replica.node_id, ": ");
    if (!replica.reachable) {
      absl::StrAppend(&out.text, "unreachable (", replica.error, ")\n");
    } else if (!replica.has_record) {
      absl::StrAppend(&out.text, "no record of this key\n");
    } else {
      absl::StrAppend(&out.text, replica.versions.size(), " version(s), context ", replica.context,
                      "\n");
    }
    for (const Version& version : replica.versions) {
      json["versions"].push_back(VersionToJson(version));
      absl::StrAppend(&out.text, "  ", version.dot, "  ", FormatTimestamp(version.timestamp_micros),
                      "  ",
                      version.tombstone ? "tombstone (deleted)"
                                        : absl::StrCat("value: ", DisplayBytes(version.value)),
                      "\n");
    }
    out.json["replicas"].push_back(std::move(json));
  }
  return out;
}

}  // namespace kv::kvctl
