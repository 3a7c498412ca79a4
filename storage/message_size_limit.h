// gRPC's wording for a message over a size limit, shared by the client library and the node.
// gRPC reports it as RESOURCE_EXHAUSTED, the code an overloaded peer also answers; only the
// message tells them apart: "Received message larger than max" (the receiver's limit, also sent
// back by a node as the call's status) or "Sent message larger than max" (the sender's channel).
// Every attempt of the same call meets the same limit, unlike an overload.
#ifndef KV_STORAGE_MESSAGE_SIZE_LIMIT_H_
#define KV_STORAGE_MESSAGE_SIZE_LIMIT_H_

#include <string>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/string_view.h"

namespace kv {

// Whether a RESOURCE_EXHAUSTED status's message is gRPC's message-size verdict (above).
inline bool IsMessageSizeLimitMessage(absl::string_view message) {
  const std::string lower = absl::AsciiStrToLower(message);
  return absl::StrContains(lower, "received message larger than max") ||
         absl::StrContains(lower, "sent message larger than max");
}

}  // namespace kv

#endif  // KV_STORAGE_MESSAGE_SIZE_LIMIT_H_
