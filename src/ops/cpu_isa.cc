#include "ops/cpu_isa.h"

#include <cstdlib>
#include <string>

#include "util/error.h"

namespace whittle {

namespace {

bool cpu_has(Isa isa) {
#if defined(__x86_64__)
  __builtin_cpu_init();
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                    __builtin_cpu_supports("f16c");
  switch (isa) {
    case Isa::kScalar:
      return true;
    case Isa::kAvx2:
      return avx2;
    case Isa::kAvxVnni:
      return avx2 && __builtin_cpu_supports("avxvnni");
    case Isa::kAvx512Vnni:
      return avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni");
  }
  return false;
#else
  return isa == Isa::kScalar;
#endif
}

constexpr Isa kAll[] = {Isa::kScalar, Isa::kAvx2, Isa::kAvxVnni, Isa::kAvx512Vnni};

Isa choose() {
  Isa best = Isa::kScalar;
  for (Isa isa : kAll)
    if (cpu_has(isa)) best = isa;
  const char* env = std::getenv("WHITTLE_ISA");
  if (env == nullptr || *env == '\0') return best;
  for (Isa isa : kAll)
    if (isa_name(isa) == env) {
      if (!cpu_has(isa)) fail("WHITTLE_ISA={}: this CPU does not support it", env);
      return isa;
    }
  fail("WHITTLE_ISA={}: expected scalar, avx2, avxvnni or avx512vnni", env);
}

}  // namespace

std::string_view isa_name(Isa isa) {
  switch (isa) {
    case Isa::kScalar:
      return "scalar";
    case Isa::kAvx2:
      return "avx2";
    case Isa::kAvxVnni:
      return "avxvnni";
    case Isa::kAvx512Vnni:
      return "avx512vnni";
  }
  return "?";
}

Isa active_isa() {
  static const Isa isa = choose();
  return isa;
}

std::vector<Isa> supported_isas() {
  std::vector<Isa> out;
  for (Isa isa : kAll)
    if (cpu_has(isa)) out.push_back(isa);
  return out;
}

}  // namespace whittle
