// Deterministic random mutations of protobuf requests, for the in-process fuzz tests: of the bytes
// (bit flips, truncation, extension, fields declaring huge lengths, broken varints) and of the
// fields, through reflection (empty and path-like names, 0 / 2^32 / 2^64-1 integers, unknown enum
// values, NaN and infinite floats, absurdly long repeated fields).
#ifndef PSRV_COMMON_PROTO_MUTATOR_H_
#define PSRV_COMMON_PROTO_MUTATOR_H_

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include <google/protobuf/descriptor.h>
#include <google/protobuf/message.h>
#include <google/protobuf/reflection.h>

namespace psrv {

// Requests per fuzzed handler: `default_count`, or FUZZ_ITERATIONS from the environment (the
// sanitizer run of scripts/test.sh sets fewer).
inline int FuzzIterations(int default_count) {
  const char* env = std::getenv("FUZZ_ITERATIONS");
  return env != nullptr && std::atoi(env) > 0 ? std::atoi(env) : default_count;
}

// Not thread-safe. The same seed gives the same sequence of mutations.
class ProtoMutator {
 public:
  // `words`: strings worth trying besides the built-in ones (the ids and names of the state under
  // test, so that mutated requests often reach it).
  explicit ProtoMutator(uint64_t seed, std::vector<std::string> words = {})
      : rng_(seed), words_(std::move(words)) {
    for (const char* w : {"", ".", "..", "../", "../../etc/passwd", "/", "/tmp", "a/b", "a b",
                          "-", "job\n", "127.0.0.1:1", "localhost:0", ":", "host:99999", "%s%n",
                          "\xff\xfe", "\xc3\xa9t\xc3\xa9"}) {
      words_.emplace_back(w);
    }
    words_.push_back(std::string("job\0x", 5));
    words_.push_back(std::string(129, 'j'));
    words_.push_back(std::string(4096, 'a'));
  }

  uint64_t Uniform(uint64_t n) { return n == 0 ? 0 : rng_() % n; }
  bool OneIn(uint64_t n) { return Uniform(n) == 0; }

  std::string RandomBytes(size_t max_size) {
    std::string s(Uniform(max_size + 1), '\0');
    for (char& c : s) c = static_cast<char>(rng_());
    return s;
  }

  uint64_t InterestingInt() {
    static constexpr uint64_t kValues[] = {
        0, 1, 2, 3, 4, 7, 8, 15, 16, 31, 32, 63, 64, 65, 99, 100, 101, 127, 128, 255, 256, 1000,
        4095, 4096, 65535, 65536, 65537, (1u << 20), (1ull << 31) - 1, 1ull << 31,
        (1ull << 32) - 1, 1ull << 32, (1ull << 32) + 1, 1ull << 36, 1ull << 53, (1ull << 62),
        (1ull << 63) - 1, 1ull << 63, ~0ull - 1, ~0ull};
    switch (Uniform(4)) {
      case 0: return Uniform(200);
      case 1: return rng_();
      default: return kValues[Uniform(sizeof(kValues) / sizeof(kValues[0]))];
    }
  }

  float InterestingFloat() {
    static constexpr float kValues[] = {0.0f, -0.0f, 1.0f, -1.0f, 0.5f, 1e-45f, 1e-38f, 3.4e38f,
                                        -3.4e38f, 1e30f};
    switch (Uniform(6)) {
      case 0: return std::numeric_limits<float>::quiet_NaN();
      case 1: return OneIn(2) ? INFINITY : -INFINITY;
      case 2: {
        const uint32_t bits = static_cast<uint32_t>(rng_());
        float f;
        std::memcpy(&f, &bits, sizeof(f));
        return f;
      }
      default: return kValues[Uniform(sizeof(kValues) / sizeof(kValues[0]))];
    }
  }

  std::string InterestingString() {
    if (OneIn(8)) return RandomBytes(24);
    std::string s = words_[Uniform(words_.size())];
    if (OneIn(16)) s += words_[Uniform(words_.size())];
    return s;
  }

  // `count` floats of which some are NaN, infinite or huge; the rest small.
  std::vector<float> InterestingFloats(size_t count) {
    std::vector<float> values(count);
    for (float& v : values) {
      v = OneIn(4) ? InterestingFloat() : static_cast<float>(Uniform(2001)) / 1000.0f - 1.0f;
    }
    return values;
  }

  // One to four byte-level changes of a serialized message.
  void MutateBytes(std::string* bytes) {
    const int changes = 1 + static_cast<int>(Uniform(4));
    for (int i = 0; i < changes; ++i) MutateBytesOnce(bytes);
  }

  // One to three field-level changes of `message`.
  void MutateFields(google::protobuf::Message* message) {
    const int changes = 1 + static_cast<int>(Uniform(3));
    for (int i = 0; i < changes; ++i) MutateOneField(message, 0);
  }

 private:
  void AppendVarint(uint64_t v, std::string* out) {
    while (v >= 0x80) {
      out->push_back(static_cast<char>(v | 0x80));
      v >>= 7;
    }
    out->push_back(static_cast<char>(v));
  }

  void MutateBytesOnce(std::string* bytes) {
    const size_t pos = Uniform(bytes->size() + 1);
    switch (Uniform(8)) {
      case 0:  // Bit flip.
        if (!bytes->empty()) (*bytes)[pos % bytes->size()] ^= static_cast<char>(1 << Uniform(8));
        break;
      case 1:  // Truncation.
        bytes->resize(pos);
        break;
      case 2:  // Extension.
        *bytes += RandomBytes(32);
        break;
      case 3: {  // A length-delimited field (often 15, the payload) declaring a huge length.
        std::string field;
        const uint64_t number = OneIn(2) ? 15 : 1 + Uniform(20);
        AppendVarint(number << 3 | 2, &field);
        AppendVarint(InterestingInt(), &field);
        field += RandomBytes(8);
        bytes->insert(pos, field);
        break;
      }
      case 4:  // A varint that never ends, or runs past 64 bits.
        bytes->insert(pos, std::string(1 + Uniform(12), '\xff'));
        break;
      case 5:  // Random bytes inside.
        bytes->insert(pos, RandomBytes(8));
        break;
      case 6:  // A field repeated.
        if (pos < bytes->size()) bytes->insert(pos, bytes->substr(pos, Uniform(16)));
        break;
      default:  // A field with an unknown number or an odd wire type.
        AppendVarint(Uniform(1 << 12) << 3 | Uniform(8), &*bytes);
        AppendVarint(InterestingInt(), &*bytes);
        break;
    }
  }

  void SetScalar(google::protobuf::Message* m, const google::protobuf::FieldDescriptor* f,
                 int depth) {
    using FD = google::protobuf::FieldDescriptor;
    const google::protobuf::Reflection* r = m->GetReflection();
    const bool repeated = f->is_repeated();
    switch (f->cpp_type()) {
      case FD::CPPTYPE_INT32: {
        const auto v = static_cast<int32_t>(InterestingInt());
        repeated ? r->AddInt32(m, f, v) : r->SetInt32(m, f, v);
        break;
      }
      case FD::CPPTYPE_INT64: {
        const auto v = static_cast<int64_t>(InterestingInt());
        repeated ? r->AddInt64(m, f, v) : r->SetInt64(m, f, v);
        break;
      }
      case FD::CPPTYPE_UINT32: {
        const auto v = static_cast<uint32_t>(InterestingInt());
        repeated ? r->AddUInt32(m, f, v) : r->SetUInt32(m, f, v);
        break;
      }
      case FD::CPPTYPE_UINT64: {
        const uint64_t v = InterestingInt();
        repeated ? r->AddUInt64(m, f, v) : r->SetUInt64(m, f, v);
        break;
      }
      case FD::CPPTYPE_FLOAT: {
        const float v = InterestingFloat();
        repeated ? r->AddFloat(m, f, v) : r->SetFloat(m, f, v);
        break;
      }
      case FD::CPPTYPE_DOUBLE: {
        const double v = InterestingFloat();
        repeated ? r->AddDouble(m, f, v) : r->SetDouble(m, f, v);
        break;
      }
      case FD::CPPTYPE_BOOL: {
        const bool v = OneIn(2);
        repeated ? r->AddBool(m, f, v) : r->SetBool(m, f, v);
        break;
      }
      case FD::CPPTYPE_ENUM: {
        // proto3 enums are open: unknown values reach the handlers.
        const int v = OneIn(2) ? static_cast<int>(Uniform(8)) - 1
                               : static_cast<int>(static_cast<uint32_t>(InterestingInt()));
        repeated ? r->AddEnumValue(m, f, v) : r->SetEnumValue(m, f, v);
        break;
      }
      case FD::CPPTYPE_STRING: {
        std::string v = InterestingString();
        repeated ? r->AddString(m, f, std::move(v)) : r->SetString(m, f, std::move(v));
        break;
      }
      case FD::CPPTYPE_MESSAGE: {
        google::protobuf::Message* sub = repeated ? r->AddMessage(m, f) : r->MutableMessage(m, f);
        if (depth < 4) MutateOneField(sub, depth + 1);
        break;
      }
    }
  }

  void MutateOneField(google::protobuf::Message* m, int depth) {
    const google::protobuf::Descriptor* d = m->GetDescriptor();
    if (d->field_count() == 0) return;
    const google::protobuf::FieldDescriptor* f = d->field(static_cast<int>(Uniform(d->field_count())));
    const google::protobuf::Reflection* r = m->GetReflection();
    if (!f->is_repeated()) {
      if (OneIn(8)) {
        r->ClearField(m, f);
      } else {
        SetScalar(m, f, depth);
      }
      return;
    }
    const int size = r->FieldSize(*m, f);
    switch (Uniform(6)) {
      case 0:
        r->ClearField(m, f);
        break;
      case 1:
        if (size > 0) r->RemoveLast(m, f);
        break;
      case 2:
        if (size > 1) r->SwapElements(m, f, 0, static_cast<int>(Uniform(size)));
        break;
      case 3:
        if (size > 0 && f->cpp_type() == google::protobuf::FieldDescriptor::CPPTYPE_MESSAGE &&
            depth < 4) {
          MutateOneField(r->MutableRepeatedMessage(m, f, static_cast<int>(Uniform(size))),
                         depth + 1);
          break;
        }
        [[fallthrough]];
      case 4:
        if (OneIn(64)) {  // Absurdly many elements.
          const int n = 1000 + static_cast<int>(Uniform(70000));
          for (int i = 0; i < n; ++i) SetScalar(m, f, 4);
          break;
        }
        [[fallthrough]];
      default:
        SetScalar(m, f, depth);
        break;
    }
  }

  std::mt19937_64 rng_;
  std::vector<std::string> words_;
};

}  // namespace psrv

#endif  // PSRV_COMMON_PROTO_MUTATOR_H_
