// UTF-8 validity, for text that comes from a byte-level model and may hold any bytes: protobuf
// strings must be valid UTF-8, and so must what psctl prints.
#ifndef PSRV_COMMON_UTF8_H_
#define PSRV_COMMON_UTF8_H_

#include <cstddef>
#include <string>

#include "absl/strings/string_view.h"

namespace psrv {

// Length of the valid UTF-8 sequence at the start of `s` (1 to 4), or 0 if it is not one: a stray
// continuation byte, a truncated sequence, an overlong encoding, a surrogate or a code point above
// U+10FFFF. 0 for an empty `s`.
std::size_t Utf8SequenceLength(absl::string_view s);

// `bytes` with every byte that does not start a valid UTF-8 sequence replaced by '?'.
std::string ToValidUtf8(absl::string_view bytes);

}  // namespace psrv

#endif  // PSRV_COMMON_UTF8_H_
