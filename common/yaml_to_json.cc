// YAML -> JSON for protobuf's JSON parser, guided by the message's descriptor (yaml_to_json.h).
#include "common/yaml_to_json.h"

#include <yaml-cpp/yaml.h>

#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/string_view.h"
#include "common/status_macros.h"

namespace psrv {
namespace {

using google::protobuf::Descriptor;
using google::protobuf::EnumDescriptor;
using google::protobuf::FieldDescriptor;

std::string JsonQuote(absl::string_view s) {
  return nlohmann::json(std::string(s)).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

std::string LineOf(const YAML::Node& node) {
  const YAML::Mark mark = node.Mark();
  if (mark.line < 0) return "";
  return absl::StrCat(" (line ", mark.line + 1, ")");
}

std::string JoinPath(const std::string& path, absl::string_view field) {
  return path.empty() ? std::string(field) : absl::StrCat(path, ".", field);
}

std::string NodeKind(const YAML::Node& node) {
  switch (node.Type()) {
    case YAML::NodeType::Map:
      return "a mapping";
    case YAML::NodeType::Sequence:
      return "a list";
    case YAML::NodeType::Scalar:
      return absl::StrCat("\"", node.Scalar(), "\"");
    default:
      return "nothing";
  }
}

// A plain (unquoted) YAML scalar that YAML reads as null: empty, "~" or "null".
bool IsNullScalar(const YAML::Node& node) {
  if (node.IsNull()) return true;
  if (!node.IsScalar() || node.Tag() == "!") return false;
  const std::string& s = node.Scalar();
  return s.empty() || s == "~" || s == "null" || s == "Null" || s == "NULL";
}

// Integer text (optional sign, digits, '_' separators as YAML 1.1 allows) -> JSON integer text.
bool ToJsonInteger(std::string text, bool is_unsigned, std::string* out) {
  text.erase(std::remove(text.begin(), text.end(), '_'), text.end());
  if (!text.empty() && text[0] == '+') text.erase(0, 1);
  if (is_unsigned) {
    uint64_t v;
    if (absl::SimpleAtoi(text, &v)) {
      *out = absl::StrCat(v);
      return true;
    }
  } else {
    int64_t v;
    if (absl::SimpleAtoi(text, &v)) {
      *out = absl::StrCat(v);
      return true;
    }
  }
  // "1e6" is an integer too.
  double d;
  if (absl::SimpleAtod(text, &d) && std::isfinite(d) && d == std::floor(d) &&
      std::fabs(d) < 9.007199254740992e15 && !(is_unsigned && d < 0)) {
    *out = absl::StrCat(static_cast<int64_t>(d));
    return true;
  }
  return false;
}

// Floating-point text (including YAML's .inf/.nan) -> JSON number or protobuf's special strings.
bool ToJsonFloat(std::string text, std::string* out) {
  const std::string lower = absl::AsciiStrToLower(text);
  if (lower == ".inf" || lower == "+.inf" || lower == "inf" || lower == "infinity") {
    *out = "\"Infinity\"";
    return true;
  }
  if (lower == "-.inf" || lower == "-inf" || lower == "-infinity") {
    *out = "\"-Infinity\"";
    return true;
  }
  if (lower == ".nan" || lower == "nan") {
    *out = "\"NaN\"";
    return true;
  }
  text.erase(std::remove(text.begin(), text.end(), '_'), text.end());
  double d;
  if (!absl::SimpleAtod(text, &d) || !std::isfinite(d)) return false;
  *out = absl::StrFormat("%.17g", d);
  return true;
}

std::string EnumNames(const EnumDescriptor* e) {
  std::vector<std::string> names;
  for (int i = 0; i < e->value_count(); ++i) {
    if (e->value(i)->number() != 0) names.push_back(e->value(i)->name());
  }
  return absl::StrJoin(names, ", ");
}

std::string FieldNames(const Descriptor* d) {
  std::vector<std::string> names;
  for (int i = 0; i < d->field_count(); ++i) names.push_back(d->field(i)->name());
  return absl::StrJoin(names, ", ");
}

const FieldDescriptor* FindField(const Descriptor* d, const std::string& key) {
  if (const FieldDescriptor* f = d->FindFieldByName(key)) return f;
  for (int i = 0; i < d->field_count(); ++i) {
    if (d->field(i)->json_name() == key) return d->field(i);
  }
  return nullptr;
}

absl::Status ValueToJson(const YAML::Node& node, const FieldDescriptor* field,
                         const std::string& path, std::string* out);

// Converts a YAML mapping for message type `d` to JSON, checking field names and value types so the
// error can point at the YAML line.
absl::Status MessageToJson(const YAML::Node& node, const Descriptor* d, const std::string& path,
                           std::string* out) {
  if (IsNullScalar(node)) {
    *out += "null";
    return absl::OkStatus();
  }
  if (!node.IsMap()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path.empty() ? "the job spec" : path, " must be a mapping with fields (",
                     FieldNames(d), "), got ", NodeKind(node), LineOf(node)));
  }
  *out += "{";
  bool first = true;
  std::vector<const FieldDescriptor*> seen;
  for (const auto& entry : node) {
    const YAML::Node& key = entry.first;
    if (!key.IsScalar()) {
      return absl::InvalidArgumentError(
          absl::StrCat("field names must be plain words, got ", NodeKind(key), LineOf(key)));
    }
    const std::string name = key.Scalar();
    const FieldDescriptor* field = FindField(d, name);
    if (field == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("unknown field \"", JoinPath(path, name), "\"", LineOf(key), "; ",
                       path.empty() ? "the job spec" : path, " has fields: ", FieldNames(d)));
    }
    const std::string field_path = JoinPath(path, field->name());
    if (std::find(seen.begin(), seen.end(), field) != seen.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat("field \"", field_path, "\" is given twice", LineOf(key)));
    }
    seen.push_back(field);
    if (!first) *out += ",";
    first = false;
    *out += JsonQuote(field->name()) + ":";
    if (field->is_repeated()) {
      if (IsNullScalar(entry.second)) {
        *out += "[]";
        continue;
      }
      if (!entry.second.IsSequence()) {
        return absl::InvalidArgumentError(absl::StrCat(
            field_path, " must be a list, got ", NodeKind(entry.second), LineOf(entry.second)));
      }
      *out += "[";
      for (std::size_t i = 0; i < entry.second.size(); ++i) {
        if (i > 0) *out += ",";
        RETURN_IF_ERROR(
            ValueToJson(entry.second[i], field, absl::StrCat(field_path, "[", i, "]"), out));
      }
      *out += "]";
    } else {
      RETURN_IF_ERROR(ValueToJson(entry.second, field, field_path, out));
    }
  }
  *out += "}";
  return absl::OkStatus();
}

absl::Status ValueToJson(const YAML::Node& node, const FieldDescriptor* field,
                         const std::string& path, std::string* out) {
  if (field->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE) {
    return MessageToJson(node, field->message_type(), path, out);
  }
  if (IsNullScalar(node) && field->cpp_type() != FieldDescriptor::CPPTYPE_STRING) {
    *out += "null";  // The field keeps its default.
    return absl::OkStatus();
  }
  if (!node.IsScalar()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, " must be a single value, got ", NodeKind(node), LineOf(node)));
  }
  const std::string& text = node.Scalar();
  switch (field->cpp_type()) {
    case FieldDescriptor::CPPTYPE_STRING:
      *out += JsonQuote(IsNullScalar(node) ? "" : text);
      return absl::OkStatus();
    case FieldDescriptor::CPPTYPE_BOOL: {
      const std::string lower = absl::AsciiStrToLower(text);
      if (lower == "true" || lower == "false") {
        *out += lower;
        return absl::OkStatus();
      }
      return absl::InvalidArgumentError(
          absl::StrCat(path, " must be true or false, got \"", text, "\"", LineOf(node)));
    }
    case FieldDescriptor::CPPTYPE_INT32:
    case FieldDescriptor::CPPTYPE_INT64:
    case FieldDescriptor::CPPTYPE_UINT32:
    case FieldDescriptor::CPPTYPE_UINT64: {
      const bool is_unsigned = field->cpp_type() == FieldDescriptor::CPPTYPE_UINT32 ||
                               field->cpp_type() == FieldDescriptor::CPPTYPE_UINT64;
      std::string json;
      if (ToJsonInteger(text, is_unsigned, &json)) {
        *out += json;
        return absl::OkStatus();
      }
      return absl::InvalidArgumentError(
          absl::StrCat(path, " must be ", is_unsigned ? "a non-negative integer" : "an integer",
                       ", got \"", text, "\"", LineOf(node)));
    }
    case FieldDescriptor::CPPTYPE_FLOAT:
    case FieldDescriptor::CPPTYPE_DOUBLE: {
      std::string json;
      if (ToJsonFloat(text, &json)) {
        *out += json;
        return absl::OkStatus();
      }
      return absl::InvalidArgumentError(
          absl::StrCat(path, " must be a number, got \"", text, "\"", LineOf(node)));
    }
    case FieldDescriptor::CPPTYPE_ENUM: {
      const EnumDescriptor* e = field->enum_type();
      if (e->FindValueByName(text) != nullptr) {
        *out += JsonQuote(text);
        return absl::OkStatus();
      }
      std::string hint;
      if (e->FindValueByName(absl::AsciiStrToUpper(text)) != nullptr) {
        hint = absl::StrCat(" (did you mean ", absl::AsciiStrToUpper(text), "?)");
      }
      return absl::InvalidArgumentError(absl::StrCat(path, " must be one of ", EnumNames(e),
                                                     ", got \"", text, "\"", LineOf(node), hint));
    }
    default:
      return absl::InternalError(absl::StrCat(path, ": unsupported field type"));
  }
}

bool HasTabIndentation(absl::string_view text) {
  bool line_start = true;
  for (char c : text) {
    if (c == '\t' && line_start) return true;
    if (c == '\n') {
      line_start = true;
    } else if (c != ' ') {
      line_start = false;
    }
  }
  return false;
}

}  // namespace

absl::StatusOr<std::string> YamlToJson(const std::string& text, const Descriptor* type) {
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::ParserException& e) {
    std::string hint;
    if (HasTabIndentation(text)) hint = " (YAML does not allow tabs for indentation)";
    return absl::InvalidArgumentError(absl::StrFormat("invalid YAML at line %d, column %d: %s%s",
                                                      e.mark.line + 1, e.mark.column + 1, e.msg,
                                                      hint));
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("invalid YAML: ", e.what()));
  }
  std::string json;
  try {
    RETURN_IF_ERROR(MessageToJson(root, type, "", &json));
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("invalid YAML: ", e.what()));
  }
  return json;
}

}  // namespace psrv
