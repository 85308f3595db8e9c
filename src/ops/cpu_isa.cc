#include "ops/cpu_isa.h"

#include <cstdlib>
#include <string>

#if defined(__x86_64__)
#include <cpuid.h>
#if defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif
#endif

#include "util/error.h"

namespace whittle {

namespace {

#if defined(__x86_64__)
// AMX int8: the CPU reports the tile unit and int8 products (CPUID leaf 7, EDX bits 24 and 25), and
// the kernel grants this process the tile state (Linux keeps it off until asked: arch_prctl
// ARCH_REQ_XCOMP_PERM for XTILEDATA, feature 18). Asked once; a refusal leaves AMX unused.
bool amx_usable() {
  static const bool usable = [] {
    unsigned a = 0, b = 0, c = 0, d = 0;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return false;
    if ((d >> 24 & 1) == 0 || (d >> 25 & 1) == 0) return false;
#if defined(__linux__)
    constexpr long kReqXcompPerm = 0x1023, kXtileData = 18;
    return syscall(SYS_arch_prctl, kReqXcompPerm, kXtileData) == 0;
#else
    return false;
#endif
  }();
  return usable;
}
#endif

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
    case Isa::kAmx:
      return cpu_has(Isa::kAvx512Vnni) && amx_usable();
  }
  return false;
#else
  return isa == Isa::kScalar;
#endif
}

constexpr Isa kAll[] = {Isa::kScalar, Isa::kAvx2, Isa::kAvxVnni, Isa::kAvx512Vnni, Isa::kAmx};

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
  fail("WHITTLE_ISA={}: expected scalar, avx2, avxvnni, avx512vnni or amx", env);
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
    case Isa::kAmx:
      return "amx";
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
