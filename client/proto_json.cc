// Protobuf to JSON for psctl's --json output (see proto_json.h).
#include "client/proto_json.h"

#include "absl/strings/str_cat.h"
#include "common/format.h"
#include "google/protobuf/util/json_util.h"

namespace psrv {

std::string ToJson(const google::protobuf::Message& message, bool pretty) {
  google::protobuf::util::JsonPrintOptions options;
  options.always_print_primitive_fields = true;
  options.preserve_proto_field_names = true;
  options.add_whitespace = pretty;
  std::string json;
  const auto status = google::protobuf::util::MessageToJsonString(message, &json, options);
  if (!status.ok()) return JsonQuote(absl::StrCat("cannot print as JSON: ", status.ToString()));
  while (!json.empty() && json.back() == '\n') json.pop_back();
  return json;
}

nlohmann::ordered_json ToJsonValue(const google::protobuf::Message& message) {
  return nlohmann::ordered_json::parse(ToJson(message, /*pretty=*/false));
}

}  // namespace psrv
