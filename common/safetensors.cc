#include "common/safetensors.h"

#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"

namespace psrv {

absl::Status WriteSafetensors(const std::string& path, const std::vector<NamedTensor>& tensors,
                              const std::map<std::string, std::string>& metadata) {
  nlohmann::ordered_json header;
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  std::set<std::string> names;
  for (const NamedTensor& t : tensors) {
    uint64_t count = 1;
    for (uint64_t d : t.shape) count *= d;
    if (count != t.values.size()) {
      return absl::InvalidArgumentError(absl::StrCat("tensor \"", t.name, "\" has ",
                                                     t.values.size(), " values for its shape"));
    }
    if (!names.insert(t.name).second || t.name == "__metadata__") {
      return absl::InvalidArgumentError(absl::StrCat("tensor name \"", t.name, "\" is repeated"));
    }
    const uint64_t bytes = count * sizeof(float);
    header[t.name] = {{"dtype", "F32"}, {"shape", t.shape}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  std::string text = header.dump();
  // Pad the header with spaces so the data starts 8-byte aligned (allowed by the format).
  while ((8 + text.size()) % 8 != 0) text.push_back(' ');
  const std::string temporary = absl::StrCat(path, ".tmp.", getpid());
  {
    std::ofstream out(temporary, std::ios::binary | std::ios::trunc);
    if (!out) return absl::InternalError(absl::StrCat("cannot create ", temporary));
    const uint64_t length = text.size();
    out.write(reinterpret_cast<const char*>(&length), 8);
    out.write(text.data(), static_cast<std::streamsize>(text.size()));
    for (const NamedTensor& t : tensors) {
      out.write(reinterpret_cast<const char*>(t.values.data()),
                static_cast<std::streamsize>(t.values.size() * sizeof(float)));
    }
    out.flush();
    if (!out) {
      std::remove(temporary.c_str());
      return absl::InternalError(absl::StrCat("cannot write ", temporary));
    }
  }
  if (std::rename(temporary.c_str(), path.c_str()) != 0) {
    std::remove(temporary.c_str());
    return absl::InternalError(absl::StrCat("cannot rename ", temporary, " to ", path));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<NamedTensor>> ReadSafetensors(
    const std::string& path, std::map<std::string, std::string>* metadata) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", path));
  std::stringstream buffer;
  buffer << in.rdbuf();
  const std::string data = buffer.str();
  auto malformed = [&path](const std::string& why) {
    return absl::InvalidArgumentError(absl::StrCat(path, " is not a valid safetensors file: ", why));
  };
  if (data.size() < 8) return malformed("shorter than its 8-byte header length");
  uint64_t length;
  std::memcpy(&length, data.data(), 8);
  if (length > data.size() - 8) return malformed("header length past the end of the file");
  nlohmann::ordered_json header =
      nlohmann::ordered_json::parse(data.substr(8, length), nullptr, /*allow_exceptions=*/false);
  if (!header.is_object()) return malformed("the header is not a JSON object");
  const uint64_t data_size = data.size() - 8 - length;
  const char* base = data.data() + 8 + length;
  std::vector<NamedTensor> tensors;
  for (auto& [name, entry] : header.items()) {
    if (name == "__metadata__") {
      if (metadata != nullptr && entry.is_object()) {
        for (auto& [k, v] : entry.items()) {
          if (v.is_string()) (*metadata)[k] = v.get<std::string>();
        }
      }
      continue;
    }
    if (!entry.is_object() || !entry.contains("dtype") || !entry.contains("shape") ||
        !entry.contains("data_offsets")) {
      return malformed(absl::StrCat("entry \"", name, "\" lacks dtype, shape or data_offsets"));
    }
    if (entry["dtype"] != "F32") {
      return malformed(absl::StrCat("tensor \"", name, "\" is ", entry["dtype"].dump(),
                                    "; only F32 is supported"));
    }
    NamedTensor t;
    t.name = name;
    uint64_t count = 1;
    for (const auto& d : entry["shape"]) {
      if (!d.is_number_unsigned()) return malformed(absl::StrCat("bad shape of \"", name, "\""));
      t.shape.push_back(d.get<uint64_t>());
      count *= t.shape.back();
    }
    const auto& offsets = entry["data_offsets"];
    if (!offsets.is_array() || offsets.size() != 2 || !offsets[0].is_number_unsigned() ||
        !offsets[1].is_number_unsigned()) {
      return malformed(absl::StrCat("bad data_offsets of \"", name, "\""));
    }
    const uint64_t begin = offsets[0].get<uint64_t>(), end = offsets[1].get<uint64_t>();
    if (begin > end || end > data_size || end - begin != count * sizeof(float)) {
      return malformed(absl::StrCat("data_offsets of \"", name, "\" do not fit its shape"));
    }
    t.values.resize(count);
    std::memcpy(t.values.data(), base + begin, end - begin);
    tensors.push_back(std::move(t));
  }
  return tensors;
}

}  // namespace psrv
