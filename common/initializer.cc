#include "common/initializer.h"

#include <cmath>

namespace psrv {
namespace {

uint64_t SplitMix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

uint64_t Fnv1a(const std::string& s) {
  uint64_t h = 1469598103934665603ULL;
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ULL;
  return h;
}

// Uniform in (0, 1), from the top 53 bits.
double ToUnit(uint64_t bits) { return ((bits >> 11) + 0.5) * (1.0 / 9007199254740992.0); }

}  // namespace

void InitializeRange(const TableSpec& table, uint64_t begin, uint64_t count, float* out) {
  const InitSpec& init = table.init();
  const uint64_t stream = SplitMix64(init.seed() ^ Fnv1a(table.name()));
  for (uint64_t j = 0; j < count; ++j) {
    const uint64_t i = begin + j;
    switch (init.kind()) {
      case InitSpec::ZEROS:
        out[j] = 0.0f;
        break;
      case InitSpec::ONES:
        out[j] = 1.0f;
        break;
      case InitSpec::UNIFORM:
        out[j] = static_cast<float>((2.0 * ToUnit(SplitMix64(stream + 2 * i)) - 1.0) * init.scale());
        break;
      case InitSpec::NORMAL: {
        // Box-Muller from two independent uniforms per element.
        const double u1 = ToUnit(SplitMix64(stream + 2 * i));
        const double u2 = ToUnit(SplitMix64(stream + 2 * i + 1));
        out[j] = static_cast<float>(std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2) *
                                    init.scale());
        break;
      }
      default:
        out[j] = 0.0f;
    }
  }
}

std::vector<float> InitializeTables(const std::vector<TableSpec>& tables) {
  std::vector<float> params;
  for (const TableSpec& table : tables) {
    uint64_t n = 1;
    for (uint64_t d : table.shape()) n *= d;
    const size_t offset = params.size();
    params.resize(offset + n);
    InitializeRange(table, 0, n, params.data() + offset);
  }
  return params;
}

}  // namespace psrv
