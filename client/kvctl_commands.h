// The commands of kvctl. Each takes its already-validated positional arguments and flags, calls
// the store through a kv::Client, and returns both renderings of its result: a JSON object (for
// --json) and human-readable text. Errors come back as a status: NOT_FOUND, INVALID_ARGUMENT
// (local mistakes are marked with UsageError), or whatever the store or network returned.
#ifndef KV_CLIENT_KVCTL_COMMANDS_H_
#define KV_CLIENT_KVCTL_COMMANDS_H_

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "client/cli_flags.h"
#include "client/kv_client.h"

namespace kv::kvctl {

struct CommandOutput {
  nlohmann::json json = nlohmann::json::object();
  std::string text;    // stdout in text mode
  std::string notice;  // stderr in text mode: hints that are not part of the result
  // Not OK when the command did its work but fell short afterwards (put --wait timed out): the
  // output is printed all the same, with this error, and it decides the exit code.
  absl::Status status;
};

// What every command gets: its positional arguments (the command name removed) and all flags.
struct CommandInput {
  std::vector<std::string> args;
  const cli::ParsedArgs* flags = nullptr;
};

// Describes a command for dispatch and argument checking.
struct CommandSpec {
  std::string name;
  size_t min_args = 0;
  size_t max_args = 0;
  std::vector<cli::FlagSpec> flags;  // command-specific flags it accepts
  std::string synopsis;              // "put KEY [VALUE|-] [--file=F] ..."
  absl::StatusOr<CommandOutput> (*run)(Client& client, const CommandInput& input) = nullptr;
};

// Every command that talks to the store (help is handled by kvctl.cc itself). Commands in other
// files: describe-write (kvctl_replication.h), cluster (kvctl_cluster.h), repair and operation
// (kvctl_admin.h).
const std::vector<CommandSpec>& Commands();

absl::StatusOr<CommandOutput> RunPut(Client& client, const CommandInput& input);
absl::StatusOr<CommandOutput> RunGet(Client& client, const CommandInput& input);
absl::StatusOr<CommandOutput> RunDelete(Client& client, const CommandInput& input);
absl::StatusOr<CommandOutput> RunList(Client& client, const CommandInput& input);
absl::StatusOr<CommandOutput> RunDescribeKey(Client& client, const CommandInput& input);

// The value for `put`: --file, the VALUE argument, or stdin (VALUE is "-", or absent while stdin
// is not a terminal). A usage error when none or two of them are given, or the file is
// unreadable.
absl::StatusOr<std::string> ReadPutValue(const CommandInput& input);

// Finds which standard descriptors (0, 1, 2) the process started with closed, holds those still
// free open on /dev/null (so that no file opened later takes their numbers), and remembers that
// stdin was closed: a put that would read it is then a usage error, not a read of whatever file
// took descriptor 0 (gRPC opens one before main). Call first thing in main.
void GuardStandardDescriptors();

// --token=TOKEN of put, delete, repair and cluster join/leave --commit: the idempotency token,
// or a new one (NewIdempotencyToken) when the flag is absent, so that kvctl knows the token of
// every mutation it sends and can print it; a usage error when given empty.
absl::StatusOr<std::string> TokenFlag(const cli::ParsedArgs& flags);

// The output of a mutation (`what`: "put", "delete", "repair", ...) sent with `token` that failed
// with `status`. When the error leaves it unknown whether the mutation took effect, or says it
// may succeed later (UNAVAILABLE, DEADLINE_EXCEEDED, ABORTED, RESOURCE_EXHAUSTED, CANCELLED,
// UNKNOWN, INTERNAL, DATA_LOSS), the status's message ends with the command to retry it under
// the same token, and the JSON carries "idempotency_token"; other errors are returned as they
// are (the request was refused and changed nothing).
CommandOutput FailedMutation(const absl::Status& status, absl::string_view what,
                             absl::string_view token);

}  // namespace kv::kvctl

#endif  // KV_CLIENT_KVCTL_COMMANDS_H_
