// Internal to kv_client: conversions between the kv.v1 protos and the library's structs.
#ifndef KV_CLIENT_KV_CLIENT_CONVERT_H_
#define KV_CLIENT_KV_CLIENT_CONVERT_H_

#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "client/kv_client.h"
#include "kv.pb.h"

namespace kv::client_internal {

// True if `bytes` is well-formed UTF-8 (RFC 3629: no overlong forms, no surrogates, nothing
// above U+10FFFF).
bool IsValidUtf8(absl::string_view bytes);
// INVALID_ARGUMENT naming the field if a set string field of `request` (not a bytes field) is not
// valid UTF-8: protobuf would refuse to parse it on the node, which would answer a call it could
// not read with a bare error.
absl::Status CheckStringFields(const google::protobuf::Message& request);

void ToProto(const Quorum& quorum, v1::Quorum* proto);
Version FromProto(const v1::Sibling& sibling);

// Each takes the response by pointer and moves its bytes out.
WriteResult FromPutResponse(v1::PutResponse* response);
WriteResult FromDeleteResponse(v1::DeleteResponse* response);
GetResult FromGetResponse(v1::GetResponse* response);
ListResult FromListResponse(v1::ListResponse* response);
DescribeKeyResult FromDescribeKeyResponse(v1::DescribeKeyResponse* response);
DescribeWriteResult FromDescribeWriteResponse(v1::DescribeWriteResponse* response);
ClusterStatusResult FromClusterStatusResponse(v1::ClusterStatusResponse* response);
RepairStarted FromStartRepairResponse(v1::StartRepairResponse* response);
MembershipPlan FromChangeMembershipResponse(v1::ChangeMembershipResponse* response);
OperationStatus FromOperation(v1::Operation* operation);
OperationStatus FromGetOperationResponse(v1::GetOperationResponse* response);
OperationStatus FromCancelOperationResponse(v1::CancelOperationResponse* response);
std::vector<OperationStatus> FromListOperationsResponse(v1::ListOperationsResponse* response);
AntiEntropyStatusResult FromAntiEntropyStatusResponse(v1::AntiEntropyStatusResponse* response);

}  // namespace kv::client_internal

#endif  // KV_CLIENT_KV_CLIENT_CONVERT_H_
