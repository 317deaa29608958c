// Protobuf messages as the JSON that psctl's --json prints: proto field names, zeros included.
#ifndef PSRV_CLIENT_PROTO_JSON_H_
#define PSRV_CLIENT_PROTO_JSON_H_

#include <nlohmann/json.hpp>
#include <string>

#include "google/protobuf/message.h"

namespace psrv {

// `message` as JSON text, indented when `pretty`, with no trailing newline. A message that cannot
// be printed gives a JSON string saying why.
std::string ToJson(const google::protobuf::Message& message, bool pretty = true);

// `message` as a JSON value, to put inside a larger document.
nlohmann::ordered_json ToJsonValue(const google::protobuf::Message& message);

}  // namespace psrv

#endif  // PSRV_CLIENT_PROTO_JSON_H_
