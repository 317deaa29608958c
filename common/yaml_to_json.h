// YAML text -> the JSON that protobuf's JSON mapping parses into a message of a given type. The
// conversion follows the message's descriptor, so that an unknown field, a value of the wrong
// type or a bad enum name is reported with its field path and YAML line.
#ifndef PSRV_COMMON_YAML_TO_JSON_H_
#define PSRV_COMMON_YAML_TO_JSON_H_

#include <string>

#include "absl/status/statusor.h"
#include "google/protobuf/descriptor.h"

namespace psrv {

// INVALID_ARGUMENT for text that is not YAML (with its line and column) or does not fit `type`.
absl::StatusOr<std::string> YamlToJson(const std::string& text, const google::protobuf::Descriptor* type);

}  // namespace psrv

#endif  // PSRV_COMMON_YAML_TO_JSON_H_
